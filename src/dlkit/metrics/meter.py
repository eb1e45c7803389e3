"""Streaming metrics: `update` per batch, `compute` over everything seen, `reset` to start again.

A metric's state is a few tensors of sums (a count of correct predictions, a summed loss, a
confusion matrix), so under DDP `compute` first sums them over the ranks with all_reduce: each
rank may score its shard of the evaluation data and every rank gets the data set's metric. Every
metric here is a ratio of sums, so ranks that all see the same data also agree. The sum happens
only inside `ranks_synced()`, which the Trainer enters on every rank at once around an evaluation
(a figure drawn on rank 0 alone must not wait for the other ranks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import ConfigError

_SYNC = False


@contextlib.contextmanager
def ranks_synced(enabled: bool = True) -> Iterator[None]:
    """Within the block, `compute` sums metric states over the DDP ranks (every rank must enter it)."""
    global _SYNC
    before, _SYNC = _SYNC, enabled
    try:
        yield
    finally:
        _SYNC = before


class Metric:
    """Base class: subclasses register their sum tensors with `add_state` and define `update`/`compute`."""

    def __init__(self):
        self._states: dict[str, Tensor] = {}

    def add_state(self, name: str, value: Tensor) -> None:
        self._states[name] = value.clone()
        setattr(self, name, value.clone())

    def reset(self) -> None:
        """Forget every batch seen so far."""
        for name, value in self._states.items():
            setattr(self, name, value.clone().to(getattr(self, name).device))

    def synced(self, name: str) -> Tensor:
        """State `name` summed over the DDP ranks (itself in one process); the local state is not changed, so
        `compute` may be called any number of times."""
        t = getattr(self, name)
        if _SYNC and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = t.clone()
            dist.all_reduce(t)
        return t

    def update(self, *args) -> None:
        raise NotImplementedError

    def compute(self):
        raise NotImplementedError


class Mean(Metric):
    """The mean of every value added, weighted by `weight` (e.g. a per-batch mean loss times its batch size)."""

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("weight", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, value: Tensor | float, weight: Tensor | float = 1.0) -> None:
        value = torch.as_tensor(value, dtype=torch.float64).detach()
        weight = torch.as_tensor(weight, dtype=torch.float64)
        if weight.numel() and bool((weight < 0).any()):
            raise ConfigError(f"Mean.update: weights must be >= 0 (a count of samples); got {weight.min().item():g}")
        if value.dim():  # several values: each weighs `weight`
            if weight.dim() and weight.shape != value.shape:
                raise ConfigError(f"Mean.update: one weight, or one per value {tuple(value.shape)}; got weights "
                                  f"{tuple(weight.shape)}")
            weight = weight.expand_as(value)
            value, weight = (value * weight).sum(), weight.sum()
        else:
            value = value * weight
        self.total = self.total.to(value.device) + value
        self.weight = self.weight.to(value.device) + weight.to(value.device)

    def compute(self) -> float:
        total, weight = self.synced("total"), self.synced("weight")
        if weight.item() == 0:
            raise ConfigError("Mean.compute() before any update: no value to average (is the data empty?)")
        return (total / weight).item()


class Accuracy(Metric):
    """Fraction of predictions equal to the targets; `update` takes logits [N, C] (argmax over C) or indices."""

    def __init__(self):
        super().__init__()
        self.add_state("correct", torch.zeros((), dtype=torch.int64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, logits_or_pred: Tensor, target: Tensor) -> None:
        if target.is_floating_point() or target.dtype == torch.bool:
            raise ConfigError(f"Accuracy.update expects integer class indices as targets; got {target.dtype} "
                              f"{tuple(target.shape)} (soft or one-hot targets: pass target.argmax(1))")
        logits = logits_or_pred.dim() == target.dim() + 1
        if not logits and logits_or_pred.is_floating_point():
            raise ConfigError(f"Accuracy.update expects logits [N, C] or integer predictions shaped like the "
                              f"targets; got {logits_or_pred.dtype} {tuple(logits_or_pred.shape)}: pass logits, or "
                              "(probabilities > 0.5).long() for one output per sample")
        pred = logits_or_pred.argmax(1) if logits else logits_or_pred
        if pred.shape != target.shape:
            raise ConfigError(f"Accuracy.update expects logits [N, C] or predictions shaped like the targets "
                              f"{tuple(target.shape)}; got {tuple(logits_or_pred.shape)}")
        if logits and target.numel() and target.device.type == "cpu" and \
                not 0 <= int(target.min()) <= int(target.max()) < logits_or_pred.shape[1]:  # no device sync on a GPU
            raise ConfigError(f"Accuracy.update: targets must be class indices in 0..{logits_or_pred.shape[1] - 1} "
                              f"for logits of {logits_or_pred.shape[1]} classes; got {int(target.min())}.."
                              f"{int(target.max())}")
        self.correct = self.correct.to(pred.device) + (pred == target).sum()
        self.count = self.count.to(pred.device) + target.numel()

    def compute(self) -> float:
        correct, count = self.synced("correct"), self.synced("count")
        if count.item() == 0:
            raise ConfigError("Accuracy.compute() before any update: no prediction to score (is the data empty?)")
        return (correct.double() / count).item()
