"""R-CNN on generated shapes scenes (Notes: 002 §4.3.2): selective search proposals, each warped to 32x32 for a tiny
CNN that scores the 5 classes and the background and corrects the box; data and task from `recipes.detection`."""

from __future__ import annotations

from .detection import DET_DEFAULTS, DET_SMOKE, build_detection
from .registry import Recipe, register_recipe

register_recipe(Recipe(
    name="rcnn-shapes", task="detection", notes="002 §4.3.2",
    description="R-CNN (rcnn_tiny): selective search ('fast' mode, segments of >= 10 pixels, at most 500 boxes per "
                "image, cached per image) on 96x96 generated shapes scenes, every proposal warped with 2 pixels of "
                "context to 32x32 for a tiny VGG (16 | 32 | 64, 64 with BN, dense 32-32), 64 proposals sampled per "
                "training image (a quarter positive at IoU >= 0.5), class-specific box corrections; COCO mAP@0.5 "
                "(and mAP) on the test scenes",
    # measured (dlkit verify, one thread on a loaded machine: 452 s, 296 s of CPU): test mAP@0.5 0.443, val 0.415
    # (mAR@100 0.59), still rising at the last epoch; with the segmentation's min_size = k (50-100) selective
    # search misses a quarter of the objects and 10 epochs reached 0.266
    build=build_detection, metric="test/map_50", threshold=0.4, budget_s=600,
    defaults={**DET_DEFAULTS, "model": "rcnn_tiny", "image_size": 96, "n_train": 300, "n_val": 40, "n_test": 100,
              "epochs": 12, "batch_size": 8, "lr": 3e-3, "model_kwargs": {"batch_size_per_image": 64}},
    smoke={**DET_SMOKE},
))
