"""Classification losses written from their formulas (Notes: 003 §2.2.2, 004 CNN).

Binary cross-entropy from probabilities or, stably, from logits; categorical cross-entropy from
probabilities or from logits, with class-index or one-hot/soft targets and optional label smoothing;
negative log-likelihood; the hinge loss (binary, labels +-1) and its multi-class margin form.
Conventions follow torch's so that the values are interchangeable: the class dimension is 1 (inputs
[N, C] or [N, C, d1, ...]), integer targets are class indices, float targets are probabilities of the
input's shape, logs of probabilities are clamped at -100, and 'mean' over weighted class-index targets
divides by the sum of the targets' weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn.activations import log_softmax, softplus
from .regression import REDUCTIONS, check_same_shape, reduce_loss

LOG_CLAMP = -100.0  # as torch.nn.functional.binary_cross_entropy


def _clamped_log(p: Tensor) -> Tensor:
    return torch.log(p).clamp(min=LOG_CLAMP)


def _check_probabilities(p: Tensor, what: str, logits_fn: str) -> None:
    if ((p < 0) | (p > 1)).any():
        raise ConfigError(
            f"{what} expects probabilities in [0, 1]; got values in [{p.min().item():.3g}, "
            f"{p.max().item():.3g}]. For raw scores use {logits_fn}."
        )


def _check_binary_target(t: Tensor, what: str) -> None:
    """BCE's target: float probabilities in [0, 1] (torch refuses integer targets, and any value outside)."""
    if not t.is_floating_point():
        raise ConfigError(f"{what} expects float targets in [0, 1]; got {t.dtype}: pass target.float()")
    if t.numel() and t.device.type == "cpu" and ((t < 0) | (t > 1)).any():  # no device sync on a GPU
        raise ConfigError(f"{what} expects targets in [0, 1]; got values in [{t.min().item():.3g}, "
                          f"{t.max().item():.3g}]")


