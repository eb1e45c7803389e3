"""Regression losses written from their formulas (Notes: 003 §2.2.2).

MSE and MAE, and the two robust losses that are quadratic near zero and linear far from it. Huber
(parameter delta) and smooth-L1 (parameter beta) are the same curve up to a factor:
huber_delta(d) = delta * smooth_l1_{beta=delta}(d). Every loss takes `reduction` in
{'mean', 'sum', 'none'}; `reduce_loss` is shared with `dlkit.losses.classification`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError

REDUCTIONS = ("mean", "sum", "none")


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Reduce element-wise losses: 'mean' (average), 'sum' or 'none' (unchanged)."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ConfigError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")


def check_same_shape(input: Tensor, target: Tensor, what: str) -> None:
    """Raise ConfigError unless prediction and target have the same shape (no silent broadcasting)."""
    if input.shape != target.shape:
        raise ConfigError(
            f"{what}: prediction and target must have the same shape; got {tuple(input.shape)} "
            f"and {tuple(target.shape)}. Reshape the target (e.g. target.view_as(pred))."
        )


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error. Notes: 003 §2.2.2. L = (1/N) sum (y - t)^2; dL/dy = 2 (y - t) / N."""
    check_same_shape(input, target, "mse_loss")
    return reduce_loss((input - target) ** 2, reduction)


def mae_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error (L1 loss). L = (1/N) sum |y - t|."""
    check_same_shape(input, target, "mae_loss")
    return reduce_loss((input - target).abs(), reduction)


l1_loss = mae_loss


def smooth_l1_loss(input: Tensor, target: Tensor, beta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Smooth L1: 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta, d = y - t (beta = 0 gives L1)."""
    check_same_shape(input, target, "smooth_l1_loss")
    if beta < 0:
        raise ConfigError(f"smooth_l1_loss beta must be >= 0; got {beta}")
    d = (input - target).abs()
    if beta == 0:
        return reduce_loss(d, reduction)
    return reduce_loss(torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta), reduction)


def huber_loss(input: Tensor, target: Tensor, delta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Huber loss: 0.5 d^2 if |d| <= delta else delta (|d| - 0.5 delta).

    Equals delta * smooth_l1(beta=delta).
    """
    check_same_shape(input, target, "huber_loss")
    if delta <= 0:
        raise ConfigError(f"huber_loss delta must be > 0; got {delta}")
    d = (input - target).abs()
    return reduce_loss(torch.where(d <= delta, 0.5 * d * d, delta * (d - 0.5 * delta)), reduction)


class _Loss(nn.Module):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ConfigError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """Mean squared error module. Notes: 003 §2.2.2."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mse_loss(input, target, self.reduction)


class MAELoss(_Loss):
    """Mean absolute error (L1) module."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mae_loss(input, target, self.reduction)


L1Loss = MAELoss


class SmoothL1Loss(_Loss):
    """Smooth-L1 module (quadratic below beta)."""

    def __init__(self, beta: float = 1.0, reduction: str = "mean"):
        super().__init__(reduction)
        self.beta = beta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return smooth_l1_loss(input, target, self.beta, self.reduction)


class HuberLoss(_Loss):
    """Huber module (quadratic below delta); equals delta * SmoothL1Loss(beta=delta)."""

    def __init__(self, delta: float = 1.0, reduction: str = "mean"):
        super().__init__(reduction)
        self.delta = delta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return huber_loss(input, target, self.delta, self.reduction)
