"""YOLOv3 on generated shapes scenes (Notes: 000 §3.12.1-3.12.2, 002 §4.3.4): a small Darknet backbone, three
scales, and nine anchors fitted by k-means (distance 1 - IoU) on the training boxes, three per scale by area."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..ops.anchors import kmeans_anchors
from ..registry import create_model
from .detection import DET_DEFAULTS, DET_SMOKE, build_detection
from .options import with_model_kwargs
from .registry import Recipe, register_recipe

NUM_ANCHORS = 9  # YOLOv3: k = 9, three per scale (000 §3.12.1, 002 §4.3.4)


def training_box_shapes(train_set) -> torch.Tensor:
    """(w, h) [N, 2] of every box of a detection data set (images with their targets), empty boxes left out."""
    shapes = [t["boxes"][:, 2:] - t["boxes"][:, :2] for _, t in (train_set[i] for i in range(len(train_set)))]
    wh = torch.cat(shapes).float() if shapes else torch.zeros(0, 2)
    return wh[(wh > 0).all(dim=1)]


def make_yolov3(cfg, train_set, num_classes: int, in_chans: int):
    """`cfg.model` with anchors by k-means on the training boxes (k = 9, sorted by area: the smallest three to
    stride 8). Returns (model, the constructor arguments that rebuild it). Notes: 000 §3.12.1."""
    wh = training_box_shapes(train_set)
    if len(wh) < NUM_ANCHORS:
        raise ConfigError(f"k-means anchors need at least {NUM_ANCHORS} training boxes; the training set has "
                          f"{len(wh)}: use more scenes (n_train) or objects per scene")
    anchors = kmeans_anchors(wh, NUM_ANCHORS, seed=cfg.seed)
    kwargs = with_model_kwargs({"num_classes": num_classes, "in_chans": in_chans, "image_size": cfg.image_size,
                                "anchors": [[round(float(w), 2), round(float(h), 2)] for w, h in anchors]},
                               cfg.model_kwargs)
    return create_model(cfg.model, **kwargs), kwargs


def build_yolov3(cfg, dist):
    """The detection recipe's data and task with the k-means-anchored YOLOv3 (`make_yolov3`)."""
    return build_detection(cfg, dist, make_model=make_yolov3)


register_recipe(Recipe(
    name="yolov3-shapes", task="detection", notes="000 §3.12.1, 002 §4.3.4",
    description="A small YOLOv3 (Darknet backbone 8-128, three scales, k-means anchors) trained from scratch on "
                "generated shapes scenes at 128x128 with YOLOv3's binary cross-entropies for objectness and classes "
                "(ignore threshold 0.5; model_kwargs={loss: mse} gives the notes' squared errors); COCO mAP@0.5 "
                "(and mAP) on the test scenes",
    # measured (24 epochs, one thread beside another training, 420 s of training): test mAP@0.5 0.688 (val 0.667,
    # val mAP 0.367); lr 2e-3 for 16 epochs gave 0.433, and the squared-error loss trails the cross-entropies
    build=build_yolov3, metric="test/map_50", threshold=0.62, budget_s=600,
    defaults={**DET_DEFAULTS, "model": "yolov3_small", "epochs": 24, "lr": 5e-3, "flip": True,
              "model_kwargs": {"loss": "bce", "ignore_thresh": 0.5}},
    smoke={**DET_SMOKE},
))
