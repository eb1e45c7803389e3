"""The task protocol: what a recipe gives the Trainer, which knows no model or task family.

A task owns the model and says how one batch trains (`training_step`) and how a model is scored
(`evaluate`). With `automatic_optimization = True` the step returns a dict with a `loss` and the
Trainer runs backward, clipping, the optimizers and the schedules. With `False` (GANs: two
optimizers stepped in turn) the step calls `ctx.backward(loss)` and `ctx.optimizer_step(opt)`
itself and returns the scalars to log. What a step needs from the loop (step number, device,
autocast, the optimizers) arrives in a `StepContext`; a task keeps no reference to the Trainer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


@dataclass
class TrainingPlan:
    """How long training runs, as the Trainer computed it before the first step (for schedules)."""

    total_steps: int                 # optimizer steps the run will take (max_steps, or epochs x batches)
    steps_per_epoch: int | None      # None when the training data is an endless iterable
    epochs: int | None               # None when the run is counted in steps only


@dataclass
class StepContext:
    """What one training step may use of the loop: where and when it runs, and the optimizers."""

    step: int                                        # optimizer steps already taken (0 at the first step)
    epoch: int                                       # 0-based epoch (0 for endless data)
    device: torch.device
    optimizers: list = field(default_factory=list)
    schedulers: list = field(default_factory=list)
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    backward: Callable[[torch.Tensor], None] = lambda loss: loss.backward()
    optimizer_step: Callable[[torch.optim.Optimizer], None] = lambda opt: (opt.step(), opt.zero_grad())
    rank: int = 0
    world_size: int = 1


class Task:
    """Base class of training tasks (see the module docstring)."""

    automatic_optimization: bool = True
    metric_names: tuple[str, ...] | None = None
    """The names `evaluate` returns, where they are fixed: the Trainer then refuses a `monitor` the task never logs
    before training instead of at the first evaluation (None: not declared, checked at that evaluation)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def metric_names_for(self, data) -> tuple[str, ...] | None:
        """The names `evaluate(model, data)` returns, known before any evaluation (default: `metric_names`); a
        task whose names depend on the evaluation data (word2vec's per-pair ranks) overrides this."""
        return self.metric_names

    def configure_optimizers(self, plan: TrainingPlan) -> tuple[list[torch.optim.Optimizer], list]:
        """The optimizers and LR schedules; schedules step once per optimizer step (ReduceLROnPlateau: once
        per evaluation, on the monitored metric)."""
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        """One mini-batch; `model` is the module to call (possibly wrapped by DDP or torch.compile)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, data) -> dict[str, float]:
        """Metrics of `model` on `data` (called in eval mode, without gradients, under the run's autocast)."""
        return {}

    def figures(self, run_dir: Path, model: nn.Module, data) -> list[Path]:
        """Pictures of this family written to run_dir/figures (optional)."""
        return []
