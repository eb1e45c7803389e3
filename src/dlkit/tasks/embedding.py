"""Word embeddings: word2vec skip-gram with negative sampling, scored by where related words fall among each
other's neighbours (Notes: 003 §9.1, 004 Word2Vec).

Contract: the model is a `Word2Vec` (forward(centres, contexts, negatives) -> the negative-sampling loss); a
batch is (centre ids [B], context ids [B], noise ids [B, K]) as `SkipGramBatches` draws them. Evaluation
takes word pairs a reader expects to be near each other (forms of one word, or one role): for each pair
(a, b) the rank of b among a's neighbours, as the fraction of the vocabulary closer (cosine) to a than b is
(0: b is a's nearest neighbour), and the fraction of pairs whose rank is below `top_fraction` (chance: that
fraction itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.task import Task
from ..errors import ConfigError
from ..metrics.meter import Mean
from ..models.sequence.word2vec import skipgram_pairs, subsample
from .optimization import build_optimizers
from .seq2seq import unwrap


class SkipGramBatches:
    """Skip-gram training batches of a token stream, redrawn every epoch. Notes: 003 §9.1, 004 Word2Vec.

    Each epoch subsamples frequent words (each occurrence kept with probability min(1, sqrt(t / f_w))), drops
    ids <= `min_id` (special tokens), forms every (centre, context) pair within `window`, shuffles them and cuts
    batches of `batch_size`, each with `num_negatives` noise words per pair drawn from `noise_probs`. All of it
    comes from one generator seeded `seed`, in that order, so a run draws exactly what a plain loop over the
    epochs with that generator draws; the generator's state at the start of the epoch and now goes into the
    Trainer's checkpoints, so a resumed run draws the rest of the epoch as an uninterrupted one would.
    The length is the number of batches of the first epoch (later epochs differ by the few pairs that
    subsampling keeps or drops; the Trainer reads it only for its progress display and schedules).
    """

    def __init__(self, ids: Tensor, counts: Tensor, window: int, batch_size: int, subsample_t: float,
                 noise_probs: Tensor, num_negatives: int, seed: int = 0, min_id: int = -1):
        if batch_size < 1 or num_negatives < 1:
            raise ConfigError(f"batch_size and num_negatives must be >= 1; got {batch_size}, {num_negatives}")
        self.ids, self.counts, self.window, self.batch_size = ids, counts, window, batch_size
        self.subsample_t, self.noise_probs, self.num_negatives, self.min_id = subsample_t, noise_probs, num_negatives, \
            min_id
        self.generator = torch.Generator().manual_seed(seed)
        self._epoch_start = self.generator.get_state()
        self._resume_state: Tensor | None = None
        probe = torch.Generator().manual_seed(seed)
        self._first_len = math.ceil(len(self._pairs(probe)) / batch_size)

    def _pairs(self, g: torch.Generator) -> Tensor:
        kept = subsample(self.ids, self.counts, t=self.subsample_t, generator=g)
        return skipgram_pairs(kept[kept > self.min_id], self.window)

    def __len__(self) -> int:
        return self._first_len

    def set_epoch(self, epoch: int) -> None:
        """Nothing to select: each epoch continues the generator's stream."""

    def iter_from(self, start: int = 0):
        """The next epoch's batches from batch index `start` (> 0 only right after `load_state_dict`)."""
        g = self.generator
        if start:
            if self._resume_state is None:
                raise ConfigError("SkipGramBatches can start an epoch mid-way only after load_state_dict")
            g.set_state(self._epoch_start)
        self._epoch_start = g.get_state()
        pairs = self._pairs(g)
        perm = torch.randperm(len(pairs), generator=g)
        if start:
            g.set_state(self._resume_state)
        self._resume_state = None
        for s in range(start * self.batch_size, len(perm), self.batch_size):
            idx = perm[s: s + self.batch_size]
            negatives = torch.multinomial(self.noise_probs, len(idx) * self.num_negatives, replacement=True,
                                          generator=g).view(len(idx), self.num_negatives)
            yield pairs[idx, 0], pairs[idx, 1], negatives

    def __iter__(self):
        return self.iter_from(0)

    def state_dict(self) -> dict:
        return {"epoch_start": self._epoch_start, "now": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._epoch_start, self._resume_state = state["epoch_start"], state["now"]
        self.generator.set_state(state["now"])


class EmbeddingTask(Task):
    """Word2vec training and its related-pairs score; see the module docstring. `cfg` holds the optimizer options
    (`tasks.optimization`); `vocab` maps words to ids; `query_words` are shown with their nearest neighbours in
    samples_neighbours.txt, under the line `note`."""

    def __init__(self, model: nn.Module, cfg, vocab, query_words: Sequence[str] = (), top_fraction: float = 0.05,
                 note: str = ""):
        super().__init__(model)
        if not 0.0 < top_fraction < 1.0:
            raise ConfigError(f"top_fraction must lie in (0, 1); got {top_fraction}")
        self.cfg, self.vocab, self.query_words = cfg, vocab, list(query_words)
        self.top_fraction, self.note = top_fraction, note

    def configure_optimizers(self, plan):
        return build_optimizers(self.model.parameters(), self.cfg, plan)

    def training_step(self, model, batch, ctx):
        centres, contexts, negatives = batch
        return {"loss": model(centres, contexts, negatives)}

    def metric_names_for(self, data) -> tuple[str, ...]:
        """What `evaluate(model, data)` returns: the related-pairs score and one `a~b/rank` per pair of `data`
        whose words are both in the vocabulary (known from the data alone, before any evaluation)."""
        pairs = [f"{a}~{b}/rank" for a, b in data if a in self.vocab.stoi and b in self.vocab.stoi]
        return (self._top_name, *pairs)

    @property
    def _top_name(self) -> str:
        return f"related_pairs_in_top{100 * self.top_fraction:g}pct"

    def ranks(self, model: nn.Module, pairs: Sequence[tuple[str, str]]) -> dict[str, float]:
        """For each pair (a, b) with both words in the vocabulary: the fraction of the vocabulary nearer (cosine)
        to a than b is, keyed 'a~b'."""
        emb = F.normalize(unwrap(model).embeddings.detach().float(), dim=1)
        stoi = self.vocab.stoi
        out = {}
        for a, b in pairs:
            if a in stoi and b in stoi:
                sims = emb @ emb[stoi[a]]
                sims[stoi[a]] = -2.0
                out[f"{a}~{b}"] = float((sims > sims[stoi[b]]).double().mean())
        return out

    def evaluate(self, model, data):
        """`data`: the word pairs (a, b). Returns related_pairs_in_top{p}pct (p = 100 top_fraction) and a~b/rank
        (named so that the report draws every pair's rank in one figure)."""
        ranks = self.ranks(model, data)
        top = Mean()
        for v in ranks.values():
            top.update(float(v < self.top_fraction))
        return {self._top_name: top.compute() if ranks else float("nan"), **{f"{k}/rank": v for k, v in ranks.items()}}

    def figures(self, run_dir: Path, model, data) -> list[Path]:
        """samples_neighbours.txt: the query words' nearest neighbours and the rank of every related pair."""
        model = unwrap(model)
        lines = [f"vocabulary {len(self.vocab)} words" + (f"; {self.note}" if self.note else ""), ""]
        for w in self.query_words:
            if w in self.vocab.stoi:
                lines.append(f"{w}: " + ", ".join(f"{n} ({s:.2f})" for n, s in model.most_similar(w, 8)))
        if data is not None:
            lines += ["", "related pairs: fraction of the vocabulary nearer to the first word than the second is"]
            lines += [f"{k}: {v:.4f}" for k, v in self.ranks(model, data).items()]
        path = run_dir / "samples_neighbours.txt"
        path.write_text("\n".join(lines) + "\n")
        return [path]
