"""The SSD (MultiBox) loss with hard negative mining (Notes: 002 §4.3.4 "Hard negative mining", class unbalance).

A one-stage detector scores thousands of default boxes per image and only a few of them cover an object, so the
sum of the cross-entropy over all of them is dominated by easy background boxes. Hard negative mining sorts the
negative boxes of each image by their classification loss and keeps only the hardest ones: SSD keeps at most
`neg_pos_ratio` (3) negatives per positive box of the same image. The notes also suppress near-duplicate negatives
with NMS before taking the top ones (`nms_thresh`, off by default as in SSD). With C object classes plus the
background class 0, per image i:

    L = ( sum_{j in Pos} CE(s_j, y_j) + sum_{j in Neg_hard} CE(s_j, 0) + sum_{j in Pos} smoothL1(t^_j - t_j) ) / N

where N is the number of positive boxes in the whole batch (the loss is 0 when there are none), smooth L1 has
beta = 1 and is summed over the 4 coordinates. Boxes labelled -1 (ignored by the matcher) count as neither.
This is SSD's loss (Liu et al., 2016) and torchvision's `SSD.compute_loss`, except that the number of negatives
is capped at the negatives available (torchvision can then count a positive again as a negative).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from ..ops.nms import nms
from .classification import cross_entropy
from .regression import smooth_l1_loss


def hard_negative_mask(loss: Tensor, labels: Tensor, neg_pos_ratio: float = 3.0, boxes: Tensor | None = None,
                       nms_thresh: float | None = None) -> Tensor:
    """bool [B, A]: per image, the `neg_pos_ratio` x (number of positives) negatives of largest `loss` [B, A].

    Notes: 002 §4.3.4. `labels` [B, A] are > 0 for positives, 0 for negatives, < 0 for ignored boxes. With
    `nms_thresh`, the negatives are first thinned by non-maximum suppression of their `boxes` [B, A, 4] (xyxy)
    ranked by loss, as the notes describe, and the hardest of the survivors are kept. An image without positives
    keeps no negative (SSD's rule: the count follows the positives).
    """
    if loss.dim() != 2 or labels.shape != loss.shape:
        raise ConfigError(f"hard_negative_mask takes loss [B, A] and labels [B, A]; got {tuple(loss.shape)} and "
                          f"{tuple(labels.shape)}")
    if neg_pos_ratio < 0:
        raise ConfigError(f"neg_pos_ratio must be >= 0 (SSD uses 3); got {neg_pos_ratio}")
    if nms_thresh is not None and (boxes is None or boxes.shape != (*loss.shape, 4)):
        got = None if boxes is None else tuple(boxes.shape)
        raise ConfigError(f"hard negative mining with NMS needs boxes [B, A, 4] = {(*loss.shape, 4)}; got {got}")
    negative = labels == 0
    if nms_thresh is not None:  # the notes' variant: a negative that overlaps a harder negative is dropped
        survivors = torch.zeros_like(negative)
        for i in range(len(loss)):
            idx = torch.nonzero(negative[i]).squeeze(1)
            keep = nms(boxes[i, idx].float(), loss[i, idx].detach().float(), nms_thresh)
            survivors[i, idx[keep]] = True
        negative = survivors
    n_pos = (labels > 0).sum(dim=1, keepdim=True)
    k = torch.minimum((neg_pos_ratio * n_pos).floor().long(), negative.sum(dim=1, keepdim=True))
    ranked = torch.where(negative, loss.detach(), torch.full_like(loss, -float("inf")))
    order = ranked.argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(loss.shape[1], device=loss.device).expand_as(order))
    return negative & (rank < k)


def multibox_loss(cls_logits: Tensor, box_deltas: Tensor, labels: Tensor, box_targets: Tensor,
                  neg_pos_ratio: float = 3.0, boxes: Tensor | None = None,
                  nms_thresh: float | None = None) -> dict[str, Tensor]:
    """SSD's loss {loss_classifier, loss_box_reg}, both divided by the number of positive boxes of the batch.

    Notes: 002 §4.3.4. `cls_logits` [B, A, C + 1] (channel 0 is the background), `box_deltas` and `box_targets`
    [B, A, 4] (the encoded corrections; targets only read at positives), `labels` [B, A] in 1..C for positives,
    0 for background, -1 for ignored boxes. `neg_pos_ratio`, `boxes`, `nms_thresh`: see `hard_negative_mask`.
    """
    b, a = labels.shape
    if cls_logits.dim() != 3 or cls_logits.shape[:2] != (b, a) or box_deltas.shape != (b, a, 4) \
            or box_targets.shape != (b, a, 4):
        raise ConfigError(f"multibox_loss takes cls_logits [B, A, C+1], box_deltas [B, A, 4], labels [B, A], "
                          f"box_targets [B, A, 4]; got {tuple(cls_logits.shape)}, {tuple(box_deltas.shape)}, "
                          f"{tuple(labels.shape)}, {tuple(box_targets.shape)}")
    if labels.max() >= cls_logits.shape[-1]:
        raise ConfigError(f"labels must be < the {cls_logits.shape[-1]} classes of cls_logits (0 = background); got "
                          f"{int(labels.max())}")
    ce = cross_entropy(cls_logits.reshape(b * a, -1), labels.clamp(min=0).reshape(-1), reduction="none").view(b, a)
    positive = labels > 0
    hard = hard_negative_mask(ce, labels, neg_pos_ratio, boxes, nms_thresh)
    n = positive.sum().clamp(min=1)
    box = smooth_l1_loss(box_deltas[positive], box_targets[positive].to(box_deltas.dtype), reduction="sum")
    return {"loss_classifier": (ce[positive].sum() + ce[hard].sum()) / n, "loss_box_reg": box / n}
