"""MaskFormer recipe (Notes: 002 §5.3), smoke-sized: panoptic segmentation of the generated shape scenes of
panoptic-fpn-shapes (things: the five shapes; stuff: the background, one class) by mask classification
(`models.segmentation.maskformer`), on the data of `recipes.detection`, scored by panoptic quality.

The scene targets {boxes, labels, masks, semantic} become MaskFormer's {masks, labels}: one mask per segment of
`panoptic_ground_truth` (the instances, labels 1..C, and the background as one stuff mask of label C + 1), so the
model has K = C + 1 classes (`mask_classification_targets`). Each test image's prediction is `MaskFormer.panoptic`
(its class indices 0..K-1 are the categories 1..K), scored against `panoptic_ground_truth` by
`MaskFormerPanopticQuality`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import torch
from torch import Tensor

from ..data.loader import to_device
from ..errors import ConfigError
from ..metrics.panoptic import PanopticQuality
from ..registry import create_model
from ..tasks.detection import DetectionTask
from .detection import DET_DEFAULTS, DET_SMOKE, build_detection
from .panoptic_fpn import MergedPanopticQuality, panoptic_ground_truth
from .registry import Recipe, Setup, register_recipe


def mask_classification_targets(target: Mapping[str, Tensor], num_things: int) -> dict[str, Tensor]:
    """MaskFormer's target {"masks": [M, H, W] bool, "labels": [M] int64} of a scene target {labels, masks,
    semantic}: one mask per non-empty segment of `panoptic_ground_truth` (instances with their labels 1..C, pixels
    held by an earlier instance removed; each stuff class of the semantic map as one mask of category C + s), in
    its order; void pixels are in no mask. Notes: 002 §5.3."""
    id_map, segments = panoptic_ground_truth(target, num_things)
    masks = torch.stack([id_map == s["id"] for s in segments]) if segments else \
        torch.zeros(0, *id_map.shape, dtype=torch.bool, device=id_map.device)
    keep = masks.flatten(1).any(1)
    labels = torch.tensor([s["category"] for s in segments], dtype=torch.int64, device=id_map.device)
    return {"masks": masks[keep], "labels": labels[keep]}


class MaskFormerPanopticQuality(PanopticQuality):
    """PanopticQuality of `MaskFormer.panoptic` outputs: `update(preds, targets)` takes per image the model's
    (id map, segments), whose categories are class indices 0..K-1, shifts them to the categories 1..K and scores them
    against `panoptic_ground_truth` of the scene targets. Things 1..C, stuff C + 1..C + S; `compute` keeps the
    scalars of `MergedPanopticQuality.names`. Notes: 002 §5.3."""

    names = MergedPanopticQuality.names

    def __init__(self, num_things: int, num_stuff: int):
        super().__init__(num_things + num_stuff + 1, thing_categories=range(1, num_things + 1))
        self.num_things, self.num_stuff = num_things, num_stuff

    def update(self, preds, targets) -> None:
        shifted = [(id_map, [{**s, "category": int(s["category"]) + 1} for s in segments])
                   for id_map, segments in preds]
        super().update(shifted, [panoptic_ground_truth(t, self.num_things) for t in targets])

    def compute(self) -> dict:
        out = super().compute()
        return {k: out[k] for k in self.names}


class MaskFormerPanopticTask(DetectionTask):
    """`DetectionTask` for a MaskFormer on scene targets: training converts each target with
    `mask_classification_targets`; evaluation scores `model.panoptic(images, things)` (class indices 0..C-1 are the
    things; `score_threshold`, `overlap_threshold` as `panoptic_inference`) with the task's metric. Draws no
    detection figures (the model returns no boxes). Notes: 002 §5.3."""

    def __init__(self, model, cfg, num_things: int, class_names: Sequence[str] | None = None,
                 score_threshold: float = 0.8, overlap_threshold: float = 0.8):
        super().__init__(model, cfg, metric=partial(MaskFormerPanopticQuality, num_things, 1),
                         class_names=class_names)
        self.metric_names = MaskFormerPanopticQuality.names
        self.num_things, self.score_threshold, self.overlap_threshold = num_things, score_threshold, overlap_threshold

    def training_step(self, model, batch, ctx):
        images, targets = batch
        return super().training_step(model, (images, [mask_classification_targets(t, self.num_things)
                                                      for t in targets]), ctx)

    def evaluate(self, model, data):
        metric = self.metric()
        device = next(model.parameters()).device
        for images, targets in data:
            images, targets = to_device((images, targets), device)
            metric.update(model.panoptic(images, range(self.num_things), self.score_threshold,
                                         self.overlap_threshold), targets)
        return metric.compute()

    def figures(self, run_dir, model, data):
        return []


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
