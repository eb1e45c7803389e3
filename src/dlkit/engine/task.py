"""The task protocol: what a recipe gives the Trainer (which knows nothing about tasks).

A task owns the model and says how one batch trains (`training_step`) and how a model is
scored (`evaluate`). With `automatic_optimization = True` the step returns a dict with a
`loss` and the Trainer runs backward, clipping, the optimizer and the schedules. With
`False` (GANs: several optimizers) the step calls `self.trainer.backward(loss)` and
`self.trainer.optimizer_step(optimizer)` itself and returns the scalars to log.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Task:
    """Base class of training tasks."""

    automatic_optimization: bool = True

    def __init__(self, model: nn.Module):
        self.model = model
        self.trainer = None  # set by the Trainer

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list]:
        """The optimizers and LR schedules (schedules are stepped once per training step)."""
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """One mini-batch; `model` is the module to call (possibly wrapped by DDP or torch.compile)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader) -> dict[str, float]:
        """Metrics of `model` on `loader` (called in eval mode without gradients)."""
        return {}

    def figures(self, run_dir: Path, model: nn.Module, loader) -> list[Path]:
        """Task-specific figures written to run_dir/figures (optional)."""
        return []
