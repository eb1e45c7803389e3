"""Word2Vec: CBOW and skip-gram word embeddings (Mikolov et al., 2013; Notes: 003 §9.1, 004 Word2Vec).

Skip-gram uses the target (centre) word to predict each word of its context; CBOW predicts the centre word from
the bag (mean) of its context words, so the order of the context does not matter. Each word w has an input
vector v_w (the embedding, `in_embed`) and an output vector u_w (`out_embed`); with h the hidden vector
(skip-gram: v_centre; CBOW: the mean of the context v's) the model scores a word o by u_o . h.

- Full softmax (small vocabularies): L = -log softmax(U h)_o, the cross-entropy over the whole vocabulary.
- Negative sampling (Mikolov et al. 2013b; not in the notes): L = -log s(u_o . h) - sum_{k=1..K} log s(-u_k . h)
  with K noise words drawn from the unigram distribution raised to 3/4, P_n(w) = c_w^0.75 / sum_v c_v^0.75;
  frequent words can be subsampled, each occurrence kept with probability min(1, sqrt(t / f_w)).

Words that occur in the same contexts get close vectors: `most_similar` ranks words by cosine similarity and
`analogy(a, b, c)` answers "a is to b as c is to ?" with the words nearest to v_b - v_a + v_c.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import register_model


def word2vec_complexity(n: int, m: int, vocab_size: int, form: str = "notes") -> float:
    """Training cost per word of Word2Vec. Notes: 003 §9.1: Q = n * m + m * log2|V|.

    n = embedding dimension, m = context-window size, |V| = number of unique words. The notes give no log base;
    log2 (a binary Huffman tree, as in Mikolov) is used. Erratum: the notes' second term differs from Mikolov et
    al. 2013a, whose hierarchical-softmax costs are `form="cbow"`: Q = m * n + n * log2|V| (N = m context words,
    D = n) and `form="skipgram"`: Q = m * (n + n * log2|V|) (C = m). n=300, m=10, |V|=2^20: 3200 (notes),
    9000 (cbow), 63000 (skipgram).
    """
    if min(n, m, vocab_size) < 1:
        raise ConfigError(f"n, m and |V| must be >= 1; got {n}, {m}, {vocab_size}")
    log_v = math.log2(vocab_size)
    if form == "notes":
        return n * m + m * log_v
    if form == "cbow":
        return m * n + n * log_v
    if form == "skipgram":
        return m * (n + n * log_v)
    raise ConfigError(f"form must be 'notes', 'cbow' or 'skipgram'; got {form!r}")


# ----------------------------------------------------------------------------- training examples


def skipgram_pairs(ids: Tensor, window: int) -> Tensor:
    """(centre, context) pairs [P, 2] for every context word within `window` positions of each centre.

    Notes: 003 §9.1 (skip-gram). A sequence of L tokens gives sum_{d=1..window} 2 (L - d) pairs: 2(L-1) for 1.
    """
    ids = torch.as_tensor(ids).reshape(-1)
    if window < 1:
        raise ConfigError(f"window must be >= 1; got {window}")
    parts = []
    for d in range(1, min(window, len(ids) - 1) + 1):
        parts.append(torch.stack([ids[:-d], ids[d:]], 1))  # context to the right
        parts.append(torch.stack([ids[d:], ids[:-d]], 1))  # context to the left
    return torch.cat(parts) if parts else torch.zeros(0, 2, dtype=torch.long)


def cbow_examples(ids: Tensor, window: int, pad: int = -1) -> tuple[Tensor, Tensor]:
    """(contexts [L, 2 window], centres [L]): the words within `window` of each centre, `pad` outside the text.

    Notes: 004 Word2Vec (CBOW predicts the middle word from a few words before and after it).
    """
    ids = torch.as_tensor(ids).reshape(-1)
    if window < 1:
        raise ConfigError(f"window must be >= 1; got {window}")
    L = len(ids)
    padded = torch.cat([torch.full((window,), pad), ids, torch.full((window,), pad)])
    offsets = [o for o in range(-window, window + 1) if o != 0]
    ctx = torch.stack([padded[window + o:window + o + L] for o in offsets], 1)
    keep = (ctx != pad).any(1)
    return ctx[keep], ids[keep]


def noise_distribution(counts: Tensor, power: float = 0.75) -> Tensor:
    """Negative-sampling noise distribution P_n(w) = c_w^power / sum_v c_v^power (Mikolov 2013b: power 3/4)."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if (counts < 0).any() or counts.sum() <= 0:
        raise ConfigError("counts must be non-negative with a positive sum")
    p = counts.pow(power)
    return (p / p.sum()).float()


