"""The training targets of the detection contract, checked once for every detector (Notes: 002 §4; DESIGN.md
"Tasks": one {boxes [M, 4] xyxy in pixels, labels [M] in 1..C} per image, 0 being the background)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from ...errors import ConfigError


def check_targets(targets: Sequence[Mapping[str, Tensor]] | None, batch: int, num_classes: int, who: str) -> None:
    """Refuse missing targets, a count other than one per image, malformed boxes or labels outside 1..C, saying
    what was expected and how to fix it."""
    if targets is None:
        raise ConfigError(f"{who} in training mode computes its losses: call model(images, targets), one dict "
                          f"{{boxes [M, 4] xyxy, labels [M] in 1..{num_classes}}} per image, or model.eval() to "
                          f"detect")
    if isinstance(targets, Mapping) or len(targets) != batch:
        got = "one dict" if isinstance(targets, Mapping) else f"{len(targets)}"
        raise ConfigError(f"{who} needs a list of one target dict per image ({batch}); got {got}")
    for i, t in enumerate(targets):
        if not isinstance(t, Mapping) or "boxes" not in t or "labels" not in t:
            raise ConfigError(f"target {i} must be a dict {{boxes [M, 4], labels [M]}}; got "
                              f"{sorted(t) if isinstance(t, Mapping) else type(t).__name__}")
        boxes, labels = t["boxes"], t["labels"]
        if not isinstance(boxes, Tensor) or not isinstance(labels, Tensor):
            raise ConfigError(f"target {i}: boxes and labels must be tensors; got {type(boxes).__name__} and "
                              f"{type(labels).__name__} (torch.as_tensor(boxes, dtype=torch.float32), "
                              "torch.as_tensor(labels, dtype=torch.int64))")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ConfigError(f"target {i}: labels must be integer class ids in 1..{num_classes}; got {labels.dtype}"
                              f": pass labels.long()")
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or labels.shape != (len(boxes),):
            raise ConfigError(f"target {i}: boxes must be [M, 4] xyxy and labels [M]; got boxes {tuple(boxes.shape)},"
                              f" labels {tuple(labels.shape)}")
        if len(labels) and not 1 <= int(labels.min()) <= int(labels.max()) <= num_classes:
            raise ConfigError(f"target {i}: labels must be in 1..{num_classes} (0 is the background); got "
                              f"{int(labels.min())}..{int(labels.max())}")
        check_boxes_have_area(boxes, f"target {i}")


def check_boxes_have_area(boxes: Tensor, where: str) -> None:
    """Refuse a box without positive width and height (x2 <= x1 or y2 <= y1) or with a non-finite coordinate: its
    regression target log(w / w_a) would be -inf or NaN, and the loss with it."""
    if not len(boxes):
        return
    bad = ~(torch.isfinite(boxes).all(1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    if bad.any():
        j = int(bad.nonzero()[0])
        raise ConfigError(f"{where}: box {j} {[round(float(v), 3) for v in boxes[j]]} has no positive width and "
                          f"height ({int(bad.sum())} of {len(boxes)} boxes); boxes are xyxy in pixels with x2 > x1 "
                          "and y2 > y1. Drop boxes that clipping or cropping emptied: keep = (b[:, 2] > b[:, 0]) & "
                          "(b[:, 3] > b[:, 1])")


def check_mask_targets(targets: Sequence[Mapping[str, Tensor]], image_sizes: Sequence[Sequence[int]],
                       who: str) -> None:
    """Instance segmentation's targets (Notes: 002 §5.2.1): besides boxes and labels (`check_targets`), `masks`
    [M, H, W] uint8 or bool, one binary mask per box at the size of its image."""
    for i, (t, size) in enumerate(zip(targets, image_sizes)):
        masks = t.get("masks")
        want = (len(t["boxes"]), *(int(s) for s in size))
        if not isinstance(masks, Tensor):
            raise ConfigError(f"{who}: target {i} needs masks, a uint8/bool tensor {list(want)} (one binary mask per "
                              f"box at the image's size); got {type(masks).__name__}")
        if tuple(masks.shape) != want or masks.dtype not in (torch.uint8, torch.bool):
            raise ConfigError(f"{who}: target {i}'s masks must be uint8/bool {list(want)} (one binary mask per box "
                              f"at the image's size); got {masks.dtype} {list(masks.shape)}: threshold probabilities "
                              f"and convert with .to(torch.uint8)")
