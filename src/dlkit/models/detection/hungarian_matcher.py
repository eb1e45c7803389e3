"""DETR's bipartite matching of predictions to ground-truth objects (Notes: 002 §4.3.6).

sigma* = argmin_sigma sum_i L_match(y^_sigma(i), y_i) over the one-to-one maps of the M objects into the N >= M
predictions, with

    L_match(y^_q, y_o) = -lambda_class p^_q[c_o] + lambda_L1 |b^_q - b_o|_1 + lambda_giou (1 - GIoU(b^_q, b_o))

where p^_q is the softmax over the C classes and the no-object class (the notes' probability, not its logarithm),
and boxes are normalised (cx, cy, w, h) in [0, 1] (GIoU on their corners). The notes write the box term as "Huber +
IoU"; DETR's paper uses L1 + GIoU with lambda_L1 = 5, lambda_giou = 2, lambda_class = 1, the defaults here. The
padding of the objects with no-object entries costs 0 for every prediction, so only the M real objects are matched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.assignment import linear_sum_assignment
from ...ops.boxes import box_convert, generalized_box_iou


class HungarianMatcher(nn.Module):
    """Per image, (prediction indices, object indices) of the minimum-cost matching. Notes: 002 §4.3.6."""

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        if min(cost_class, cost_bbox, cost_giou) < 0 or cost_class == cost_bbox == cost_giou == 0:
            raise ConfigError(f"matching cost weights must be >= 0 and not all 0; got class {cost_class}, L1 "
                              f"{cost_bbox}, GIoU {cost_giou}")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    def cost_matrix(self, logits: Tensor, boxes: Tensor, labels: Tensor, target_boxes: Tensor) -> Tensor:
        """[N, M] matching costs of one image: logits [N, C + 1] (the last is no-object), boxes [N, 4] and
        target_boxes [M, 4] normalised cxcywh, labels [M] in 0..C-1."""
        prob = logits.softmax(-1)
        giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy"))
        return (-self.cost_class * prob[:, labels] + self.cost_bbox * torch.cdist(boxes, target_boxes, p=1)
                + self.cost_giou * (1 - giou))

    @torch.no_grad()
    def forward(self, logits: Tensor, boxes: Tensor,
                targets: Sequence[Mapping[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """logits [B, N, C + 1], boxes [B, N, 4] (normalised cxcywh); targets: per image {labels [M] in 0..C-1,
        boxes [M, 4] normalised cxcywh}. Returns per image (prediction indices, object indices), sorted by
        prediction."""
        if logits.dim() != 3 or boxes.shape[:2] != logits.shape[:2] or boxes.shape[-1] != 4:
            raise ConfigError(f"the matcher takes logits [B, N, C + 1] and boxes [B, N, 4]; got "
                              f"{tuple(logits.shape)} and {tuple(boxes.shape)}")
        if len(targets) != len(logits):
            raise ConfigError(f"one target per image: {len(logits)} images, {len(targets)} targets")
        out = []
        for lg, bx, t in zip(logits, boxes, targets):
            labels = t["labels"].long()
            if len(labels) and (labels.min() < 0 or labels.max() >= lg.shape[-1] - 1):
                raise ConfigError(f"labels must be in 0..{lg.shape[-1] - 2} (the last logit is no-object); got "
                                  f"{labels.tolist()}")
            if len(labels) > len(lg):
                raise ConfigError(f"an image has {len(labels)} objects but the model makes {len(lg)} predictions; "
                                  f"use more object queries")
            if len(labels) == 0:
                empty = torch.zeros(0, dtype=torch.long, device=lg.device)
                out.append((empty, empty))
                continue
            rows, cols = linear_sum_assignment(self.cost_matrix(lg, bx, labels, t["boxes"].to(bx.dtype)))
            out.append((rows.to(lg.device), cols.to(lg.device)))
        return out
