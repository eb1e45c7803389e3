"""Text data: Tiny Shakespeare, tokenisers, vocabularies, sparse encodings, n-grams, padding and batching.

Notes: 002 §3.1.2, 004 RNN (character-level text), 003 §9 (special tokens, N-grams, bag-of-words, 1-of-N
coding, <PAD> batches), 000 §5.3 (token embeddings).

Each character is a token for `CharVocab`, which maps the sorted set of characters of a text to ids 0..V-1,
the inputs of an embedding layer or a one-hot encoding. `Vocab` adds the special tokens <PAD>, <SOS> (<GO>),
<EOS>, <UNK> of 003 §9, a frequency cut-off and a size limit, for characters or words (`word_tokenize`).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..errors import ConfigError
from .download import RemoteFile, ensure_files
from .files import damaged, decode_text, read_bytes, repair_hint

TINY_SHAKESPEARE = RemoteFile(
    "input.txt", "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")
_TINY_SHAKESPEARE_BYTES = 1_115_394  # ASCII: one byte per character


def load_tiny_shakespeare(data_dir: str | os.PathLike | None = None, download: bool = True) -> str:
    """The Tiny Shakespeare corpus (1,115,394 characters) as one string, checked against its sha256."""
    folder = ensure_files("tinyshakespeare", [TINY_SHAKESPEARE], data_dir, download)
    path = folder / TINY_SHAKESPEARE.name
    fix = repair_hint(TINY_SHAKESPEARE.url, folder, downloads=True)
    data = read_bytes(path, fix)
    text = decode_text(data, path, fix)  # undecodable bytes: named with their offset
    got = hashlib.sha256(data).hexdigest()
    if got != TINY_SHAKESPEARE.sha256:  # truncated, damaged or another text
        size = (f"{len(data):,} bytes, expected {_TINY_SHAKESPEARE_BYTES:,}; " if len(data) != _TINY_SHAKESPEARE_BYTES
                else "")
        raise damaged(path, f"not the official Tiny Shakespeare file ({size}sha256 expected {TINY_SHAKESPEARE.sha256}, "
                            f"got {got})", fix)
    return text


class CharVocab:
    """A character vocabulary: id = position of the character in the sorted set of the training text."""

    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise ConfigError("CharVocab needs distinct single characters; build it with CharVocab.from_text")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """Vocabulary of the distinct characters of `text`, sorted by code point."""
        if not text:
            raise ConfigError("cannot build a vocabulary from an empty text")
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Ids of the characters of `text` as an int64 tensor [len(text)]."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
        lut = np.full(max(max(map(ord, self.chars)), int(codes.max(initial=0))) + 1, -1, dtype=np.int64)
        lut[[ord(c) for c in self.chars]] = np.arange(len(self.chars))
        ids = lut[codes]
        if (ids < 0).any():
            c = chr(int(codes[np.argmax(ids < 0)]))
            raise ConfigError(f"character {c!r} is not in the vocabulary of {len(self)} characters; "
                              f"build the vocabulary from a text that contains it")
        return torch.from_numpy(ids)

    def decode(self, ids) -> str:
        """The text of a sequence of ids (tensor or list of ints)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        bad = [i for i in ids if not 0 <= int(i) < len(self)]
        if bad:
            raise ConfigError(f"ids must be in [0, {len(self) - 1}]; got {bad[:5]}")
        return "".join(self.chars[int(i)] for i in ids)


# ----------------------------------------------------------------------------- tokenisers

_WORD_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def char_tokenize(text: str) -> list[str]:
    """Character tokens: every character of `text` is one token. Notes: 002 §3.1.2 (character-level models)."""
    return list(text)


def word_tokenize(text: str, lower: bool = True) -> list[str]:
    """Word tokens: lower-case, then split into words (letters, digits, inner apostrophes) and punctuation marks.

    Notes: 003 §9 (words are the tokens of seq2seq translation). Whitespace separates and is dropped:
    "Don't stop, Bob!" -> ["don't", "stop", ",", "bob", "!"].
    """
    return _WORD_RE.findall(text.lower() if lower else text)


