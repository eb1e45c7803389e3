"""Writing detection / instance-segmentation annotations as a COCO JSON file (Notes: 000 §3.12, 002 §4, §5.2).

The inverse of `coco.read_coco`: per-image records with corner boxes become COCO's `images`, `annotations`
(bbox [x, y, width, height] = (x1, y1, x2 - x1, y2 - y1), area, iscrowd, segmentation) and `categories`.
An instance mask is written as compressed RLE (`metrics.detection.mask_rle`, equal to pycocotools.mask.encode)
and its area is its pixel count, as COCO defines it; without a mask the area is the box's and a polygon, if the
record has one, is written as given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..metrics.detection.mask_rle import rle_encode


def _array(x, dtype) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _categories(categories) -> list[dict]:
    if isinstance(categories, Mapping):
        items = sorted((int(k), str(v)) for k, v in categories.items())
    else:
        items = [(i + 1, str(name)) for i, name in enumerate(categories)]
    if not items:
        raise ConfigError("a COCO file needs at least one category; pass the class names (ids 1..C) or {id: name}")
    return [{"id": i, "name": name, "supercategory": ""} for i, name in items]


def coco_dict(records: Iterable[Mapping], categories: Sequence[str] | Mapping[int, str]) -> dict:
    """The COCO dict of per-image `records`, each {file_name, height, width, boxes [K, 4] xyxy, labels [K] (category
    ids)} with optional image_id (default: position + 1), masks [K, H, W], iscrowd [K] and polygons (K lists of
    [x1, y1, x2, y2, ...] lists). Annotation ids run 1, 2, ... in record order."""
    cats = _categories(categories)
    known = {c["id"] for c in cats}
    images, annotations = [], []
    for i, rec in enumerate(records):
        image_id = int(rec.get("image_id", i + 1))
        h, w = int(rec["height"]), int(rec["width"])
        images.append({"id": image_id, "file_name": str(rec["file_name"]), "height": h, "width": w})
        boxes = _array(rec["boxes"], np.float64).reshape(-1, 4)
        labels = _array(rec["labels"], np.int64).reshape(-1)
        k = len(boxes)
        masks = rec.get("masks")
        masks = None if masks is None else _array(masks, np.uint8)
        crowd = _array(rec.get("iscrowd", np.zeros(k)), np.int64).reshape(-1)
        polygons = rec.get("polygons")
        if len(labels) != k or len(crowd) != k or (masks is not None and masks.shape != (k, h, w)) or \
                (polygons is not None and len(polygons) != k):
            raise ConfigError(f"record {rec['file_name']!r}: expected boxes [K, 4], labels [K], iscrowd [K] and "
                              f"masks [K, {h}, {w}] for K = {k}; got labels {labels.shape}, iscrowd {crowd.shape}, "
                              f"masks {None if masks is None else masks.shape}")
        unknown = sorted(set(labels.tolist()) - known)
        if unknown:
            raise ConfigError(f"record {rec['file_name']!r}: labels {unknown} are not category ids {sorted(known)}")
        for j in range(k):
            x1, y1, x2, y2 = boxes[j]
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(labels[j]),
                   "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "iscrowd": int(crowd[j])}
            if masks is not None:
                ann["segmentation"] = rle_encode(masks[j])
                ann["area"] = float(masks[j].astype(bool).sum())
            else:
                ann["area"] = float((x2 - x1) * (y2 - y1))
                if polygons is not None:
                    ann["segmentation"] = [[float(v) for v in poly] for poly in polygons[j]]
            annotations.append(ann)
    return {"images": images, "annotations": annotations, "categories": cats}


def write_coco(path: str | os.PathLike, records: Iterable[Mapping], categories) -> Path:
    """Write `coco_dict(records, categories)` to `path` (atomically: a temporary file, then a rename); returns it.
    The same records give the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(coco_dict(records, categories), separators=(",", ":"))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