def binary_cross_entropy(
    input: Tensor, target: Tensor, weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """BCE from probabilities. Notes: 003 §2.2.2.

    L = -w [t ln y + (1 - t) ln(1 - y)], logs clamped at -100 as torch.
    """
    check_same_shape(input, target, "binary_cross_entropy")
    _check_probabilities(input, "binary_cross_entropy", "binary_cross_entropy_with_logits")
    _check_binary_target(target, "binary_cross_entropy")
    loss = -(target * _clamped_log(input) + (1 - target) * _clamped_log(1 - input))
    if weight is not None:
        loss = loss * weight
    return reduce_loss(loss, reduction)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """BCE from logits x, stable: L = (1 - t) x + (1 + (p_w - 1) t) softplus(-x) = BCE(sigmoid(x), t).

    softplus(-x) = -ln sigmoid(x) is computed with the log-sum-exp trick, so no exp overflows.
    pos_weight p_w scales the positive term, as in torch.
    """
    check_same_shape(input, target, "binary_cross_entropy_with_logits")
    _check_binary_target(target, "binary_cross_entropy_with_logits")
    sp = softplus(-input)
    if pos_weight is None:
        loss = (1 - target) * input + sp
    else:
        loss = (1 - target) * input + (1 + (pos_weight - 1) * target) * sp
    if weight is not None:
        loss = loss * weight
    return reduce_loss(loss, reduction)


def _class_weight_view(weight: Tensor, ndim: int) -> Tensor:
    return weight.view(1, -1, *([1] * (ndim - 2)))


def _cross_entropy_from_log_probs(
    logp: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    what: str,
) -> Tensor:
    """-sum_k t_k log p_k with index or soft targets (class dim 1); the shared core of CE and NLL."""
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ConfigError(f"{what}: label_smoothing must be in [0, 1]; got {label_smoothing}")
    unbatched = logp.dim() == 1
    if unbatched:
        logp, target = logp.unsqueeze(0), target.unsqueeze(0)
    n_classes = logp.shape[1]
    if weight is not None and weight.shape != (n_classes,):
        raise ConfigError(
            f"{what}: weight must have one entry per class, shape ({n_classes},); got {tuple(weight.shape)}"
        )
    if target.is_floating_point():  # probabilities (one-hot or soft) of the input's shape
        if target.shape == logp.shape[:1] + logp.shape[2:]:
            raise ConfigError(f"{what}: a float target shaped like class indices {tuple(target.shape)}; class indices "
                              "must be integers (target.long()), probabilities must have the input's shape "
                              f"{tuple(logp.shape)}")
        check_same_shape(logp, target, what)
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / n_classes
        terms = logp * target
        if weight is not None:
            terms = terms * _class_weight_view(weight, logp.dim())
        loss = -terms.sum(1)
        if reduction == "mean":
            out = loss.sum() / (logp.numel() / n_classes)
        else:
            out = reduce_loss(loss, reduction)
        return out.squeeze(0) if unbatched and reduction == "none" else out
    expected = (logp.shape[0], *logp.shape[2:])
    if target.shape != expected:
        raise ConfigError(
            f"{what}: class-index target must have shape {tuple(expected)} for input "
            f"{tuple(logp.shape)} (classes on dim 1); got {tuple(target.shape)}. "
            "Pass probabilities as a float tensor of the input's shape instead."
        )
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    if ((safe < 0) | (safe >= n_classes)).any():
        raise ConfigError(
            f"{what}: class indices must be in [0, {n_classes - 1}] (or ignore_index={ignore_index}); "
            f"got values in [{int(target.min())}, {int(target.max())}]"
        )
    picked = logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    w_t = weight[safe] if weight is not None else torch.ones_like(picked)
    w_t = w_t * valid
    nll = -w_t * picked
    nll_red = nll.sum() / w_t.sum() if reduction == "mean" else reduce_loss(nll, reduction)
    if label_smoothing == 0:
        return nll_red.squeeze(0) if unbatched and reduction == "none" else nll_red
    w_all = _class_weight_view(weight, logp.dim()) if weight is not None else 1.0
    smooth = -(logp * w_all).sum(1) * valid
    smooth_red = smooth.sum() / w_t.sum() if reduction == "mean" else reduce_loss(smooth, reduction)
    out = (1 - label_smoothing) * nll_red + label_smoothing / n_classes * smooth_red
    return out.squeeze(0) if unbatched and reduction == "none" else out


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Categorical cross-entropy from logits: L = -sum_k t_k log softmax(x)_k (stable log-softmax).

    Notes: 003 §2.2.2, 004 CNN (softmax output, one-hot targets). `target` is class indices (int) or
    probabilities (float, one-hot or soft); label smoothing mixes the target with the uniform
    distribution: t <- (1 - eps) t + eps / C. With reduction 'mean', a batch whose every target is `ignore_index`
    gives NaN (0 / 0), as torch's does.
    """
    if input.dim() < 1:
        raise ConfigError(
            "cross_entropy expects logits of shape [C], [N, C] or [N, C, d1, ...]; got a scalar"
        )
    return _cross_entropy_from_log_probs(
        log_softmax(input, dim=0 if input.dim() == 1 else 1),
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        "cross_entropy",
    )


def categorical_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Categorical cross-entropy from probabilities (softmax outputs). Notes: 003 §2.2.2.

    L = -sum_k t_k ln y_k.

    Logs are clamped at -100. Prefer `cross_entropy` on logits: it is the same loss, computed stably.
    """
    _check_probabilities(input, "categorical_cross_entropy", "cross_entropy")
    return _cross_entropy_from_log_probs(
        _clamped_log(input),
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        "categorical_cross_entropy",
    )


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of class indices given log-probabilities: L = -w_y log p_y.

    'mean' divides by sum of w_y over non-ignored targets, as torch.
    """
    if target.is_floating_point():
        raise ConfigError(
            "nll_loss expects integer class indices as target; got a float tensor. "
            "Use cross_entropy for probability targets."
        )
    return _cross_entropy_from_log_probs(input, target, weight, ignore_index, reduction, 0.0, "nll_loss")


def hinge_loss(input: Tensor, target: Tensor, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    """Binary hinge loss (SVM margin): L = max(0, margin - t y), labels t in {-1, +1}. Notes: 003 §2.2.2."""
    check_same_shape(input, target, "hinge_loss")
    if not ((target == 1) | (target == -1)).all():
        raise ConfigError(
            "hinge_loss expects labels in {-1, +1}; got other values. Map {0, 1} labels with t = 2 * t - 1."
        )
    return reduce_loss((margin - target * input).clamp(min=0), reduction)


def multi_margin_loss(
    input: Tensor,
    target: Tensor,
    p: int = 1,
    margin: float = 1.0,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Multi-class hinge loss (torch's form).

    L = sum_{j != y} w_y max(0, margin - x_y + x_j)^p / C.
    """
    if p not in (1, 2):
        raise ConfigError(f"multi_margin_loss p must be 1 or 2; got {p}")
    if input.dim() != 2 or target.shape != (input.shape[0],):
        raise ConfigError(
            f"multi_margin_loss expects scores [N, C] and class indices [N]; got "
            f"{tuple(input.shape)} and {tuple(target.shape)}"
        )
    n_classes = input.shape[1]
    if ((target < 0) | (target >= n_classes)).any():
        raise ConfigError(f"multi_margin_loss: class indices must be in [0, {n_classes - 1}]")
    x_y = input.gather(1, target.unsqueeze(1))
    terms = (margin - x_y + input).clamp(min=0) ** p
    terms = terms.scatter(1, target.unsqueeze(1), 0.0)  # leave out j = y
    loss = terms.sum(1) / n_classes
    if weight is not None:
        loss = loss * weight[target]
    return reduce_loss(loss, reduction)


class _Loss(nn.Module):
    def __init__(self, reduction: str = "mean", weight: Tensor | None = None):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ConfigError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
        self.reduction = reduction
        self.register_buffer("weight", weight)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class BCELoss(_Loss):
    """Binary cross-entropy on probabilities. Notes: 003 §2.2.2."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy on logits (stable), with optional pos_weight."""

    def __init__(
        self, weight: Tensor | None = None, reduction: str = "mean", pos_weight: Tensor | None = None
    ):
        super().__init__(reduction, weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(input, target, self.weight, self.pos_weight, self.reduction)


class CrossEntropyLoss(_Loss):
    """Categorical cross-entropy on logits (index or probability targets, label smoothing)."""

    def __init__(
        self,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ):
        super().__init__(reduction, weight)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(
            input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing
        )


class CategoricalCrossEntropyLoss(CrossEntropyLoss):
    """Categorical cross-entropy on probabilities (softmax outputs). Notes: 003 §2.2.2."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return categorical_cross_entropy(
            input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing
        )


class NLLLoss(_Loss):
    """Negative log-likelihood on log-probabilities with class-index targets."""

    def __init__(self, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__(reduction, weight)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class HingeLoss(_Loss):
    """Binary hinge loss with +-1 labels. Notes: 003 §2.2.2."""

    def __init__(self, margin: float = 1.0, reduction: str = "mean"):
        super().__init__(reduction)
        self.margin = margin

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return hinge_loss(input, target, self.margin, self.reduction)


class MultiMarginLoss(_Loss):
    """Multi-class hinge loss (torch's multi_margin_loss form)."""

    def __init__(
        self, p: int = 1, margin: float = 1.0, weight: Tensor | None = None, reduction: str = "mean"
    ):
        super().__init__(reduction, weight)
        self.p, self.margin = p, margin

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return multi_margin_loss(input, target, self.p, self.margin, self.weight, self.reduction)
