"""Dense-prediction losses: soft Dice, soft IoU (Jaccard) and the softmax focal loss (Notes: 002 §5.1, §4.3.4, §5.3.2).

Inputs follow torch's layout: logits [N, C, d1, ...] (classes on dim 1) and class-index targets [N, d1, ...].
With C >= 2 the probabilities are softmax(logits, dim 1) against the one-hot target; with C = 1 the input is
a binary mask's logit, p = sigmoid(x), and the target holds 0/1 (the foreground is the one class scored).
Pixels whose target equals `ignore_index` contribute nothing and get no gradient. The per-pixel
cross-entropy of the notes (002 §5.1.2, 003 §4) needs no wrapper: F.cross_entropy(logits, target,
ignore_index=255) is it (which gives NaN, 0 / 0, when every pixel is ignored; the losses here give 0 with no
gradient then, so that a crop of void pixels does not stop a training).

The region losses sum over every pixel of the batch per class (as the data-set IoU of dlkit.metrics.
segmentation accumulates), then average over the classes; `per_image=True` sums per image instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .regression import REDUCTIONS, reduce_loss


def _check_dense(logits: Tensor, target: Tensor, what: str) -> None:
    if logits.dim() < 2 or not logits.is_floating_point():
        raise ConfigError(f"{what} expects float logits [N, C, H, W] (classes on dim 1); got shape "
                          f"{tuple(logits.shape)} ({logits.dtype})")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ConfigError(f"{what} expects a class-index target of shape {expected} for logits "
                          f"{tuple(logits.shape)}; got {tuple(target.shape)} (drop the channel dim of a mask, "
                          "and pass indices, not one-hot)")
    if target.is_floating_point() or target.is_complex():
        raise ConfigError(f"{what} expects integer class indices as target; got dtype {target.dtype} (use .long())")


def _valid_and_safe(logits: Tensor, target: Tensor, ignore_index: int | None, what: str) -> tuple[Tensor, Tensor]:
    """The mask of counted pixels and the target with ignored pixels set to 0, range-checked."""
    _check_dense(logits, target, what)
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    n_values = max(logits.shape[1], 2)  # C = 1: a binary mask, targets 0/1
    if safe.numel() and (safe.min() < 0 or safe.max() >= n_values):
        bad = int(safe.max()) if safe.max() >= n_values else int(safe.min())
        raise ConfigError(f"{what}: target values must be in 0..{n_values - 1} for logits with {logits.shape[1]} "
                          f"channels; got {bad} (if it marks void pixels pass ignore_index={bad})")
    return valid, safe


def _probs_onehot(logits: Tensor, target: Tensor, ignore_index: int | None, what: str) -> tuple[Tensor, Tensor]:
    """Masked probabilities p and one-hot targets g, both [N, C, ...]; zero at ignored pixels."""
    valid, safe = _valid_and_safe(logits, target, ignore_index, what)
    if logits.shape[1] == 1:
        p, g = torch.sigmoid(logits), safe.unsqueeze(1).to(logits.dtype)
    else:
        p = torch.softmax(logits, dim=1)
        g = F.one_hot(safe, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    m = valid.unsqueeze(1).to(logits.dtype)
    return p * m, g * m


def _region_sums(p: Tensor, g: Tensor, per_image: bool) -> tuple[Tensor, Tensor, Tensor]:
    dims = tuple(range(2, p.dim())) if per_image else (0, *range(2, p.dim()))
    return (p * g).sum(dims), p.sum(dims), g.sum(dims)


def dice_loss(logits: Tensor, target: Tensor, ignore_index: int | None = None, smooth: float = 1.0,
              eps: float = 1e-7, per_image: bool = False) -> Tensor:
    """Soft Dice loss, averaged over the classes (Notes: 002 §5.3.2 mask loss; Milletari et al. 2016 V-Net).

    L = 1 - mean_c (2 sum p_c g_c + s) / (sum p_c + sum g_c + s), p = softmax (sigmoid for C = 1), g one-hot,
    sums over the pixels of the batch (per image with per_image=True); `eps` bounds the denominator when s = 0.
    """
    p, g = _probs_onehot(logits, target, ignore_index, "dice_loss")
    inter, sum_p, sum_g = _region_sums(p, g, per_image)
    dice = (2 * inter + smooth) / (sum_p + sum_g + smooth).clamp_min(eps)
    return 1 - dice.mean()


def soft_iou_loss(logits: Tensor, target: Tensor, ignore_index: int | None = None, smooth: float = 1.0,
                  eps: float = 1e-7, per_image: bool = False) -> Tensor:
    """Soft IoU (Jaccard) loss, the differentiable mIoU of 002 §5.1 with probabilities for the counts.

    L = 1 - mean_c (sum p_c g_c + s) / (sum p_c + sum g_c - sum p_c g_c + s); layout and options as dice_loss.
    """
    p, g = _probs_onehot(logits, target, ignore_index, "soft_iou_loss")
    inter, sum_p, sum_g = _region_sums(p, g, per_image)
    iou = (inter + smooth) / (sum_p + sum_g - inter + smooth).clamp_min(eps)
    return 1 - iou.mean()


def _alpha_t(alpha: float | Tensor, safe: Tensor, n_classes: int, dtype: torch.dtype) -> Tensor:
    if isinstance(alpha, (int, float)):
        if n_classes > 2 or not 0 <= alpha <= 1:
            raise ConfigError(f"softmax_focal_loss: a scalar alpha in [0, 1] balances the two classes of a binary "
                              f"problem (alpha for class 1, 1 - alpha for class 0); got alpha={alpha} with {n_classes} "
                              "classes. Pass a tensor of one weight per class instead.")
        return torch.where(safe == 1, alpha, 1 - alpha).to(dtype)
    alpha = torch.as_tensor(alpha, dtype=dtype, device=safe.device)
    if alpha.shape != (max(n_classes, 2),):
        raise ConfigError(f"softmax_focal_loss: alpha must hold one weight per class, shape "
                          f"({max(n_classes, 2)},); got {tuple(alpha.shape)}")
    return alpha[safe]


def softmax_focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0, alpha: float | Tensor | None = None,
               ignore_index: int | None = None, reduction: str = "mean") -> Tensor:
    """Focal loss per pixel, FL(p_t) = -alpha_t (1 - p_t)^gamma ln p_t (Notes: 002 §4.3.4, RetinaNet).

    p_t is the probability of the true class: softmax over C >= 2 channels, or for C = 1 the notes' binary form
    p_t = sigmoid(x) if y = 1 else 1 - sigmoid(x). gamma = 0 and no alpha give cross-entropy. alpha is a scalar
    (binary: alpha for class 1, 1 - alpha for class 0) or one weight per class. 'mean' divides by the number of
    counted pixels (as RetinaNet normalises by a count), not by the sum of the alpha weights.
    """
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    if gamma < 0:
        raise ConfigError(f"softmax_focal_loss: gamma must be >= 0 (0 gives cross-entropy); got {gamma}")
    valid, safe = _valid_and_safe(logits, target, ignore_index, "softmax_focal_loss")
    if logits.shape[1] == 1:
        x = logits[:, 0]
        logp_t = -F.softplus(torch.where(safe == 1, -x, x))  # ln sigmoid(+-x), stable
    else:
        logp_t = torch.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = -logp_t
    if gamma:  # 0 ** 0 would have a NaN gradient where p_t == 1
        loss = loss * (-torch.expm1(logp_t)).clamp_min(0) ** gamma
    if alpha is not None:
        loss = loss * _alpha_t(alpha, safe, logits.shape[1], logits.dtype)
    loss = loss * valid
    if reduction == "mean":
        return loss.sum() / valid.sum().clamp_min(1)
    return reduce_loss(loss, reduction)


class DiceLoss(nn.Module):
    """Soft Dice loss as a module, see dice_loss."""

    def __init__(self, ignore_index: int | None = None, smooth: float = 1.0, per_image: bool = False):
        super().__init__()
        self.ignore_index, self.smooth, self.per_image = ignore_index, smooth, per_image

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return dice_loss(logits, target, self.ignore_index, self.smooth, per_image=self.per_image)


class SoftIoULoss(DiceLoss):
    """Soft IoU (Jaccard) loss as a module, see soft_iou_loss."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_iou_loss(logits, target, self.ignore_index, self.smooth, per_image=self.per_image)


class SoftmaxFocalLoss(nn.Module):
    """Softmax focal loss as a module, see softmax_focal_loss (the binary one on sigmoids: losses.FocalLoss)."""

    def __init__(self, gamma: float = 2.0, alpha: float | Tensor | None = None, ignore_index: int | None = None,
                 reduction: str = "mean"):
        super().__init__()
        self.gamma, self.ignore_index, self.reduction = gamma, ignore_index, reduction
        if isinstance(alpha, Tensor):
            self.register_buffer("alpha", alpha)
        else:
            self.alpha = alpha

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return softmax_focal_loss(logits, target, self.gamma, self.alpha, self.ignore_index, self.reduction)
