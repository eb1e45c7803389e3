"""The (alpha-balanced) binary focal loss on logits (Notes: 002 §4.3.4, RetinaNet).

With p = sigmoid(x) the predicted probability of the positive class and y the label, `p_t = p` if y = 1 else
`1 - p`, and `alpha_t = alpha` if y = 1 else `1 - alpha`:

    BFL_gamma(p_t) = -(1 - p_t)^gamma ln(p_t),       WBFL_gamma(p_t) = -alpha_t (1 - p_t)^gamma ln(p_t)

gamma = 0 gives the binary cross-entropy; the factor (1 - p_t)^gamma down-weights the well-classified examples (with
gamma = 2: 1/100 at p_t = 0.9, 0.81 at p_t = 0.1). RetinaNet uses alpha = 0.25, gamma = 2. Soft targets y in [0, 1]
are taken as torchvision does: `p_t = p y + (1 - p)(1 - y)`, `alpha_t = alpha y + (1 - alpha)(1 - y)`, and
-ln(p_t) is the binary cross-entropy with logits (stable for any x). `alpha < 0` disables the class weights.
Equals `torchvision.ops.sigmoid_focal_loss`, whose default reduction is also 'none'.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from ..nn.activations import sigmoid
from .classification import binary_cross_entropy_with_logits
from .regression import REDUCTIONS, check_same_shape, reduce_loss


def sigmoid_focal_loss(inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "none") -> Tensor:
    """Focal loss of logits `inputs` against binary (or soft) `targets` of the same shape (Notes: 002 §4.3.4)."""
    check_same_shape(inputs, targets, "sigmoid_focal_loss")
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    if gamma < 0:
        raise ConfigError(f"gamma must be >= 0 (gamma = 0 is the cross-entropy); got {gamma}")
    p = sigmoid(inputs)
    ce = binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return reduce_loss(loss, reduction)


class FocalLoss(nn.Module):
    """Module form of `sigmoid_focal_loss` (default reduction 'mean', like the other dlkit loss modules)."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ConfigError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
        self.alpha, self.gamma, self.reduction = alpha, gamma, reduction

    def forward(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return sigmoid_focal_loss(inputs, targets, self.alpha, self.gamma, self.reduction)
