"""MaskFormer recipe (Notes: 002 §5.3): panoptic segmentation of the generated shape scenes of
panoptic-fpn-shapes (things: the five shapes; stuff: the background, one class) by mask classification
(`models.segmentation.maskformer`), on the data of `recipes.detection`, scored by panoptic quality.

The scene targets {boxes, labels, masks, semantic} become MaskFormer's {masks, labels}: one mask per segment of
`panoptic_ground_truth` (the instances, labels 1..C, and the background as one stuff mask of label C + 1), so the
model has K = C + 1 classes (`mask_classification_targets`). Each test image's prediction is `MaskFormer.panoptic`
(its class indices 0..K-1 are the categories 1..K), scored against `panoptic_ground_truth` by
`MaskFormerPanopticQuality` (all three in `dlkit.tasks.panoptic`).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import create_model
from ..tasks.panoptic import MaskFormerPanopticTask
from .detection import DET_DEFAULTS, DET_SMOKE, build_detection
from .registry import Recipe, Setup, register_recipe


def build_maskformer(cfg, dist) -> Setup:
    """`build_detection` on shape scenes with semantic maps, the model `cfg.model` with K = C + 1 classes (the
    background last), trained and scored by `MaskFormerPanopticTask`. Notes: 002 §5.3."""
    if cfg.data != "shapes" or not dict(cfg.scene).get("semantic") or cfg.flip:
        raise ConfigError(f"maskformer-shapes needs data='shapes', scene={{'semantic': true}} and flip=false (the "
                          f"semantic map is not flipped); got data={cfg.data!r}, scene={dict(cfg.scene)}, "
                          f"flip={cfg.flip}")
    for key in ("score_threshold", "overlap_threshold"):
        if not 0 <= getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be in [0, 1); got {getattr(cfg, key)}")

    def make_model(cfg, train_set, num_classes: int, in_chans: int):
        kwargs = {"num_classes": num_classes + 1, "in_chans": in_chans, **cfg.model_kwargs}
        return create_model(cfg.model, **kwargs), kwargs

    setup = build_detection(cfg, dist, make_model=make_model)
    old = setup.task
    setup.task = MaskFormerPanopticTask(old.model, cfg, len(old.class_names), old.class_names, cfg.score_threshold,
                                        cfg.overlap_threshold)
    return setup


register_recipe(Recipe(
    name="maskformer-shapes", task="detection", notes="002 §5.3",
    description="A small MaskFormer (maskformer_tiny: one-block ResNet, pixel decoder and mask embeddings of 32, two "
                "decoder layers, 10 queries) on the 128x128 panoptic shape scenes of panoptic-fpn-shapes (five thing "
                "classes, the background as one stuff class); panoptic quality PQ of MaskFormer's panoptic "
                "inference on test scenes (over the 5 thing classes and the stuff class, and each part)",
    # measured (dlkit verify, 2 threads, 349 s): test PQ 0.183 (things 0.028, stuff 0.958; SQ 0.583, RQ 0.202);
    # val PQ 0, 0.003, 0.152, ..., 0.176, 0.181, 0.183, 0.184, 0.184 after epochs 1-12: the stuff is learnt, the
    # instances barely (few thing segments pass score_threshold 0.5, below MaskFormer's 0.8 for this small model)
    build=build_maskformer, metric="test/pq", threshold=0.16, budget_s=600,
    defaults={**DET_DEFAULTS, "data": "shapes", "model": "maskformer_tiny", "image_size": 128,
              "scene": {"semantic": True}, "n_train": 1000, "n_test": 300, "epochs": 12,
              "monitor": "val/pq", "score_threshold": 0.5, "overlap_threshold": 0.8},
    smoke={**DET_SMOKE}, datasets=(),
))
