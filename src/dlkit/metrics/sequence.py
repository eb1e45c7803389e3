"""Sequence-generation metrics (Notes: 003 §9, 002 §3.1: a generated sequence is read up to its <EOS>).

`exact_match` scores whole sequences at once; `ExactMatch` and `TokenAccuracy` are the streaming forms (metric
objects with `update`/`compute`/`reset`, summed across DDP ranks) that a task's evaluation feeds batch by batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from .meter import Metric


def exact_match(guesses: Sequence, truths: Sequence) -> float:
    """Fraction of generated sequences equal to their targets as a whole (every token right, ending where the
    target ends): mean_i [guess_i == truth_i]. Items are strings or token lists; 0 targets give 0.0."""
    if len(guesses) != len(truths):
        raise ConfigError(f"exact_match needs one guess per target; got {len(guesses)} guesses and "
                          f"{len(truths)} targets")
    return sum(g == t for g, t in zip(guesses, truths)) / max(len(truths), 1)


def _as_list(item) -> list | str:
    return item.tolist() if isinstance(item, Tensor) else (item if isinstance(item, str) else list(item))


class ExactMatch(Metric):
    """Streaming exact match: `update(guesses, truths)` per batch (strings, token lists or 1-D tensors), `compute()`
    the fraction of all sequences seen that equal their targets as a whole (Notes: 003 §9)."""

    def __init__(self):
        super().__init__()
        self.add_state("correct", torch.zeros((), dtype=torch.int64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))

    def update(self, guesses: Sequence, truths: Sequence) -> None:
        if len(guesses) != len(truths):
            raise ConfigError(f"ExactMatch.update needs one guess per target; got {len(guesses)} guesses and "
                              f"{len(truths)} targets")
        hits = sum(_as_list(g) == _as_list(t) for g, t in zip(guesses, truths))
        self.correct = self.correct + hits
        self.count = self.count + len(truths)

    def compute(self) -> float:
        correct, count = self.synced("correct"), self.synced("count")
        if count.item() == 0:
            raise ConfigError("ExactMatch.compute() before any update: no sequence to score (is the data empty?)")
        return (correct.double() / count).item()


class TokenAccuracy(Metric):
    """Streaming token accuracy of generated sequences against padded targets, position by position: the fraction
    of the real (non-<PAD>) target tokens, <EOS> included, that the generated sequence has at the same position.
    A generated sequence shorter than its target counts its missing positions as wrong."""

    def __init__(self, pad_id: int = 0):
        super().__init__()
        self.pad_id = pad_id
        self.add_state("correct", torch.zeros((), dtype=torch.int64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, generated: Tensor, target: Tensor) -> None:
        """generated [B, T'] and target [B, T] token ids, both starting at the first token after <SOS>."""
        if generated.dim() != 2 or target.dim() != 2 or generated.shape[0] != target.shape[0]:
            raise ConfigError(f"TokenAccuracy.update expects generated [B, T'] and target [B, T] ids; got "
                              f"{tuple(generated.shape)} and {tuple(target.shape)}")
        T = target.shape[1]
        if generated.shape[1] < T:
            fill = generated.new_full((generated.shape[0], T - generated.shape[1]), self.pad_id)
            generated = torch.cat([generated, fill], 1)
        real = target != self.pad_id
        hit = (generated[:, :T] == target) & real
        self.correct = self.correct.to(target.device) + hit.sum()
        self.count = self.count.to(target.device) + real.sum()

    def compute(self) -> float:
        correct, count = self.synced("correct"), self.synced("count")
        if count.item() == 0:
            raise ConfigError("TokenAccuracy.compute() before any update: no target token to score")
        return (correct.double() / count).item()
