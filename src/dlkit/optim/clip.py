"""Gradient clipping by global norm and by value (a standard remedy for exploding gradients; Notes: 003 §2.4).

Clipping by norm rescales all gradients together, so the update keeps its direction and only its length is
capped; clipping by value clamps each entry and can change the direction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from ..errors import TrainingDiverged
from ._common import check, group_by_device_dtype


def _grads(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad for p in params if p.grad is not None]


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, eps: float = 1e-6) -> Tensor:
    """Rescale the gradients in place so their global norm is at most `max_norm`; returns the norm before clipping.

    Notes: 003 §2.4 (exploding gradients). `||g||_p = (sum_i ||g_i||_p^p)^(1/p)` over all gradient tensors
    (`max_i ||g_i||_inf` for p = inf), then `g <- g * min(1, max_norm / (||g||_p + eps))`; eps = 1e-6 as in
    torch.nn.utils.clip_grad_norm_ avoids dividing by zero.
    """
    check(max_norm >= 0, "max_norm", ">= 0", max_norm)
    norm_type = float(norm_type)
    check(norm_type > 0, "norm_type", "> 0 (2.0 for the Euclidean norm, inf for the largest entry)", norm_type)
    grads = _grads(parameters)
    if not grads:
        return torch.tensor(0.0)
    device = grads[0].device
    norms = torch.stack([torch.linalg.vector_norm(g.detach(), norm_type).to(device) for g in grads])
    total = norms.max() if math.isinf(norm_type) else torch.linalg.vector_norm(norms, norm_type)
    if error_if_nonfinite and not torch.isfinite(total):
        raise TrainingDiverged(f"the total {norm_type}-norm of the gradients is {float(total)}, so they cannot be "
                               "clipped. Lower the learning rate, or pass error_if_nonfinite=False to clip anyway.")
    coef = torch.clamp(max_norm / (total + eps), max=1.0)  # min(1, max_norm / ||g||)
    for (gs,) in group_by_device_dtype(grads).values():
        torch._foreach_mul_(gs, coef.to(gs[0].device))
    return total


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient entry in place to [-clip_value, clip_value].

    Notes: 003 §2.4 (exploding gradients). `g_j <- max(-c, min(c, g_j))`.
    """
    check(clip_value >= 0, "clip_value", ">= 0", clip_value)
    for g in _grads(parameters):
        g.clamp_(min=-clip_value, max=clip_value)
