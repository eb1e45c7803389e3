"""SSD on generated shapes scenes (Notes: 002 §4.3.3-4.3.4): multi-scale default boxes, softmax classes with a
background class, and hard negative mining at 3 negatives per positive."""

from __future__ import annotations

from .detection import DET_DEFAULTS, DET_SMOKE, build_detection
from .registry import Recipe, register_recipe

register_recipe(Recipe(
    name="ssd-shapes", task="detection", notes="002 §4.3.3, §4.3.4",
    description="A small SSD (ResNet backbone 16-128 read at strides 4-32 plus one extra block, 4 default "
                "boxes per location, hard negative mining 3:1) trained from scratch on generated shapes scenes at "
                "128x128; COCO mAP@0.5 (and mAP) on the test scenes",
    # measured (dlkit verify, one thread beside another training): test mAP@0.5 0.827, mAP 0.560, in 293 s
    build=build_detection, metric="test/map_50", threshold=0.78, budget_s=600,
    defaults={**DET_DEFAULTS, "model": "ssd_tiny", "lr": 3e-3},
    smoke={**DET_SMOKE},
))
