"""Panoptic FPN recipe (Notes: 002 §5.3.1): panoptic segmentation of the generated shape scenes, whose
targets carry the instance masks (things: the shapes) and a semantic map (stuff: the background, one class; see
`dlkit.data.detection_scenes`); data and detection task from `recipes.detection`, scored by panoptic quality.

Each test image's prediction is `PanopticFPN.panoptic`'s merge (detections above `score_threshold`, then the stuff
pixels no thing took); its ground truth is the instance masks (ids 1..K, categories = the labels 1..C) plus the
background as one stuff segment of category C + 1 (`dlkit.tasks.panoptic`).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..tasks.panoptic import MergedPanopticTask
from .detection import DET_DEFAULTS, DET_SMOKE, build_detection
from .registry import Recipe, Setup, register_recipe


def build_panoptic(cfg, dist) -> Setup:
    """`build_detection` on shape scenes with semantic maps (scene option `semantic`), trained and scored by
    `MergedPanopticTask` (pq, sq, rq, over things and stuff; panoptic.png). Notes: 002 §5.3.1."""
    if cfg.data != "shapes" or not dict(cfg.scene).get("semantic") or cfg.flip:
        raise ConfigError(f"panoptic-fpn-shapes needs data='shapes', scene={{'semantic': true}} and flip=false (the "
                          f"semantic map is not flipped); got data={cfg.data!r}, scene={dict(cfg.scene)}, "
                          f"flip={cfg.flip}")
    setup = build_detection(cfg, dist)
    model = setup.task.model
    if not getattr(model, "needs_semantic", False):
        raise ConfigError(f"model '{cfg.model}' predicts no semantic (stuff) map, which panoptic-fpn-shapes merges "
                          "with the instances; choose a Panoptic FPN such as panoptic_fpn_tiny")
    setup.task = MergedPanopticTask(model, cfg, model.num_classes, model.num_stuff_classes, setup.task.class_names)
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
