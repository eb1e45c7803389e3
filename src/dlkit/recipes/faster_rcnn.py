"""Faster R-CNN recipes (Notes: 002 §4.3.2-4.3.3): region proposals, RoI align on the pyramid level of each region's
size, and the second stage; data and task from `recipes.detection`."""

from __future__ import annotations

from .detection import DET_DEFAULTS, DET_SMOKE, build_detection, build_pretrained_detection
from .registry import Recipe, register_recipe

register_recipe(Recipe(
    name="fpn-mnistdet", task="detection", notes="002 §4.3.2, §4.3.3",
    description="A small Faster R-CNN with a feature pyramid (ResNet basic blocks 16-128 read at strides 4-32, a "
                "64-wide FPN P2-P6 with one anchor size per level, 8-128 pixels) trained from scratch on 128x128 "
                "scenes of small MNIST digits (8-32 pixels, as retinanet-mnistdet); COCO mAP@0.5, mAP and the AP of "
                "small objects (area < 32^2: every digit here) on test scenes built from MNIST's test digits",
    # measured (dlkit verify, one thread beside another training and a helper's tests, 594 s of training): test mAP@0.5
    # 0.888, mAP 0.62, AP small 0.62 (retinanet-mnistdet on the same scenes: 0.544); alone on 2 threads 0.892 in 406 s
    build=build_detection, metric="test/map_50", threshold=0.83, budget_s=600,
    defaults={**DET_DEFAULTS, "data": "mnist", "model": "fasterrcnn_tiny", "image_size": 128, "n_train": 2000,
              "epochs": 4, "lr": 3e-3},
    smoke={**DET_SMOKE}, datasets=("mnist",),
))

register_recipe(Recipe(
    name="faster-rcnn-raccoon", task="detection", notes="002 §4.3.2, §4.3.3, 003 §3.3.2",
    description="Faster R-CNN with FPN on the ImageNet-trained EfficientNet-Lite0 (C2-C5, frozen batch norms) "
                "fine-tuned on the 160 Raccoon training photos letterboxed to 256x256; mAP@0.5 on the 40 validation "
                "photos; the report draws the region proposals next to the final boxes",
    # measured (dlkit verify, one thread beside two other trainings, 576 s): mAP@0.5 0.957 on the 40 validation photos;
    # dlkit verify alone on 2 threads: 0.934 in 349 s (val mAP@0.5 0.66 at epoch 4 of 8, 0.93 at 5: it settles in
    # the annealing phase); 10 epochs gave 0.937
    build=build_pretrained_detection, metric="test/map_50", threshold=0.88, budget_s=600,
    defaults={**DET_DEFAULTS, "data": "raccoon", "model": "fasterrcnn_lite0", "pretrained": True, "image_size": 256,
              "flip": True, "epochs": 8, "batch_size": 8, "lr": 1e-3},
    smoke={**DET_SMOKE}, datasets=("raccoon",),
))
