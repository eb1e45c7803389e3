"""CenterNet's loss: the penalty-reduced pixel-wise focal loss on the heat map, and the size and offset regressions
(Zhou et al. 2019, "Objects as Points"; Notes: 002 §4.3.5).

With Ŷ = sigmoid(logits) the predicted heat map [B, C, h, w] and Y the target (Gaussian splats, exactly 1 at each
object's centre pixel), summed over every pixel and class and divided by N, the number of objects:

    L_k = -(1/N) sum_{xyc} { (1 - Ŷ)^gamma ln Ŷ                   if Y = 1
                           { (1 - Y)^beta Ŷ^gamma ln(1 - Ŷ)      otherwise

with gamma = 2 and beta = 4 (the notes write the paper's alpha as gamma): the factor (1 - Y)^beta lowers the penalty
for firing near a centre. ln Ŷ and ln(1 - Ŷ) are computed from the logits (log-sigmoid), so no clamping is needed.
The size and offset heads are read at the N centre pixels only:

    L_size = (1/N) sum_k |Ŝ_k - s_k|_1,     L_off = (1/N) sum_k |Ô_k - (p_k / R - p̃_k)|_1
    L = L_k + 0.1 L_size + 1 L_off

The notes use the Huber loss for the box terms; the paper uses L1, which is the default here (`box_loss="huber"`
gives the notes' variant). The paper's |.|_1 sums both coordinates of a pair (the authors' code averages them,
half of it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn.activations import sigmoid
from .regression import check_same_shape, huber_loss

BOX_LOSSES = ("l1", "huber")


def centernet_focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0, beta: float = 4.0,
                         normalizer: float | Tensor | None = None) -> Tensor:
    """The penalty-reduced pixel-wise focal loss of heat-map `logits` against `target` in [0, 1], summed and divided
    by `normalizer` (default: the number of pixels where target == 1, at least 1). Notes: 002 §4.3.5."""
    check_same_shape(logits, target, "centernet_focal_loss")
    if gamma < 0 or beta < 0:
        raise ConfigError(f"centernet_focal_loss needs gamma >= 0 and beta >= 0; got gamma={gamma}, beta={beta}")
    positive = target == 1
    p = sigmoid(logits)
    pos = (1 - p) ** gamma * F.logsigmoid(logits)
    neg = (1 - target) ** beta * p ** gamma * F.logsigmoid(-logits)
    total = -torch.where(positive, pos, neg).sum()
    if normalizer is None:
        normalizer = positive.sum()
    return total / torch.as_tensor(normalizer, dtype=total.dtype, device=total.device).clamp(min=1)


def gather_at(maps: Tensor, centres: Tensor) -> Tensor:
    """The vectors of `maps` [B, D, h, w] at the pixels `centres` [N, 3] (batch, y, x), as [N, D]."""
    if centres.dim() != 2 or centres.shape[1] != 3:
        raise ConfigError(f"centres must be [N, 3] (batch index, y, x); got shape {tuple(centres.shape)}")
    b, y, x = centres.long().unbind(1)
    return maps[b, :, y, x]


class CenterNetLoss(nn.Module):
    """CenterNet's training loss (Notes: 002 §4.3.5): {loss_heatmap, loss_size, loss_offset}, each already weighted
    (1, `size_weight` 0.1, `offset_weight` 1) and divided by the number of objects N.

    forward(heatmap logits [B, C, h, w], size [B, 2, h, w], offset [B, 2, h, w], target heatmap [B, C, h, w],
    centres [N, 3] (batch, y, x) long, size targets [N, 2], offset targets [N, 2]). `box_loss` 'l1' (the paper) or
    'huber' (the notes, with `huber_delta`).
    """

    def __init__(self, gamma: float = 2.0, beta: float = 4.0, size_weight: float = 0.1, offset_weight: float = 1.0,
                 box_loss: str = "l1", huber_delta: float = 1.0):
        super().__init__()
        if box_loss not in BOX_LOSSES:
            raise ConfigError(f"box_loss must be one of {BOX_LOSSES} (l1: the paper, huber: the notes); got "
                              f"{box_loss!r}")
        self.gamma, self.beta, self.size_weight, self.offset_weight = gamma, beta, size_weight, offset_weight
        self.box_loss, self.huber_delta = box_loss, huber_delta

    def regression(self, pred: Tensor, target: Tensor) -> Tensor:
        """Summed L1 (or Huber) distance of `pred` [N, 2] to `target` [N, 2]."""
        check_same_shape(pred, target, f"CenterNet {self.box_loss} box loss")
        if self.box_loss == "huber":
            return huber_loss(pred, target, self.huber_delta, reduction="sum")
        return (pred - target).abs().sum()

    def forward(self, heatmap: Tensor, size: Tensor, offset: Tensor, target_heatmap: Tensor, centres: Tensor,
                size_target: Tensor, offset_target: Tensor) -> dict[str, Tensor]:
        n = max(len(centres), 1)
        heat = centernet_focal_loss(heatmap, target_heatmap, self.gamma, self.beta, normalizer=n)
        size_loss = self.regression(gather_at(size, centres), size_target.to(size.dtype)) / n
        offset_loss = self.regression(gather_at(offset, centres), offset_target.to(offset.dtype)) / n
        return {"loss_heatmap": heat, "loss_size": self.size_weight * size_loss,
                "loss_offset": self.offset_weight * offset_loss}

    def extra_repr(self) -> str:
        return (f"gamma={self.gamma}, beta={self.beta}, size_weight={self.size_weight}, "
                f"offset_weight={self.offset_weight}, box_loss={self.box_loss!r}")
