"""Panoptic FPN recipe (Notes: 002 §5.3.1), smoke-sized: panoptic segmentation of the generated shape scenes, whose
targets carry the instance masks (things: the shapes) and a semantic map (stuff: the background, one class; see
`dlkit.data.detection_scenes`); data and detection task from `recipes.detection`, scored by panoptic quality.

Each test image's prediction is `PanopticFPN.panoptic`'s merge (detections above `score_threshold`, then the stuff
pixels no thing took); its ground truth is the instance masks (ids 1..K, categories = the labels 1..C) plus the
background as one stuff segment of category C + 1 (`panoptic_ground_truth`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import torch
from torch import Tensor

from ..errors import ConfigError
from ..metrics.panoptic import PanopticQuality
from ..models.segmentation.panoptic_fpn import IGNORE_INDEX, semantic_categories
from ..ops.panoptic_merge import panoptic_merge
from .detection import DET_DEFAULTS, DET_SMOKE, build_detection
from .registry import Recipe, Setup, register_recipe


def panoptic_ground_truth(target: Mapping[str, Tensor], num_things: int) -> tuple[Tensor, list[dict]]:
    """`(id_map, segments)` of a target {labels, masks, semantic}: object k is segment k + 1 of its label, stuff
    class s (semantic map) segment K + s of category C + s on the pixels no object holds; 255 and class 0 outside
    the objects stay void. Notes: 002 §5.3."""
    masks, labels = target["masks"].bool(), target["labels"]
    id_map = torch.zeros(target["semantic"].shape, dtype=torch.int64, device=masks.device)
    segments = []
    for k, (m, label) in enumerate(zip(masks, labels.tolist())):
        id_map[m & (id_map == 0)] = k + 1
        segments.append({"id": k + 1, "category": int(label), "iscrowd": 0})
    sem = target["semantic"]
    stuff = semantic_categories(torch.where(sem == IGNORE_INDEX, 0, sem), num_things)
    for c in sorted(set(stuff.unique().tolist()) - {0}):
        seg_id = len(labels) + c - num_things
        id_map[(stuff == c) & (id_map == 0)] = seg_id
        segments.append({"id": seg_id, "category": c, "iscrowd": 0})
    return id_map, segments


class MergedPanopticQuality(PanopticQuality):
    """PanopticQuality over Panoptic FPN's evaluation outputs: `update(detections, targets)` merges each image's
    detections (masks, scores, labels) and semantic logits with `panoptic_merge` and scores the result against
    `panoptic_ground_truth`. Categories: things 1..C, stuff C + 1..C + S. `compute` keeps PanopticQuality's scalars
    (`names`), not its per-category lists. Notes: 002 §5.3.1."""

    names = tuple(f"{k}{group}" for group in ("", "_things", "_stuff") for k in ("pq", "sq", "rq", "n"))

    def __init__(self, num_things: int, num_stuff: int, score_threshold: float = 0.5,
                 stuff_area_threshold: int = 64):
        super().__init__(num_things + num_stuff + 1, thing_categories=range(1, num_things + 1))
        self.num_things, self.num_stuff = num_things, num_stuff
        self.score_threshold, self.stuff_area_threshold = score_threshold, stuff_area_threshold

    def update(self, preds, targets) -> None:
        stuff = list(range(self.num_things + 1, self.num_things + self.num_stuff + 1))
        merged = [panoptic_merge(d["masks"], d["scores"], d["labels"],
                                 semantic_categories(d["semantic"], self.num_things), stuff,
                                 score_threshold=self.score_threshold, stuff_area_threshold=self.stuff_area_threshold)
                  for d in preds]
        super().update(merged, [panoptic_ground_truth(t, self.num_things) for t in targets])

    def compute(self) -> dict:
        out = super().compute()
        return {k: out[k] for k in self.names}


def build_panoptic(cfg, dist) -> Setup:
    """`build_detection` on shape scenes with semantic maps (scene option `semantic`), scored by
    `MergedPanopticQuality` (pq, sq, rq, over things and stuff). Notes: 002 §5.3.1."""
    if cfg.data != "shapes" or not dict(cfg.scene).get("semantic") or cfg.flip:
        raise ConfigError(f"panoptic-fpn-shapes needs data='shapes', scene={{'semantic': true}} and flip=false (the "
                          f"semantic map is not flipped); got data={cfg.data!r}, scene={dict(cfg.scene)}, "
                          f"flip={cfg.flip}")
    setup = build_detection(cfg, dist)
    model = setup.task.model
    setup.task.metric = partial(MergedPanopticQuality, model.num_classes, model.num_stuff_classes)
    setup.task.metric_names = MergedPanopticQuality.names
    return setup


register_recipe(Recipe(
    name="panoptic-fpn-shapes", task="detection", notes="002 §5.3.1",
    description="A small Panoptic FPN (panoptic_fpn_tiny: maskrcnn_tiny plus a 64-wide semantic branch) on 128x128 "
                "scenes of coloured shapes (things) on a textured background (one stuff class); panoptic quality "
                "PQ of the merged instance and semantic predictions on test scenes (PQ over the 5 thing classes and "
                "the stuff class, and each part)",
    # measured (dlkit verify, 2 threads, quiet machine, 392 s): test PQ 0.302 (things 0.171, stuff 0.955; SQ 0.557,
    # RQ 0.352); val PQ 0.149, 0.268, 0.295 after epochs 1-3: the instances are still learning
    build=build_panoptic, metric="test/pq", threshold=0.27, budget_s=600,
    defaults={**DET_DEFAULTS, "data": "shapes", "model": "panoptic_fpn_tiny", "image_size": 128,
              "scene": {"semantic": True}, "n_train": 1000, "n_test": 300, "epochs": 3, "lr": 3e-3,
              "monitor": "val/pq"},
    smoke={**DET_SMOKE}, datasets=(),
))
