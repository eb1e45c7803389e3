"""Exponential moving average of weights: theta_ema <- d * theta_ema + (1 - d) * theta.

The averaging is `torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn(d)` over parameters and buffers
(one fused `_foreach_lerp_` per dtype and device). `ModelEMA` adds what the Trainer needs around it: the average
starts at the model's weights when it is created, integer buffers (BatchNorm's batch counter) are copied rather
than averaged, and its state dict is the averaged network's own, so checkpoints keep the model's keys.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..errors import ConfigError


class ModelEMA:
    """A shadow copy of a model whose floating-point weights and buffers track an exponential moving average.

    theta_ema_0 = theta_0 (the weights at construction); each `update(model)` sets
    theta_ema <- decay * theta_ema + (1 - decay) * theta. Buffers that are not floating point (e.g. BatchNorm's
    step counter) are copied as they are: an average of a counter means nothing.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"EMA decay must be in (0, 1); got {decay}")
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.averaged.update_parameters(model)  # the first call copies: the average starts at theta_0
        self.module = self.averaged.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards `model`'s current weights."""
        self.averaged.update_parameters(model)
        for e, c in zip(self.module.buffers(), model.buffers(), strict=True):
            if not (e.is_floating_point() or e.is_complex()):
                e.copy_(c)

    def state_dict(self) -> dict:
        """The averaged network's state dict (the model's keys). The step count is not needed: after the first
        (copying) step the EMA update does not depend on it."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
