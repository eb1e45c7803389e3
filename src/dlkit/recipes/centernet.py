"""CenterNet on generated MNIST digit scenes (Notes: 002 §4.3.5); data and task from `recipes.detection`."""

from __future__ import annotations

from .detection import DET_DEFAULTS, DET_SMOKE, build_detection
from .registry import Recipe, register_recipe

register_recipe(Recipe(
    name="centernet-mnistdet", task="detection", notes="002 §4.3.5",
    description="A small CenterNet (ResNet basic blocks 16-128, up-sampling neck with skips to stride 4, heat-map, "
                "size and offset heads) trained from scratch on 128x128 scenes of MNIST digits; COCO mAP@0.5 and "
                "mAP on test scenes built from MNIST's test digits",
    # measured (10 epochs of 2000 scenes, OMP_NUM_THREADS=1, under load ~15 on the 2-core EPYC, 633 s): test mAP@0.5
    # 0.677, mAP 0.380, mAP@0.75 0.388 (val 0.681 / 0.378); plateaus from epoch 8 on; exact CornerNet radius
    build=build_detection, metric="test/map_50", threshold=0.64, budget_s=600,
    defaults={**DET_DEFAULTS, "data": "mnist", "model": "centernet_tiny", "image_size": 128, "n_train": 2000,
              "epochs": 10},
    smoke={**DET_SMOKE}, datasets=("mnist",),
))
