"""A COCO-format detection folder as a torch Dataset (Notes: 002 §4, §5.2; 000 §3.12).

`CocoDetection(images_root, annotation_file)` serves (image float [3, H, W] in [0, 1], target) pairs in the
detection contract (`dlkit.tasks.detection`): the boxes of `coco.read_coco` (xyxy pixels), labels 1..C (the
categories in id order, so that COCO's sparse ids 1..90 become contiguous), iscrowd, area, and with
`masks=True` the instance masks decoded from RLE or polygons (`metrics.detection.mask_rle`, as pycocotools does).
It reads the sets `detection_scenes.write_scenes` writes and a user's own COCO files alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..metrics.detection.mask_rle import rle_decode, to_rle
from .coco import read_coco, read_coco_categories
from .files import DEFAULT_FIX, read_image


class CocoDetection(Dataset):
    """Images under `images_root` (each image's `file_name` is relative to it) with the annotations of a COCO JSON
    file; `transform(image, target)` (e.g. `box_transforms.Compose`) applied last. `class_names` follow the
    categories' id order; `category_ids[label - 1]` maps a label back to its COCO id."""

    def __init__(self, images_root: str | os.PathLike, annotation_file: str | os.PathLike, masks: bool = False,
                 transform=None, fix: str = DEFAULT_FIX):
        self.images_root, self.with_masks, self.transform, self.fix = Path(images_root), masks, transform, fix
        self.records = read_coco(annotation_file, fix)
        cats = read_coco_categories(annotation_file, fix)
        self.category_ids = tuple(sorted(cats))
        self.class_names = tuple(cats[c] for c in self.category_ids)
        index = {c: i + 1 for i, c in enumerate(self.category_ids)}
        for r in self.records:
            unknown = sorted(set(r["category_ids"].tolist()) - set(index))
            if unknown:
                raise ConfigError(f"{annotation_file}: image {r['image_id']} has category ids {unknown} that are not "
                                  f"in 'categories' {list(self.category_ids)}")
        self._labels = [np.asarray([index[c] for c in r["category_ids"]], np.int64) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        image = read_image(self.images_root / r["file_name"], "RGB", self.fix).float().div_(255.0)
        h, w = image.shape[1:]
        if (r["height"], r["width"]) not in ((h, w), (None, None)):
            raise ConfigError(f"{self.images_root / r['file_name']}: image is {h}x{w} but its COCO entry says "
                              f"{r['height']}x{r['width']} (height x width)")
        target = {"boxes": torch.from_numpy(r["boxes"].copy()), "labels": torch.from_numpy(self._labels[i].copy()),
                  "iscrowd": torch.from_numpy(r["iscrowd"].astype(np.int64)),
                  "area": torch.from_numpy(r["area"].copy()), "image_id": r["image_id"]}
        if self.with_masks:
            where = f"image {r['image_id']}"
            masks = [rle_decode(to_rle(s, h, w, where)) if s is not None else None for s in r["segmentations"]]
            if any(m is None for m in masks):
                raise ConfigError(f"{where}: masks=True needs a segmentation in every annotation; some have none")
            target["masks"] = torch.from_numpy(np.stack(masks) if masks else np.zeros((0, h, w), np.uint8))
        return self.transform(image, target) if self.transform is not None else (image, target)
