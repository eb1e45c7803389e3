"""From a detector's dense scores to its final detections (Notes: 002 §4.1 NMS, §4.3.4; 000 §3.12.4).

A one-stage detector scores every anchor (or grid cell) for every class. Inference keeps the candidates that score
above a threshold, at most `topk` of them per feature level (`top_candidates`), decodes their boxes, and then
`finalize_detections` clips the boxes to the image, runs non-maximum suppression separately for each class (a box
only suppresses boxes of its own label) and keeps the best `max_detections`. This is the order torchvision's
RetinaNet and FCOS use, so their outputs can be compared box for box.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ...errors import ConfigError
from ...ops.boxes import clip_boxes_to_image
from ...ops.nms import batched_nms


def top_candidates(scores: Tensor, score_thresh: float, topk: int) -> tuple[Tensor, Tensor, Tensor]:
    """(anchor index [K], label [K] in 1..C, score [K]) of the best scores > `score_thresh` of `scores` [A, C]
    (probabilities; channel j is label j + 1), at most `topk` of them, sorted by score, highest first."""
    if scores.dim() != 2:
        raise ConfigError(f"top_candidates takes scores [anchors, classes]; got shape {tuple(scores.shape)}")
    if topk < 1:
        raise ConfigError(f"topk must be >= 1; got {topk}")
    flat = scores.flatten()
    kept = torch.nonzero(flat > score_thresh).squeeze(1)
    values, order = flat[kept].topk(min(topk, kept.numel()))
    index = kept[order]
    classes = scores.shape[1]
    return torch.div(index, classes, rounding_mode="floor"), index % classes + 1, values


def finalize_detections(boxes: Tensor, scores: Tensor, labels: Tensor, image_size: Sequence[int],
                        nms_thresh: float, max_detections: int) -> dict[str, Tensor]:
    """{boxes, scores, labels} of one image: `boxes` [N, 4] xyxy clipped to `image_size` (H, W), non-maximum
    suppression per label at IoU > `nms_thresh`, the first `max_detections` by decreasing score."""
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or scores.shape != (len(boxes),) or labels.shape != (len(boxes),):
        raise ConfigError(f"finalize_detections takes boxes [N, 4], scores [N], labels [N]; got "
                          f"{tuple(boxes.shape)}, {tuple(scores.shape)}, {tuple(labels.shape)}")
    if max_detections < 1:
        raise ConfigError(f"max_detections must be >= 1; got {max_detections}")
    boxes = clip_boxes_to_image(boxes, tuple(image_size))
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
