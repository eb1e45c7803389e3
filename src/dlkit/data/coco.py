"""COCO-format detection / instance-segmentation annotations (Notes: 000 §3.12, 003 §6).

One JSON file holds `images`, `annotations` (bbox as [x, y, width, height], category_id, iscrowd,
segmentation, area) and `categories`. The readers group annotations per image and convert boxes to
corner form (x1, y1, x2, y2) = (x, y, x + w, y + h).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataNotFoundError
from .files import DEFAULT_FIX, damaged, read_text


def _load_json(path: Path, fix: str) -> dict:
    if not path.is_file():
        raise DataNotFoundError(f"COCO annotation file not found: {path}")
    try:
        data = json.loads(read_text(path, fix))
    except json.JSONDecodeError as e:
        raise damaged(path, f"not valid JSON, the file is truncated or damaged ({e})", fix) from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ConfigError(f"{path}: expected a COCO dict with 'images' and 'annotations' lists; got keys "
                          f"{sorted(data)[:8] if isinstance(data, dict) else type(data).__name__}")
    return data


def read_coco(json_path: str | os.PathLike, fix: str = DEFAULT_FIX) -> list[dict]:
    """Per-image records of a COCO file, in image-id order, annotations in file order (a damaged file raises
    DataError naming it, with `fix` saying how to repair it).

    Each record: image_id, file_name, height, width, boxes float32 [K, 4] xyxy, category_ids int64 [K],
    iscrowd bool [K], area float32 [K], ann_ids int64 [K], segmentations (list of K raw entries).
    """
    path = Path(json_path)
    data = _load_json(path, fix)
    per_image = {}
    for img in data["images"]:
        if "id" not in img:
            raise ConfigError(f"{path}: an image entry has no 'id': {img}")
        per_image[img["id"]] = (img, [])
    for ann in data["annotations"]:
        bbox = ann.get("bbox")
        if ann.get("image_id") not in per_image or bbox is None or len(bbox) != 4:
            raise ConfigError(f"{path}: annotation {ann.get('id')} needs an image_id listed in 'images' and a "
                              f"bbox [x, y, w, h]; got image_id={ann.get('image_id')}, bbox={bbox}")
        per_image[ann["image_id"]][1].append(ann)
    records = []
    for image_id in sorted(per_image):
        img, anns = per_image[image_id]
        xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
        records.append({
            "image_id": image_id,
            "file_name": img.get("file_name", ""),
            "height": img.get("height"),
            "width": img.get("width"),
            "boxes": boxes,
            "category_ids": np.asarray([a["category_id"] for a in anns], dtype=np.int64),
            "iscrowd": np.asarray([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
            "area": np.asarray([a.get("area", w * h) for a, (w, h) in zip(anns, xywh[:, 2:])], dtype=np.float32),
            "ann_ids": np.asarray([a.get("id", -1) for a in anns], dtype=np.int64),
            "segmentations": [a.get("segmentation") for a in anns],
        })
    return records


def read_coco_categories(json_path: str | os.PathLike, fix: str = DEFAULT_FIX) -> dict[int, str]:
    """The `categories` of a COCO file as {category id: name}."""
    path = Path(json_path)
    return {int(c["id"]): c["name"] for c in _load_json(path, fix).get("categories", [])}