# ----------------------------------------------------------------------------- vocabulary

PAD, SOS, EOS, UNK = "<PAD>", "<SOS>", "<EOS>", "<UNK>"
GO = "<GO>"  # another name of <SOS> (003 §9)
SPECIAL_TOKENS = (PAD, SOS, EOS, UNK)


class Vocab:
    """A token vocabulary with the special tokens of seq2seq models. Notes: 003 §9 (special tokens), 000 §5.

    Ids: <PAD> = 0 fills batches to one width, <SOS> = 1 (alias <GO>) is the decoder's first input, <EOS> = 2
    ends a sequence, <UNK> = 3 replaces words below the frequency cut-off; then the regular tokens, most frequent
    first (ties in sorted order). <PAD>, <SOS>, <EOS> take the ids 0, 1, 2 that `Transformer` expects by default.
    """

    def __init__(self, tokens: Iterable[str], specials: Iterable[str] = SPECIAL_TOKENS,
                 counts: Counter | None = None):
        specials, tokens = list(specials), list(tokens)
        special_set = set(specials)
        itos = specials + [t for t in tokens if t not in special_set]
        if len(set(itos)) != len(itos):
            dup = [t for t, n in Counter(itos).items() if n > 1]
            raise ConfigError(f"vocabulary tokens must be distinct; got duplicates {dup[:5]}")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(itos)}
        self.specials = specials
        self.counts = Counter() if counts is None else counts

    @classmethod
    def build(cls, sequences: Iterable[Iterable[str]], min_freq: int = 1, max_size: int | None = None,
              specials: Iterable[str] = SPECIAL_TOKENS) -> Vocab:
        """Vocabulary of the tokens of `sequences` seen at least `min_freq` times, most frequent first.

        `max_size` caps the whole vocabulary (special tokens included): the least frequent tokens are dropped.
        Dropped tokens encode as <UNK>.
        """
        specials = list(specials)
        if min_freq < 1:
            raise ConfigError(f"min_freq must be >= 1; got {min_freq}")
        if max_size is not None and max_size < len(specials):
            raise ConfigError(f"max_size counts the {len(specials)} special tokens too; got {max_size}")
        counts = Counter()
        for seq in sequences:
            if isinstance(seq, str):
                raise ConfigError("Vocab.build expects sequences of tokens (lists of str); got a str. Tokenise "
                                  "first, e.g. Vocab.build([word_tokenize(s) for s in texts])")
            counts.update(seq)
        kept = sorted((t for t, n in counts.items() if n >= min_freq and t not in specials),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size - len(specials)]
        return cls(kept, specials, counts)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi or (token == GO and SOS in self.stoi)

    def __getitem__(self, token: str) -> int:
        """Id of `token`; <GO> is <SOS>; unknown tokens give the <UNK> id."""
        if token == GO:
            token = SOS
        if token in self.stoi:
            return self.stoi[token]
        if UNK not in self.stoi:
            raise ConfigError(f"token {token!r} is not in the vocabulary and it has no {UNK} token")
        return self.stoi[UNK]

    def _special_id(self, token: str) -> int:
        if token not in self.stoi:
            raise ConfigError(f"this vocabulary has no {token} token; its specials are {self.specials}")
        return self.stoi[token]

    @property
    def pad_id(self) -> int:
        return self._special_id(PAD)

    @property
    def sos_id(self) -> int:
        return self._special_id(SOS)

    @property
    def eos_id(self) -> int:
        return self._special_id(EOS)

    @property
    def unk_id(self) -> int:
        return self._special_id(UNK)

    def encode(self, tokens: Iterable[str], add_sos: bool = False, add_eos: bool = False) -> torch.Tensor:
        """Ids of `tokens` (a str is its characters) as int64, unknown -> <UNK>; optionally [<SOS>] ids [<EOS>]."""
        ids = ([self.sos_id] if add_sos else []) + [self[t] for t in tokens] + ([self.eos_id] if add_eos else [])
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids, skip_special: bool = False, stop_at_eos: bool = False) -> list[str]:
        """Tokens of a sequence of ids; `stop_at_eos` cuts at the first <EOS>, `skip_special` drops special tokens."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        out = []
        for i in ids:
            if not 0 <= int(i) < len(self):
                raise ConfigError(f"ids must be in [0, {len(self) - 1}]; got {int(i)}")
            tok = self.itos[int(i)]
            if stop_at_eos and tok == EOS:
                break
            if not (skip_special and tok in self.specials):
                out.append(tok)
        return out

    def to_text(self, ids, sep: str = "") -> str:
        """The text of a generated sequence: tokens up to the first <EOS>, special tokens dropped, joined by `sep`."""
        return sep.join(self.decode(ids, skip_special=True, stop_at_eos=True))

    def one_hot(self, ids: torch.Tensor) -> torch.Tensor:
        """1-of-N coding of ids [...] -> [..., len(vocab)] float. Notes: 003 §9."""
        return one_hot(ids, len(self))

    def bag_of_words(self, documents: Iterable[Iterable[str]]) -> torch.Tensor:
        """Bag-of-words counts [num_documents, len(vocab)]; unknown tokens count as <UNK>. Notes: 003 §9."""
        docs = [self.encode(d) for d in documents]
        return bag_of_words(docs, len(self))

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, specials={self.specials})"


# ----------------------------------------------------------------------------- sparse encodings and n-grams


def one_hot(ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """1-of-N (one-hot) coding: a 1 at the token's index, 0 elsewhere; [...] -> [..., N] float. Notes: 003 §9.

    cat, dog, bird -> [1,0,0], [0,1,0], [0,0,1]. Every two different words are sqrt(2) apart: no similarity.
    """
    ids = torch.as_tensor(ids)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ConfigError(f"one_hot expects integer ids; got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
        raise ConfigError(f"one_hot expects ids in [0, {num_classes - 1}]; got ids from {int(ids.min())} to "
                          f"{int(ids.max())}. Pass num_classes = the vocabulary size.")
    return torch.nn.functional.one_hot(ids.long(), num_classes).float()


def bag_of_words(documents: Iterable[torch.Tensor], num_classes: int) -> torch.Tensor:
    """Bag-of-words: per document, how often each token id occurs, [num_docs, num_classes] float. Notes: 003 §9.

    BoW(d)_j = #{i : d_i = j}: word order is lost (a permuted document has the same vector).
    """
    rows = [torch.bincount(torch.as_tensor(d, dtype=torch.long), minlength=num_classes)[:num_classes]
            for d in documents]
    if not rows:
        return torch.zeros(0, num_classes)
    return torch.stack(rows).float()


def ngrams(tokens: Sequence, n: int) -> list[tuple]:
    """The n-grams of a sequence: its L - n + 1 windows of n consecutive items, as tuples. Notes: 003 §9."""
    if n < 1:
        raise ConfigError(f"n-gram order n must be >= 1; got {n}")
    tokens = list(tokens)
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def ngram_counts(sequences: Iterable[Sequence], n: int) -> Counter:
    """Counts of the n-grams of every sequence (n-grams do not cross sequence boundaries). Notes: 003 §9."""
    counts = Counter()
    for seq in sequences:
        counts.update(ngrams(seq, n))
    return counts


class NGramModel:
    """Maximum-likelihood n-gram language model. Notes: 003 §9 (N-grams).

    P(s = w_1..w_k) = prod_i P(w_i | w_{i-n+1..i-1}), P(w | c) = count(c, w) / count(c, .). Each sentence is
    wrapped in n-1 <SOS> and one <EOS>, so the first words have a context and the sentence probabilities of
    all lengths sum to 1. No smoothing: an unseen n-gram has probability 0.
    """

    def __init__(self, sentences: Iterable[Sequence[str]], n: int = 2):
        if n < 1:
            raise ConfigError(f"n-gram order n must be >= 1; got {n}")
        self.n = n
        self.counts = ngram_counts((self._wrap(s) for s in sentences), n)
        self.context_counts: Counter = Counter()
        for gram, c in self.counts.items():
            self.context_counts[gram[:-1]] += c

    def _wrap(self, sentence: Sequence[str]) -> list[str]:
        return [SOS] * (self.n - 1) + list(sentence) + [EOS]

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """P(word | the last n-1 words of `context`), context padded on the left with <SOS>."""
        ctx = tuple(([SOS] * (self.n - 1) + list(context))[len(context):]) if self.n > 1 else ()
        total = self.context_counts.get(ctx, 0)
        return self.counts.get((*ctx, word), 0) / total if total else 0.0

    def sentence_prob(self, sentence: Sequence[str]) -> float:
        """P(s) by the chain rule over the wrapped sentence (its <EOS> included)."""
        w = self._wrap(sentence)
        p = 1.0
        for i in range(self.n - 1, len(w)):
            p *= self.prob(w[i], w[self.n - 1:i]) if self.n > 1 else self.prob(w[i])
        return p


# ----------------------------------------------------------------------------- padding and batching


class PaddedBatch(NamedTuple):
    """Variable-length sequences padded to one width: ids [B, T], lengths [B], padding_mask [B, T] (True = <PAD>)."""

    ids: torch.Tensor
    lengths: torch.Tensor
    padding_mask: torch.Tensor


def pad_sequences(sequences: Sequence, pad_id: int = 0, max_len: int | None = None) -> PaddedBatch:
    """Pad sequences of ids on the right with `pad_id` to the longest length (or `max_len`). Notes: 003 §9 (<PAD>).

    The padding mask is True at padded positions, the convention of attention's `key_padding_mask`.
    """
    seqs = [torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in sequences]
    if not seqs:
        raise ConfigError("pad_sequences needs at least one sequence")
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    width = int(lengths.max()) if max_len is None else max_len
    if int(lengths.max()) > width:
        raise ConfigError(f"a sequence of length {int(lengths.max())} does not fit max_len={width}; raise max_len "
                          "or truncate the sequences first")
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
    return PaddedBatch(ids, lengths, torch.arange(width) >= lengths[:, None])


class BucketBatchSampler:
    """Batches of indices of sequences of similar length, so little padding is wasted. Notes: 003 §9 (<PAD>).

    Per epoch: shuffle the indices, cut them into pools of `pool_batches` batches, sort each pool by length,
    cut it into batches and shuffle the order of the batches. `shuffle=False` sorts all sequences by length.
    The order depends only on (seed, epoch): call `set_epoch` between epochs. Usable as a DataLoader batch_sampler.
    """

    def __init__(self, lengths: Sequence[int] | torch.Tensor, batch_size: int, shuffle: bool = True, seed: int = 0,
                 pool_batches: int = 50, drop_last: bool = False):
        if batch_size < 1 or pool_batches < 1:
            raise ConfigError(f"batch_size and pool_batches must be >= 1; got {batch_size}, {pool_batches}")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.pool_batches, self.drop_last, self.epoch = pool_batches, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        """Use the batch order of `epoch` (a new shuffle per epoch, reproducible from the seed)."""
        self.epoch = epoch

    def _batches(self, idx: torch.Tensor) -> list[list[int]]:
        order = idx[torch.argsort(self.lengths[idx], stable=True)].tolist()
        out = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return [b for b in out if len(b) == self.batch_size] if self.drop_last else out

    def __iter__(self):
        n = len(self.lengths)
        if not self.shuffle:
            yield from self._batches(torch.arange(n))
            return
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**64)
        perm = torch.randperm(n, generator=g)
        pool = self.batch_size * self.pool_batches
        batches = [b for i in range(0, n, pool) for b in self._batches(perm[i:i + pool])]
        for j in torch.randperm(len(batches), generator=g).tolist():
            yield batches[j]

    def __len__(self) -> int:
        n = len(self.lengths)
        if not self.drop_last:
            return math.ceil(n / self.batch_size)
        if not self.shuffle:
            return n // self.batch_size
        pool = self.batch_size * self.pool_batches
        return sum(min(pool, n - i) // self.batch_size for i in range(0, n, pool))
