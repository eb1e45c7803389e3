"""Mask classification: N (class, binary mask) pairs per image, matched to the ground-truth segments one-to-one
(Notes: 002 §5.3.2, MaskFormer; §5.3.3, Mask2Former).

A model predicts, per query q, class logits [K + 1] (logit c for class index c = label - 1, the last "no object")
and mask logits m_q over the pixels. Training (MaskFormer, Cheng et al. 2021): per image the queries are matched to
the M ground-truth segments {labels 1..K, binary masks} by the Hungarian method (`ops.assignment`) on the cost

    C[q, j] = -w_class p_q(c_j) + w_mask focal(m_q, g_j) + w_dice dice(m_q, g_j)

with focal the sigmoid focal loss (alpha 0.25, gamma 2) averaged over the pixels, dice = 1 - (2 sum s g + 1) /
(sum s + sum g + 1), s = sigmoid(m). Mask2Former scores masks by the binary cross entropy instead (focal with gamma 0
and no alpha) on sampled points. The loss of a decoder layer is then the class cross entropy of every query (the
matched segment's class, no object for the others, weighed `eos_coef` = 0.1), plus the focal (BCE) and dice losses of
the matched pairs, summed and divided by the number of ground-truth masks of the batch.

Inference (the notes' rules): semantic, score_k(u, v) = sum_q p_q(k) sigmoid(m_q(u, v)) and the argmax over the K
classes; panoptic, each query takes its best class c_q = argmax p_q (queries whose best is no object, or whose
probability is below a threshold, are dropped), each pixel goes to the query of highest p_q(c_q) sigmoid(m_q), and a
query keeps the pixels it wins where its own mask is > 0.5 if they are a large enough part of its mask. Outputs use
class indices 0..K-1 (label - 1): the semantic map, and the panoptic segments' "category".
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...losses.focal import sigmoid_focal_loss
from ...ops.assignment import linear_sum_assignment


def pairwise_dice_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """[N, M] dice costs 1 - (2 s.g + 1) / (sum s + sum g + 1) of mask logits [N, P] against binary masks [M, P]
    (s = sigmoid(logits), P pixels or points). Notes: 002 §5.3.2."""
    s, g = logits.sigmoid(), targets.to(logits.dtype)
    return 1 - (2 * s @ g.T + 1) / (s.sum(-1)[:, None] + g.sum(-1)[None, :] + 1)


def pairwise_focal_cost(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """[N, M] mean over the P pixels of `sigmoid_focal_loss(logits[q], targets[j])`, mask logits [N, P], binary
    masks [M, P]: the per-pixel loss of a positive and of a negative pixel, combined by two matrix products.
    gamma = 0 with alpha < 0 is the binary cross entropy (Mask2Former). Notes: 002 §5.3.2."""
    g = targets.to(logits.dtype)
    pos = sigmoid_focal_loss(logits, torch.ones_like(logits), alpha, gamma)
    neg = sigmoid_focal_loss(logits, torch.zeros_like(logits), alpha, gamma)
    return (pos @ g.T + neg @ (1 - g).T) / logits.shape[-1]


def check_mask_targets(targets: Sequence[Mapping[str, Tensor]], batch: int, num_classes: int, who: str) -> None:
    """Refuse targets that are not one {"masks": [M, H, W], "labels": [M] in 1..K} per image."""
    if targets is None or len(targets) != batch:
        raise ConfigError(f"{who} trains on one target per image, {{'masks': [M, H, W] bool, 'labels': [M] in "
                          f"1..{num_classes}}}; got {None if targets is None else len(targets)} for {batch} images")
    for t in targets:
        if not isinstance(t, Mapping) or "masks" not in t or "labels" not in t:
            raise ConfigError(f"{who}: every target needs 'masks' [M, H, W] and 'labels' [M]; got "
                              f"{sorted(t) if isinstance(t, Mapping) else type(t).__name__}")
        masks, labels = t["masks"], t["labels"]
        if masks.dim() != 3 or labels.dim() != 1 or len(masks) != len(labels):
            raise ConfigError(f"{who}: masks [M, H, W] and labels [M] of one M; got {tuple(masks.shape)} and "
                              f"{tuple(labels.shape)}")
        if len(labels) and (labels.min() < 1 or labels.max() > num_classes):
            raise ConfigError(f"{who}: labels must be in 1..{num_classes} (class index + 1); got "
                              f"{labels.tolist()}")


def semantic_targets(label_map: Tensor, num_classes: int, ignore_index: int | None = 255) -> dict[str, Tensor]:
    """A class map [H, W] (0..K-1, `ignore_index` void) as mask-classification targets: one mask per class present,
    labels = class + 1. Void pixels belong to no mask. Notes: 002 §5.3.2."""
    classes = [int(c) for c in label_map.unique().tolist() if c != ignore_index]
    if any(c < 0 or c >= num_classes for c in classes):
        raise ConfigError(f"semantic_targets: classes must be in 0..{num_classes - 1} (or ignore_index="
                          f"{ignore_index}); got {classes}")
    masks = torch.stack([label_map == c for c in classes]) if classes else label_map.new_zeros(
        (0, *label_map.shape), dtype=torch.bool)
    return {"masks": masks, "labels": torch.tensor(classes, dtype=torch.long, device=label_map.device) + 1}


class MaskHungarianMatcher(nn.Module):
    """Per image, (query indices, segment indices) of the minimum-cost matching under -w_class p(c) + w_mask focal
    + w_dice dice (module docstring). `mask_alpha`, `mask_gamma` select the mask cost: (0.25, 2) MaskFormer's
    focal, (-1, 0) Mask2Former's BCE. Notes: 002 §5.3.2."""

    def __init__(self, cost_class: float = 1.0, cost_mask: float = 20.0, cost_dice: float = 1.0,
                 mask_alpha: float = 0.25, mask_gamma: float = 2.0):
        super().__init__()
        if min(cost_class, cost_mask, cost_dice) < 0 or cost_class == cost_mask == cost_dice == 0:
            raise ConfigError(f"matching cost weights must be >= 0 and not all 0; got class {cost_class}, mask "
                              f"{cost_mask}, dice {cost_dice}")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.mask_alpha, self.mask_gamma = mask_alpha, mask_gamma

    def cost_matrix(self, logits: Tensor, masks: Tensor, labels: Tensor, target_masks: Tensor) -> Tensor:
        """[N, M] costs of one image: class logits [N, K + 1], mask logits [N, P], labels [M] in 0..K-1 (class
        indices), binary masks [M, P] on the same P pixels (or points)."""
        prob = logits.softmax(-1)
        return (-self.cost_class * prob[:, labels]
                + self.cost_mask * pairwise_focal_cost(masks, target_masks, self.mask_alpha, self.mask_gamma)
                + self.cost_dice * pairwise_dice_cost(masks, target_masks))

    @torch.no_grad()
    def forward(self, logits: Tensor, masks: Sequence[Tensor], labels: Sequence[Tensor],
                target_masks: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Per image b: logits[b] [N, K + 1], masks[b] [N, P_b], labels[b] [M_b] in 0..K-1, target_masks[b]
        [M_b, P_b]. Returns (query indices, segment indices) sorted by query."""
        out = []
        for lg, m, lab, tm in zip(logits, masks, labels, target_masks, strict=True):
            if len(lab) > len(lg):
                raise ConfigError(f"an image has {len(lab)} segments but the model has {len(lg)} queries; use more "
                                  f"queries")
            if len(lab) == 0:
                empty = torch.zeros(0, dtype=torch.long, device=lg.device)
                out.append((empty, empty))
                continue
            rows, cols = linear_sum_assignment(self.cost_matrix(lg.float(), m.float(), lab, tm.float()))
            out.append((rows.to(lg.device), cols.to(lg.device)))
        return out


def set_class_loss(logits: Tensor, indices: Sequence[tuple[Tensor, Tensor]], labels: Sequence[Tensor],
                   eos_coef: float) -> Tensor:
    """The weighted cross entropy of every query's class: the matched segment's class index, no object (the last
    logit, weight `eos_coef`) for the unmatched ones; the weighted mean over the B N queries (DETR's and
    MaskFormer's class term). logits [B, N, K + 1]. Notes: 002 §5.3.2."""
    no_object = logits.shape[-1] - 1
    classes = torch.full(logits.shape[:2], no_object, dtype=torch.long, device=logits.device)
    for b, ((rows, cols), lab) in enumerate(zip(indices, labels)):
        classes[b, rows] = lab[cols]
    weight = torch.ones(no_object + 1, dtype=logits.dtype, device=logits.device)
    weight[no_object] = eos_coef
    return F.cross_entropy(logits.flatten(0, 1), classes.flatten(), weight=weight)


def mask_pair_losses(pred: Tensor, target: Tensor, num_masks: float, alpha: float = 0.25, gamma: float = 2.0
                     ) -> tuple[Tensor, Tensor]:
    """(focal, dice) losses of matched pairs, mask logits [n, P] against masks [n, P] in [0, 1]: per pair the focal
    loss averaged over the P pixels and the dice loss (smoothing 1), each summed over the pairs and divided by
    `num_masks`. alpha < 0, gamma 0: the BCE. Notes: 002 §5.3.2."""
    target = target.to(pred.dtype)
    if len(pred) == 0:
        zero = pred.sum() * 0
        return zero, zero
    focal = sigmoid_focal_loss(pred, target, alpha, gamma).mean(-1).sum() / num_masks
    s = pred.sigmoid()  # the dice of soft targets too (point-sampled masks), so not losses.segmentation.dice_loss
    dice = 1 - (2 * (s * target).sum(-1) + 1) / (s.sum(-1) + target.sum(-1) + 1)
    return focal, dice.sum() / num_masks


def semantic_inference(logits: Tensor, masks: Tensor) -> Tensor:
    """Per-class scores [B, K, H, W] = sum_q softmax(logits)_q[k] sigmoid(masks_q), the no-object column dropped;
    logits [B, N, K + 1], mask logits [B, N, H, W]. Their argmax over dim 1 is the semantic map (class indices
    0..K-1). Notes: 002 §5.3.2 (the [EXT] semantic inference)."""
    return torch.einsum("bnk,bnhw->bkhw", logits.softmax(-1)[..., :-1], masks.sigmoid())


@torch.no_grad()
def panoptic_inference(logits: Tensor, masks: Tensor, thing_classes: Container[int] = (),
                       score_threshold: float = 0.8, overlap_threshold: float = 0.8) -> tuple[Tensor, list[dict]]:
    """One image's panoptic segmentation `(id_map [H, W] int64, segments)` in the format of
    `dlkit.metrics.panoptic` (ids 1, 2, ..., 0 void). Notes: 002 §5.3.2 (MaskFormer inference).

    logits [N, K + 1], mask logits [N, H, W]. A query whose best class (over the K + 1) is no object, or whose
    probability p_q is <= `score_threshold`, is dropped; each pixel goes to the kept query of highest
    p_q sigmoid(m_q); a query keeps the pixels it wins where sigmoid(m_q) >= 0.5 (dropped if none), provided the
    pixels it wins are at least `overlap_threshold` of its own mask's area (sigmoid >= 0.5), as MaskFormer. The
    segments of one stuff class (not in `thing_classes`, class indices 0..K-1) are merged into one; things get one
    segment per query.
    Segments: {"id", "category" (class index), "iscrowd": 0, "isthing", "area", "score"}.
    """
    if logits.dim() != 2 or masks.dim() != 3 or len(logits) != len(masks):
        raise ConfigError(f"panoptic_inference takes one image: logits [N, K + 1] and masks [N, H, W]; got "
                          f"{tuple(logits.shape)} and {tuple(masks.shape)}")
    prob = logits.softmax(-1)
    scores, classes = prob.max(-1)
    keep = (classes != logits.shape[-1] - 1) & (scores > score_threshold)
    id_map = torch.zeros(masks.shape[-2:], dtype=torch.int64, device=masks.device)
    segments: list[dict] = []
    if not keep.any():
        return id_map, segments
    scores, classes, sig = scores[keep], classes[keep], masks[keep].sigmoid()
    winner = (scores[:, None, None] * sig).argmax(0)
    stuff_ids: dict[int, int] = {}
    for q in range(len(scores)):
        c = int(classes[q])
        own = sig[q] >= 0.5
        region = (winner == q) & own
        area, own_area = int(region.sum()), int(own.sum())
        if area == 0 or own_area == 0 or int((winner == q).sum()) / own_area < overlap_threshold:
            continue
        isthing = c in thing_classes
        if not isthing and c in stuff_ids:
            seg = segments[stuff_ids[c] - 1]
            seg["area"] += area
            seg["score"] = max(seg["score"], float(scores[q]))
            id_map[region] = stuff_ids[c]
            continue
        new_id = len(segments) + 1
        id_map[region] = new_id
        segments.append({"id": new_id, "category": c, "iscrowd": 0, "isthing": isthing, "area": area,
                         "score": float(scores[q])})
        if not isthing:
            stuff_ids[c] = new_id
    return id_map, segments
