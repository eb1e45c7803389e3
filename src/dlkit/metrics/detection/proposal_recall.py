"""Proposal recall: the fraction of ground-truth boxes that some of the first N proposals overlaps with IoU >= a
threshold, as a function of N (Notes: 002 §4.3.2 "region proposal algorithms should have a high recall"; the
recall-vs-number-of-proposals curves of Uijlings et al. 2013 and Hosang et al. 2015)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ...errors import ConfigError
from ...ops.boxes import box_iou

DEFAULT_COUNTS = (10, 50, 100, 200, 500, 1000, 2000)


def best_overlaps(proposals: Tensor, gt_boxes: Tensor) -> Tensor:
    """[G, P] float64: entry (g, n) is the best IoU of ground-truth box g with proposals 0..n (the running maximum
    along the ranked proposals). Boxes are xyxy."""
    g, p = len(gt_boxes), len(proposals)
    if g == 0 or p == 0:
        return torch.zeros(g, p, dtype=torch.float64)
    iou = box_iou(gt_boxes.double(), proposals.double())
    return torch.cummax(iou, dim=1).values


def proposal_recall(proposals: Sequence[Tensor], gt_boxes: Sequence[Tensor], counts: Sequence[int] = DEFAULT_COUNTS,
                    iou: float = 0.5) -> dict[int, float]:
    """Recall of the ground-truth boxes by the first N ranked proposals, for each N in `counts`: {N: recall}.

    proposals[i]: [P_i, 4] xyxy of image i, best first; gt_boxes[i]: [G_i, 4] xyxy. A ground-truth box is recalled
    at N when one of its image's first N proposals has IoU >= `iou` with it (an image with fewer than N proposals
    uses all of them). Recall = recalled boxes / all ground-truth boxes over all images (0 when there are none)."""
    if len(proposals) != len(gt_boxes):
        raise ConfigError(f"one proposal set per image: got {len(proposals)} proposal sets and {len(gt_boxes)} "
                          f"ground-truth sets")
    counts = tuple(int(c) for c in counts)
    if any(c < 1 for c in counts):
        raise ConfigError(f"counts must be positive numbers of proposals; got {counts}")
    if not 0.0 <= iou <= 1.0:
        raise ConfigError(f"iou must be in [0, 1]; got {iou}")
    hits = dict.fromkeys(counts, 0)
    total = 0
    for props, gts in zip(proposals, gt_boxes):
        props = torch.as_tensor(props).reshape(-1, 4)
        gts = torch.as_tensor(gts).reshape(-1, 4)
        total += len(gts)
        if len(gts) == 0 or len(props) == 0:
            continue
        best = best_overlaps(props, gts)
        for c in counts:
            hits[c] += int((best[:, min(c, len(props)) - 1] >= iou).sum())
    return {c: hits[c] / total if total else 0.0 for c in counts}