def subsample(ids: Tensor, counts: Tensor, t: float = 1e-5, generator: torch.Generator | None = None) -> Tensor:
    """Subsampling of frequent words: keep each occurrence of w with probability min(1, sqrt(t / f_w)).

    f_w = c_w / sum_v c_v (Mikolov 2013b, which discards with probability 1 - sqrt(t / f_w)).
    """
    ids = torch.as_tensor(ids).reshape(-1)
    counts = torch.as_tensor(counts, dtype=torch.float64)
    f = counts / counts.sum()
    keep_p = torch.sqrt(t / f.clamp_min(1e-300)).clamp(max=1.0)[ids]
    return ids[torch.rand(len(ids), generator=generator, dtype=torch.float64) < keep_p]


def negative_sampling_loss(h: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """Mean over the batch of -log s(u_o . h) - sum_k log s(-u_k . h); h [B, D], pos [B, D], neg [B, K, D]."""
    pos_score = (h * pos).sum(-1)
    neg_score = torch.einsum("bd,bkd->bk", h, neg)
    return -(F.logsigmoid(pos_score) + F.logsigmoid(-neg_score).sum(-1)).mean()


# ----------------------------------------------------------------------------- the model


class Word2Vec(nn.Module):
    """Word2Vec, skip-gram or CBOW, trained with a full softmax or negative sampling. Notes: 003 §9.1.

    h = v_centre (skip-gram) or mean of the context v's (CBOW); score(o) = u_o . h. Inputs to `loss`: skip-gram
    centre ids [B] and context ids [B]; CBOW contexts [B, C] (`pad` = -1 where missing) and centre ids [B].
    Initialisation as in word2vec.c: v ~ U(-0.5/D, 0.5/D), u = 0. `vocab` (a `Vocab` or list of words) lets
    `most_similar` and `analogy` take and return words.
    """

    def __init__(self, vocab_size: int, dim: int = 100, mode: str = "skipgram", objective: str = "negative",
                 num_negatives: int = 5, noise_probs: Tensor | None = None, vocab=None):
        super().__init__()
        if mode not in ("skipgram", "cbow"):
            raise ConfigError(f"mode must be 'skipgram' or 'cbow'; got {mode!r}")
        if objective not in ("negative", "softmax"):
            raise ConfigError(f"objective must be 'negative' (sampling) or 'softmax' (full); got {objective!r}")
        self.vocab_size, self.dim, self.mode, self.objective = vocab_size, dim, mode, objective
        self.num_negatives = num_negatives
        self.in_embed = nn.Embedding(vocab_size, dim)
        self.out_embed = nn.Embedding(vocab_size, dim)
        with torch.no_grad():
            self.in_embed.weight.uniform_(-0.5 / dim, 0.5 / dim)
            self.out_embed.weight.zero_()
        probs = torch.full((vocab_size,), 1.0 / vocab_size) if noise_probs is None else torch.as_tensor(noise_probs)
        if probs.shape != (vocab_size,):
            raise ConfigError(f"noise_probs must have one entry per word, [{vocab_size}]; got {tuple(probs.shape)}")
        self.register_buffer("noise_probs", probs.float(), persistent=False)
        self.vocab = vocab

    @property
    def embeddings(self) -> Tensor:
        """The word vectors v_w [V, D] (input embeddings)."""
        return self.in_embed.weight

    def hidden(self, inputs: Tensor) -> Tensor:
        """h [B, D]: v of the centre ids [B] (skip-gram), or the mean v of contexts [B, C] (CBOW, -1 = none)."""
        if self.mode == "skipgram":
            return self.in_embed(inputs)
        mask = (inputs >= 0).unsqueeze(-1)
        if not mask.any(1).all():
            raise ConfigError("every CBOW example needs at least one context word (ids >= 0)")
        v = self.in_embed(inputs.clamp_min(0)) * mask
        return v.sum(1) / mask.sum(1)

    def forward(self, inputs: Tensor, targets: Tensor | None = None, negatives: Tensor | None = None) -> Tensor:
        """Full-softmax logits U h [B, V]; given `targets`, the training loss of `loss` instead (a training step
        calls the module, so that wrappers such as DDP see the call)."""
        if targets is not None:
            return self.loss(inputs, targets, negatives)
        return self.hidden(inputs) @ self.out_embed.weight.t()

    def sample_negatives(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """[n, K] noise word ids drawn from `noise_probs` with replacement."""
        return torch.multinomial(self.noise_probs, n * self.num_negatives, replacement=True,
                                 generator=generator).view(n, self.num_negatives)

    def loss(self, inputs: Tensor, targets: Tensor, negatives: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """Mean loss of predicting `targets` [B] from `inputs`: full-softmax cross-entropy or negative sampling."""
        h = self.hidden(inputs)
        if self.objective == "softmax":
            return F.cross_entropy(h @ self.out_embed.weight.t(), targets)
        if negatives is None:
            negatives = self.sample_negatives(len(targets), generator).to(targets.device)
        return negative_sampling_loss(h, self.out_embed(targets), self.out_embed(negatives))

    # ------------------------------------------------------------------------- queries

    def _id(self, word) -> int:
        if isinstance(word, int):
            return word
        if self.vocab is None:
            raise ConfigError("pass word ids, or build Word2Vec with vocab= to look words up")
        if hasattr(self.vocab, "stoi"):
            if word not in self.vocab.stoi:
                raise ConfigError(f"{word!r} is not in the vocabulary")
            return self.vocab.stoi[word]
        return list(self.vocab).index(word)

    def _word(self, i: int):
        if self.vocab is None:
            return i
        return self.vocab.itos[i] if hasattr(self.vocab, "itos") else list(self.vocab)[i]

    @torch.no_grad()
    def _nearest(self, query: Tensor, k: int, exclude: Sequence[int]) -> list[tuple]:
        unit = F.normalize(self.embeddings, dim=1)
        sims = unit @ F.normalize(query, dim=0)
        sims[list(exclude)] = -math.inf
        top = sims.topk(min(k, self.vocab_size - len(set(exclude))))
        return [(self._word(i), float(s)) for s, i in zip(top.values, top.indices.tolist())]

    def most_similar(self, word, k: int = 5) -> list[tuple]:
        """The k words of highest cosine similarity cos(v_w, v_word) = v_w . v_word / (|v_w| |v_word|), best first."""
        i = self._id(word)
        return self._nearest(self.embeddings[i], k, [i])

    def analogy(self, a, b, c, k: int = 1) -> list[tuple]:
        """Analogy "a is to b as c is to ?": the k words nearest (cosine) to v_b - v_a + v_c (unit vectors).

        a, b and c are excluded (Mikolov 2013a: king - man + woman ~ queen is analogy("man", "king", "woman")).
        """
        ia, ib, ic = self._id(a), self._id(b), self._id(c)
        unit = F.normalize(self.embeddings.detach(), dim=1)
        return self._nearest(unit[ib] - unit[ia] + unit[ic], k, [ia, ib, ic])


def train_word2vec(model: Word2Vec, ids: Tensor, window: int = 2, epochs: int = 5, batch_size: int = 256,
                   lr: float = 0.01, seed: int = 0) -> list[float]:
    """Train `model` on a token-id sequence with Adam, in mini-batches of skip-gram pairs or CBOW windows.

    Notes: 003 §9.1. Returns the mean loss of each epoch.
    """
    g = torch.Generator().manual_seed(seed)
    if model.mode == "skipgram":
        pairs = skipgram_pairs(ids, window)
        inputs, targets = pairs[:, 0], pairs[:, 1]
    else:
        inputs, targets = cbow_examples(ids, window)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        perm = torch.randperm(len(targets), generator=g)
        total = 0.0
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            loss = model.loss(inputs[idx], targets[idx], generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(perm))
    return history


@register_model(task="embedding", num_params=2 * 10_000 * 100, params_source="by hand: two 10,000 x 100 tables")
def word2vec_skipgram(**kw) -> Word2Vec:
    """Skip-gram with negative sampling (K = 5), 100-dim vectors, 10,000-word vocabulary. Notes: 003 §9.1."""
    return Word2Vec(**{"vocab_size": 10_000, "dim": 100, "mode": "skipgram", **kw})


@register_model(task="embedding", num_params=2 * 10_000 * 100, params_source="by hand: two 10,000 x 100 tables")
def word2vec_cbow(**kw) -> Word2Vec:
    """CBOW with negative sampling (K = 5), 100-dim vectors, 10,000-word vocabulary. Notes: 003 §9.1."""
    return Word2Vec(**{"vocab_size": 10_000, "dim": 100, "mode": "cbow", **kw})
