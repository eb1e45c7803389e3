"""Non-maximum suppression, vectorised (Notes: 002 §4.2.4, 000 §3.12.3, 003 §6).

Greedy NMS, as the notes state it: sort the boxes by score (descending); until no box is left unchecked, keep the
highest-scoring one and remove every box whose IoU with it is strictly greater than the threshold. The result is
the unique fixed point of `keep[j] = not any(keep[i] and IoU(i, j) > t for i before j)`.

No Python loop runs per box. The boxes, sorted once, are resolved in blocks of `block` boxes: a block first drops
the boxes that a box kept in an earlier block suppresses (one IoU matrix, kept x block), then settles itself in
rounds: a box that no still-undecided earlier box of the block can suppress is certainly kept, and whatever it
suppresses is certainly removed. Each round settles at least the first undecided box; in practice a block takes a
handful of rounds. Memory is O(K x block) for K kept boxes, never the whole N x N matrix.

The result equals `torchvision.ops.nms` exactly: the same stable descending sort (equal scores keep their input
order), the same IoU arithmetic, and the threshold compared as torchvision's kernel does (a float32 IoU against the
threshold in float64). `batched_nms` suppresses only within a class, by masking the IoU of boxes of different
classes (no coordinate-offset trick, whose shifted coordinates can change an IoU by a rounding step). Boxes must
have x1 <= x2 and y1 <= y2 (zero-area boxes are fine and suppress nothing); an inverted box counts as empty here,
where torchvision's kernel would give it a negative area.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .boxes import _upcast, box_inter_union, check_boxes

PER_CLASS_COST = 20_000  # one class's iteration of batched_nms costs about as much as this many masked IoU pairs


def _check(boxes: Tensor, scores: Tensor, idxs: Tensor | None = None) -> None:
    check_boxes(boxes)
    if not isinstance(scores, Tensor) or scores.shape != (len(boxes),):
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ConfigError(f"scores must be a tensor [N] with N = {len(boxes)} (one per box); got {got}")
    if idxs is not None and (not isinstance(idxs, Tensor) or idxs.shape != (len(boxes),)):
        got = tuple(idxs.shape) if isinstance(idxs, Tensor) else type(idxs).__name__
        raise ConfigError(f"idxs (the class of each box) must be a tensor [N] with N = {len(boxes)}; got {got}")


def _strict_threshold(iou_threshold: float, dtype: torch.dtype) -> Tensor:
    """A threshold t' of `dtype` such that `iou > t'` in `dtype` equals `float64(iou) > iou_threshold`."""
    exact = torch.tensor(float(iou_threshold), dtype=torch.float64)
    rounded = exact.to(dtype)
    if rounded.double() > exact:  # rounded up: the largest value below it still fails `> threshold`
        rounded = torch.nextafter(rounded, rounded.new_tensor(float("-inf")))
    return rounded


def _suppresses(a: Tensor, b: Tensor, cls_a: Tensor | None, cls_b: Tensor | None, t: Tensor) -> Tensor:
    """[len(a), len(b)] bool: box i of a would remove box j of b (IoU > t, same class when classes are given).

    Two empty boxes give 0 / 0 = NaN here, which removes nothing, as in torchvision's kernel."""
    inter, union = box_inter_union(a, b)
    out = inter / union > t
    if cls_a is not None:
        out &= cls_a[:, None] == cls_b[None, :]
    return out


def _settle_block(sup: Tensor, alive: Tensor) -> Tensor:
    """Greedy keep mask of one score-sorted block, given `sup` [B, B] (strictly upper triangular) and the boxes
    still `alive` after earlier blocks. Loops over rounds, each settling at least one box."""
    undecided, kept = alive.clone(), torch.zeros_like(alive)
    while bool(undecided.any()):
        blocked = (sup & undecided[:, None]).any(0)
        certain = undecided & ~blocked
        kept |= certain
        undecided &= ~certain & ~(sup & certain[:, None]).any(0)
    return kept


def _greedy(boxes: Tensor, scores: Tensor, idxs: Tensor | None, iou_threshold: float, block: int) -> Tensor:
    if block < 1:
        raise ConfigError(f"block must be a positive number of boxes; got {block}")
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = _upcast(boxes)[order]
    cls = idxs[order] if idxs is not None else None
    t = _strict_threshold(iou_threshold, boxes.dtype).to(boxes.device)
    keep = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    kept_boxes, kept_cls = boxes[:0], cls[:0] if cls is not None else None
    for start in range(0, len(boxes), block):
        stop = min(start + block, len(boxes))
        blk, blk_cls = boxes[start:stop], cls[start:stop] if cls is not None else None
        alive = ~_suppresses(kept_boxes, blk, kept_cls, blk_cls, t).any(0)
        sup = _suppresses(blk, blk, blk_cls, blk_cls, t).triu(1)
        kept = _settle_block(sup, alive)
        keep[start:stop] = kept
        kept_boxes = torch.cat([kept_boxes, blk[kept]])
        if cls is not None:
            kept_cls = torch.cat([kept_cls, blk_cls[kept]])
    return order[keep]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, block: int = 256) -> Tensor:
    """Indices (int64) of the xyxy boxes [N, 4] that greedy NMS keeps, by decreasing score (Notes: 002 §4.2.4).

    A box is removed when its IoU with a kept, higher-scoring box is strictly greater than `iou_threshold`; equal
    scores are taken in input order. Equals `torchvision.ops.nms`. `block` trades memory for rounds (see module).
    """
    _check(boxes, scores)
    return _greedy(boxes, scores, None, iou_threshold, block)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, block: int = 256) -> Tensor:
    """NMS within each class `idxs` [N] (boxes of different classes never suppress each other; Notes: 000 §3.12.3).

    Indices (int64) of the kept boxes by decreasing score, equal scores in input order. Equals
    `torchvision.ops.batched_nms` (up to the order of kept boxes with equal scores, which torchvision leaves to an
    unstable sort). Many boxes of few classes are resolved class by class (C small NMS problems of N/C boxes
    instead of one of N with the IoU of other classes masked: an SSD's 20 x 400 candidates take 10x less time),
    when C x PER_CLASS_COST < N^2 (a Python iteration per class against ~N^2 / 2 IoU pairs).
    """
    _check(boxes, scores, idxs)
    if len(boxes) > block:  # one block resolves everything at once: nothing to split
        classes = idxs.unique()
        if 1 < len(classes) and len(classes) * PER_CLASS_COST < len(boxes) ** 2:
            keep = torch.cat([members[_greedy(boxes[members], scores[members], None, iou_threshold, block)]
                              for members in (torch.nonzero(idxs == c).flatten() for c in classes)])
            keep = keep.sort().values  # input order, then a stable sort by score: equal scores stay in input order
            return keep[torch.sort(scores[keep], descending=True, stable=True).indices]
    return _greedy(boxes, scores, idxs, iou_threshold, block)
