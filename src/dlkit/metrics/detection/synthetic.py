"""Random COCO-format ground truth and detections, for testing and benchmarking the COCO evaluation.

Deterministic for a seed. The cases cover what the evaluation must get right: many images and classes, crowd
regions, images without ground truth or without detections, more than 100 detections in one (image, class),
tied scores (rounded to 2 decimals) and tied IoUs (coordinates on a 0.5 grid), small, medium and large boxes,
gt `area` fields smaller than the box (as a segmentation's area), detections of a class absent from the image.
"""

from __future__ import annotations

import numpy as np


def synthetic_coco(seed: int, n_images: int = 50, n_classes: int = 8, max_gt: int = 12, dets_per_gt: int = 3,
                   false_positives: int = 10, crowd_rate: float = 0.1, crowded_images: int = 1,
                   jitter: float = 0.12) -> tuple[dict, list]:
    """(ground-truth dict with images/annotations/categories, list of detection dicts) in COCO's JSON layout;
    a detection of a gt box moves each coordinate by `jitter` x its size (standard deviation)."""
    rng = np.random.default_rng(seed)
    cat_ids = sorted(rng.choice(np.arange(1, 4 * n_classes + 1), n_classes, replace=False).tolist())
    img_ids = rng.choice(np.arange(1, 20 * n_images + 1), n_images, replace=False).tolist()
    images, anns, dets = [], [], []

    def box(w_img, h_img, scale):
        w = max(0.5, round(float(scale * rng.uniform(0.5, 1.5)) * 2) / 2)
        h = max(0.5, round(float(scale * rng.uniform(0.5, 1.5)) * 2) / 2)
        x = round(float(rng.uniform(0, max(w_img - w, 1))) * 2) / 2
        y = round(float(rng.uniform(0, max(h_img - h, 1))) * 2) / 2
        return [x, y, w, h]

    for n, img_id in enumerate(img_ids):
        w_img, h_img = int(rng.integers(200, 640)), int(rng.integers(200, 480))
        images.append({"id": img_id, "width": w_img, "height": h_img, "file_name": f"{img_id}.jpg"})
        n_gt = int(rng.integers(0, max_gt + 1)) if rng.random() > 0.1 else 0
        gts = []
        for _ in range(n_gt):
            scale = float(rng.choice([12.0, 24.0, 50.0, 80.0, 150.0]))
            b = box(w_img, h_img, scale)
            cat = int(rng.choice(cat_ids))
            crowd = int(rng.random() < crowd_rate)
            area = b[2] * b[3] * float(rng.uniform(0.5, 1.0))
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": b, "area": area,
                         "iscrowd": crowd})
            gts.append((b, cat))
        if rng.random() < 0.1:  # an image without detections
            continue
        for b, cat in gts:
            for _ in range(int(rng.integers(0, dets_per_gt + 1))):
                j = rng.normal(0, jitter, 4) * np.array([b[2], b[3], b[2], b[3]])
                d = [round(float(b[0] + j[0]) * 2) / 2, round(float(b[1] + j[1]) * 2) / 2,
                     max(0.5, round(float(b[2] + j[2]) * 2) / 2), max(0.5, round(float(b[3] + j[3]) * 2) / 2)]
                c = cat if rng.random() > 0.1 else int(rng.choice(cat_ids))
                dets.append({"image_id": img_id, "category_id": c, "bbox": d,
                             "score": round(float(rng.random()), 2)})
        n_fp = int(rng.integers(0, false_positives + 1))
        if n < crowded_images:  # more than max_det = 100 detections of one class in one image
            n_fp = 0
            cat = int(cat_ids[0])
            for _ in range(130):
                dets.append({"image_id": img_id, "category_id": cat, "bbox": box(w_img, h_img, 40.0),
                             "score": round(float(rng.random()), 2)})
        for _ in range(n_fp):
            dets.append({"image_id": img_id, "category_id": int(rng.choice(cat_ids)),
                         "bbox": box(w_img, h_img, float(rng.choice([15.0, 40.0, 120.0]))),
                         "score": round(float(rng.random()), 2)})
    rng.shuffle(dets)
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"class{c}"} for c in cat_ids]}
    return gt, dets
