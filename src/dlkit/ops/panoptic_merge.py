"""The Panoptic FPN merge of instance and semantic predictions into one panoptic segmentation (Notes: 002 §5.3.1:
"the mask head (for things prediction) has the priority over the stuff head").

The heuristic of Kirillov et al. (Panoptic FPN), as detectron2 runs it: the instances (Mask R-CNN masks, scores,
labels) are visited by decreasing score, stopping below `score_threshold`; an instance whose pixels are already
taken by pasted instances for a fraction >= `overlap_threshold` of its area is dropped, otherwise its still-free
pixels become a new segment (dropped if fewer than `min_instance_area` remain). Then each stuff category of the
semantic prediction takes its pixels that no instance took, as one segment, unless fewer than
`stuff_area_threshold` remain (those pixels stay void). The result is `(id_map, segments)`, the format of
`dlkit.metrics.panoptic`: ids 1, 2, ... in paste order, 0 = void.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"panoptic_merge: {name} must lie in [0, 1]; got {value!r}")


def panoptic_merge(masks: Tensor, scores: Tensor, labels: Tensor, semantic: Tensor, stuff_categories: Sequence[int],
                   score_threshold: float = 0.5, overlap_threshold: float = 0.5, min_instance_area: int = 1,
                   stuff_area_threshold: int = 4096, mask_threshold: float = 0.5) -> tuple[Tensor, list[dict]]:
    """Merge one image's instances and semantic map into `(id_map [H, W] int64, segments)`. Notes: 002 §5.3.1.

    masks: [K, H, W] (or [K, 1, H, W]) booleans or probabilities (> `mask_threshold` is inside); scores, labels: [K].
    semantic: a class map [H, W] or logits [C, H, W]; only its `stuff_categories` become segments (classes that
    stand for things or "other" are left to the instances). Each segment is `{"id", "category", "iscrowd": 0,
    "isthing", "area"}` plus `"score"` for things. The defaults are detectron2's (4096 px suits COCO-sized images;
    lower `stuff_area_threshold` for small images).
    """
    _check_fraction("score_threshold", score_threshold)
    _check_fraction("overlap_threshold", overlap_threshold)
    semantic = torch.as_tensor(semantic)
    if semantic.dim() == 3 and semantic.is_floating_point():
        semantic = semantic.argmax(0)
    if semantic.dim() != 2 or semantic.is_floating_point():
        raise ConfigError(f"panoptic_merge: semantic must be a class map [H, W] or logits [C, H, W]; got shape "
                          f"{tuple(semantic.shape)}, dtype {semantic.dtype}")
    masks = torch.as_tensor(masks, device=semantic.device)
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3 or masks.shape[1:] != semantic.shape:
        raise ConfigError(f"panoptic_merge: masks must be [K, H, W] with the semantic map's H, W "
                          f"{tuple(semantic.shape)}; got {tuple(masks.shape)} (paste the RoI masks into the image "
                          "first)")
    scores, labels = torch.as_tensor(scores).reshape(-1), torch.as_tensor(labels).reshape(-1)
    if len(scores) != len(masks) or len(labels) != len(masks):
        raise ConfigError(f"panoptic_merge: one score and one label per mask; got {len(masks)} masks, "
                          f"{len(scores)} scores, {len(labels)} labels")
    stuff = [int(c) for c in stuff_categories]
    clash = sorted(set(labels.tolist()) & set(stuff))
    if clash:
        raise ConfigError(f"panoptic_merge: instance labels {clash} are stuff categories; instances must be things "
                          f"(stuff_categories={stuff})")
    inside = masks if masks.dtype == torch.bool else masks > mask_threshold

    id_map = torch.zeros(semantic.shape, dtype=torch.int64, device=semantic.device)
    segments: list[dict] = []
    for k in torch.argsort(scores, descending=True, stable=True).tolist():
        score = float(scores[k])
        if score < score_threshold:
            break
        area = int(inside[k].sum())
        if area == 0:
            continue
        free = inside[k] & (id_map == 0)
        n_free = int(free.sum())
        if area - n_free >= overlap_threshold * area or n_free < max(min_instance_area, 1):
            continue
        id_map[free] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "category": int(labels[k]), "iscrowd": 0, "isthing": True,
                         "score": score, "area": n_free})
    for c in sorted(set(stuff)):
        region = (semantic == c) & (id_map == 0)
        n = int(region.sum())
        if n == 0 or n < stuff_area_threshold:
            continue
        id_map[region] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "category": c, "iscrowd": 0, "isthing": False, "area": n})
    return id_map, segments
