"""Exponential moving average of weights: theta_ema <- d * theta_ema + (1 - d) * theta."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """A shadow copy of a model whose floating-point weights track an exponential moving average.

    Buffers that are not floating point (e.g. BatchNorm's step counter) are copied as they are.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            from ..errors import ConfigError

            raise ConfigError(f"EMA decay must be in (0, 1); got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards `model`'s current weights."""
        ema = [t for t in self.module.state_dict().values() if t.is_floating_point()]
        cur = [t for t in model.state_dict().values() if t.is_floating_point()]
        torch._foreach_lerp_(ema, cur, 1.0 - self.decay)
        for e, c in zip(self.module.state_dict().values(), model.state_dict().values()):
            if not e.is_floating_point():
                e.copy_(c)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
