"""Dropout with inverted scaling (Notes: 000 §2.1, 003 §2.3.3).

In training each unit is zeroed with probability p and the kept ones are scaled by 1/(1 - p), so the
expected output equals the input; in evaluation dropout is the identity. This is the same as the notes'
"weights are scaled to average the output" (scaling by 1 - p at test time), moved to training time.
The notes draw a new set of dropped neurons "each epoch"; the standard, implemented here, draws a new
mask at every forward pass, independently for every sample and unit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError


def _check_p(p: float) -> None:
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ConfigError(f"dropout probability p must be a number in [0, 1]; got {p!r}")


def dropout(
    x: Tensor, p: float = 0.5, training: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Inverted dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p) per element; identity when not training.

    Notes: 003 §2.3.3, 000 §2.1. p = 0 is the identity and p = 1 gives zeros.
    """
    _check_p(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class Dropout(nn.Module):
    """Inverted dropout module: drops with probability p in train mode, identity in eval mode."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        _check_p(p)
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
