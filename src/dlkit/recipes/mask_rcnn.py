"""Mask R-CNN recipe (Notes: 002 §5.2.1): instance segmentation of the generated shape scenes, whose targets carry
each object's mask; data and detection task from `recipes.detection`, scored by COCO mask AP."""

from __future__ import annotations

from functools import partial

from ..errors import ConfigError
from ..metrics.detection.coco_map import COCOMeanAP
from .detection import DET_DEFAULTS, DET_SMOKE, build_detection
from .registry import Recipe, Setup, register_recipe


def build_instance_segmentation(cfg, dist) -> Setup:
    """`build_detection` scored by COCO mAP over masks (`COCOMeanAP(iou_type="segm")`: mask IoU instead of box IoU)
    instead of boxes. Notes: 002 §5.2.1."""
    setup = build_detection(cfg, dist)
    if not getattr(setup.task.model, "needs_masks", False):
        raise ConfigError(f"model '{cfg.model}' predicts no instance masks, which maskrcnn-shapes trains and scores "
                          "(COCO mask AP); choose an instance-segmentation model such as maskrcnn_tiny")
    setup.task.metric = partial(COCOMeanAP, iou_type="segm")
    return setup


register_recipe(Recipe(
    name="maskrcnn-shapes", task="detection", notes="002 §5.2.1",
    description="A small Mask R-CNN (maskrcnn_tiny: fpn-mnistdet's detector on RGB images plus a 64-wide mask head) "
                "trained from scratch on 128x128 scenes of coloured shapes with their instance masks; COCO mask "
                "mAP@0.5 and mAP (IoU of the pasted masks thresholded at 0.5) on test scenes",
    # measured (dlkit verify, 2 threads, quiet machine, 494 s): test mask mAP@0.5 0.421 (val 0.05, 0.25, 0.39, 0.41
    # after epochs 1-4); 3 epochs gave 0.313 in 375 s
    build=build_instance_segmentation, metric="test/map_50", threshold=0.38, budget_s=600,
    defaults={**DET_DEFAULTS, "data": "shapes", "model": "maskrcnn_tiny", "image_size": 128, "n_train": 1000,
              "n_test": 300, "epochs": 4, "lr": 3e-3},
    smoke={**DET_SMOKE}, datasets=(),
))
