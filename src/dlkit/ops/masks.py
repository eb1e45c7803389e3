"""Instance masks: conversions between formats and Mask R-CNN's pasting of a region's mask into the image (Notes:
002 §5.2.1).

An image's instances are binary masks [K, H, W] (one per object; uint8, bool or probabilities). From them:
a panoptic id map and its segments (`masks_to_panoptic`: 0 void, overlaps go to the later instance, or with
`scores` to the more confident one), a semantic label map [H, W] (`masks_to_semantic`: 0 the background), tight
boxes (`masks_to_boxes`: xyxy of the first and last covered pixel indices, torchvision.ops.masks_to_boxes'
convention) and COCO run-length encodings (`masks_to_rle`, the encoder of dlkit.metrics.detection.mask_rle).

Mask R-CNN predicts an M x M mask inside each detected box; `paste_masks_in_image` warps it into the image as
torchvision does: the mask is padded by one zero pixel on each side and its box enlarged by (M + 2) / M about its
centre (so that the mask fades out at the box edge instead of stopping abruptly), the enlarged box's corners are
truncated to integer pixels, and the padded mask is resized bilinearly (half-pixel centres, align_corners=False)
to the box's (x2 - x1 + 1) x (y2 - y1 + 1) pixels starting at pixel (x1, y1); what falls outside the image is cut
off. The resize is separable, so every box's image is A_y @ mask @ A_x^T with two interpolation matrices, computed
for all boxes at once. The caller thresholds the probabilities (0.5 in Mask R-CNN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError


def _check_masks(masks: Tensor, who: str) -> None:
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ConfigError(f"{who} expects instance masks [K, H, W]; got {got}")


def masks_to_panoptic(masks: Tensor, labels: Tensor, scores: Tensor | None = None, threshold: float = 0.5
                      ) -> tuple[Tensor, list[dict]]:
    """Instance masks [K, H, W] (pixels > `threshold` covered) with labels [K] as one panoptic segmentation
    `(id_map [H, W] int64, segments)` (the format of `dlkit.metrics.panoptic`): instance k is segment k + 1 of
    category labels[k], 0 is void; where instances overlap, the later one wins, or the higher-scoring one when
    `scores` [K] is given. Instances left without a pixel have no segment. Notes: 002 §5.2, §5.3."""
    _check_masks(masks, "masks_to_panoptic")
    if labels.shape != masks.shape[:1] or (scores is not None and scores.shape != masks.shape[:1]):
        raise ConfigError(f"masks_to_panoptic needs one label (and score) per mask: {len(masks)} masks, got labels "
                          f"{tuple(labels.shape)}" + ("" if scores is None else f", scores {tuple(scores.shape)}"))
    order = torch.arange(len(masks), device=masks.device) if scores is None else scores.argsort(stable=True)
    id_map = torch.zeros(masks.shape[1:], dtype=torch.long, device=masks.device)
    for k in order.tolist():  # painted from the weakest (earliest) to the strongest (latest): the last paint stays
        id_map[masks[k] > threshold] = k + 1
    present = set(id_map.unique().tolist())
    segments = [{"id": k + 1, "category": int(labels[k]), "iscrowd": 0, "isthing": True}
                for k in range(len(masks)) if k + 1 in present]
    return id_map, segments


def masks_to_semantic(masks: Tensor, labels: Tensor, scores: Tensor | None = None, threshold: float = 0.5) -> Tensor:
    """Label map [H, W] (int64, 0 the background) of instance masks [K, H, W] (pixels > `threshold` covered) with
    labels [K]: where instances overlap, the later one wins, or the higher-scoring one when `scores` [K] is given
    (the categories of `masks_to_panoptic`'s id map). Notes: 002 §5.2."""
    id_map, _ = masks_to_panoptic(masks, labels, scores, threshold)
    return torch.cat([labels.new_zeros(1), labels]).long()[id_map]


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight boxes [K, 4] (x_min, y_min, x_max, y_max: the covered pixels' extreme indices, float) of binary masks
    [K, H, W]; an empty mask gives zeros. Notes: 002 §5.2.1."""
    _check_masks(masks, "masks_to_boxes")
    covered = masks != 0
    out = torch.zeros(len(masks), 4, device=masks.device)
    for axis, (lo, hi) in ((2, (0, 2)), (1, (1, 3))):  # columns hold x (collapse the rows), rows hold y
        line = covered.any(dim=3 - axis)  # [K, W] for x, [K, H] for y
        idx = torch.arange(line.shape[1], device=masks.device, dtype=torch.float32).expand_as(line)
        some = line.any(1)
        out[:, lo] = torch.where(line, idx, torch.inf).amin(1).where(some, 0.0)
        out[:, hi] = torch.where(line, idx, -torch.inf).amax(1).where(some, 0.0)
    return out


def masks_to_rle(masks: Tensor | np.ndarray) -> list[dict]:
    """COCO RLE {"size": [H, W], "counts": str} of each binary mask of [K, H, W] (pycocotools.mask.encode's
    strings). Notes: 002 §5.2.1."""
    from ..metrics.detection.mask_rle import rle_encode

    arr = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    if arr.ndim != 3:
        raise ConfigError(f"masks_to_rle expects instance masks [K, H, W]; got shape {arr.shape}")
    return [rle_encode(m) for m in arr]


def _paste_matrix(start: Tensor, size: Tensor, m: int, n: int) -> Tensor:
    """[K, n, m]: row p holds the bilinear weights (align_corners=False) of image pixel p on the m mask pixels, for a
    mask resized to `size` pixels placed from pixel `start` (int64 [K]); rows outside the placed mask are 0."""
    k = len(start)
    j = torch.arange(n, device=start.device)[None] - start[:, None]  # position in the resized mask, [K, n]
    inside = (j >= 0) & (j < size[:, None])
    src = ((j + 0.5) * (m / size.to(torch.float64))[:, None] - 0.5).clamp(min=0)
    low = src.floor().long().clamp(max=m - 1)
    high = (low + 1).clamp(max=m - 1)
    w_high = (src - low).clamp(0, 1)
    out = torch.zeros(k, n, m, dtype=torch.float64, device=start.device)
    out.scatter_add_(2, low[..., None], ((1 - w_high) * inside)[..., None])
    out.scatter_add_(2, high[..., None], (w_high * inside)[..., None])
    return out


def paste_masks_in_image(masks: Tensor, boxes: Tensor, image_size: Sequence[int], padding: int = 1) -> Tensor:
    """Mask R-CNN's inference warp (module docstring): masks [K, 1, M, M] (probabilities) inside boxes [K, 4] xyxy
    -> [K, 1, H, W] for `image_size` (H, W), 0 outside each box. Threshold the result (0.5). Notes: 002 §5.2.1."""
    if masks.dim() != 4 or masks.shape[1] != 1 or masks.shape[-1] != masks.shape[-2]:
        raise ConfigError(f"paste_masks_in_image expects masks [K, 1, M, M]; got {tuple(masks.shape)}")
    if boxes.shape != (len(masks), 4):
        raise ConfigError(f"paste_masks_in_image needs one xyxy box per mask: {len(masks)} masks, boxes "
                          f"{tuple(boxes.shape)}")
    h, w = (int(s) for s in image_size)
    if len(masks) == 0:
        return masks.new_zeros(0, 1, h, w)
    m = masks.shape[-1]
    padded = torch.nn.functional.pad(masks[:, 0], (padding,) * 4)
    scale = (m + 2 * padding) / m
    centre, half = (boxes[:, :2] + boxes[:, 2:]) * 0.5, (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
    corners = torch.cat([centre - half, centre + half], 1).long()  # truncated towards zero, as torchvision
    size = (corners[:, 2:] - corners[:, :2] + 1).clamp(min=1)
    a_x = _paste_matrix(corners[:, 0], size[:, 0], padded.shape[-1], w).to(masks.dtype)
    a_y = _paste_matrix(corners[:, 1], size[:, 1], padded.shape[-2], h).to(masks.dtype)
    return (a_y @ padded @ a_x.transpose(1, 2))[:, None]
