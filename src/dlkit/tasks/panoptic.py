"""Panoptic segmentation (Notes: 002 §5.3): the ground truth of a scene target as a panoptic map, the panoptic
quality of Panoptic FPN's merged outputs and of MaskFormer's, their tasks (`MergedPanopticTask`: Panoptic FPN's
detection training scored by PQ; `MaskFormerPanopticTask`: a MaskFormer trained on scene targets) and the figure both
draw (panoptic.png: predictions beside the ground truth).

Scene targets (`dlkit.data.detection_scenes` with `semantic=True`) are the detection contract's {boxes, labels 1..C,
masks} plus a semantic map (class 0 where the objects are, stuff classes 1..S elsewhere, 255 void). Their panoptic
ground truth (`panoptic_ground_truth`) is the instance masks (ids 1..K, categories = labels 1..C) plus each stuff
class as one segment of category C + s, in the `(id map, segments)` format of `dlkit.metrics.panoptic`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from ..data.loader import to_device
from ..metrics.panoptic import PanopticQuality
from ..models.segmentation.panoptic_fpn import IGNORE_INDEX, semantic_categories
from ..ops.panoptic_merge import panoptic_merge
from .detection import DetectionTask


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

    def panoptic(self, preds) -> list[tuple[Tensor, list[dict]]]:
        """The `(id_map, segments)` scored for each image's evaluation outputs: `panoptic_merge` of its detections
        and semantic prediction."""
        stuff = list(range(self.num_things + 1, self.num_things + self.num_stuff + 1))
        return [panoptic_merge(d["masks"], d["scores"], d["labels"], semantic_categories(d["semantic"],
                                                                                         self.num_things),
                               stuff, score_threshold=self.score_threshold,
                               stuff_area_threshold=self.stuff_area_threshold) for d in preds]

    def update(self, preds, targets) -> None:
        super().update(self.panoptic(preds), [panoptic_ground_truth(t, self.num_things) for t in targets])

    def compute(self) -> dict:
        out = super().compute()
        return {k: out[k] for k in self.names}


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

    @staticmethod
    def panoptic(preds) -> list[tuple[Tensor, list[dict]]]:
        """The model's (id map, segments) with the class indices 0..K-1 shifted to the categories 1..K."""
        return [(id_map, [{**s, "category": int(s["category"]) + 1} for s in segments]) for id_map, segments in preds]

    def update(self, preds, targets) -> None:
        super().update(self.panoptic(preds), [panoptic_ground_truth(t, self.num_things) for t in targets])

    def compute(self) -> dict:
        out = super().compute()
        return {k: out[k] for k in self.names}


def plot_panoptic_predictions(path: Path, images, panoptic: Sequence, targets: Sequence[Mapping[str, Tensor]],
                              num_things: int, num_stuff: int, class_names: Sequence[str] | None = None) -> Path:
    """panoptic.png: each image's predicted `(id_map, segments)` (categories things 1..C, stuff C + 1..C + S)
    beside `panoptic_ground_truth` of its target, over the image. Notes: 002 §5.3."""
    from ..report.panoptic_figures import plot_panoptic_grid

    things = list(class_names) if class_names is not None else [str(c) for c in range(1, num_things + 1)]
    stuff = ["background"] if num_stuff == 1 else [f"stuff {s}" for s in range(1, num_stuff + 1)]
    gt = [panoptic_ground_truth(t, num_things) for t in targets]
    return plot_panoptic_grid([(i.cpu(), s) for i, s in panoptic], [(i.cpu(), s) for i, s in gt], path,
                              ["void", *things, *stuff], range(1, num_things + 1), [im.cpu() for im in images])


def _first_images(data, device, n: int = 4):
    """The first `n` images and targets of the evaluation data, on `device`."""
    images, targets = next(iter(data))
    return to_device((images[:n], targets[:n]), device)


class MergedPanopticTask(DetectionTask):
    """`DetectionTask` for Panoptic FPN (Notes: 002 §5.3.1): trained on its loss dict, scored by
    `MergedPanopticQuality` (pq, sq, rq over things and stuff); figures add panoptic.png, the merged panoptic
    predictions that the metric scores beside their ground truth."""

    def __init__(self, model, cfg, num_things: int, num_stuff: int, class_names: Sequence[str] | None = None):
        super().__init__(model, cfg, metric=partial(MergedPanopticQuality, num_things, num_stuff),
                         class_names=class_names)
        self.num_things, self.num_stuff = num_things, num_stuff

    def figures(self, run_dir, model, data):
        paths = super().figures(run_dir, model, data)
        if data is None:
            return paths
        images, targets = _first_images(data, next(model.parameters()).device)  # the runner set eval, no_grad
        panoptic = self.metric().panoptic(model(images))
        return paths + [plot_panoptic_predictions(run_dir / "figures" / "panoptic.png", images, panoptic, targets,
                                                  self.num_things, self.num_stuff, self.class_names)]


class MaskFormerPanopticTask(DetectionTask):
    """`DetectionTask` for a MaskFormer on scene targets: training converts each target with
    `mask_classification_targets`; evaluation scores `model.panoptic(images, things)` (class indices 0..C-1 are the
    things; `score_threshold`, `overlap_threshold` as `panoptic_inference`) with the task's metric. Draws no
    detection figures (the model returns no boxes): its figure is panoptic.png, the panoptic predictions scored
    beside their ground truth. Notes: 002 §5.3."""

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
        if data is None:
            return []
        images, targets = _first_images(data, next(model.parameters()).device)
        panoptic = MaskFormerPanopticQuality.panoptic(model.panoptic(images, range(self.num_things),
                                                                     self.score_threshold, self.overlap_threshold))
        return [plot_panoptic_predictions(run_dir / "figures" / "panoptic.png", images, panoptic, targets,
                                          self.num_things, 1, self.class_names)]


TASK = MaskFormerPanopticTask  # the registry's "panoptic"; MergedPanopticTask is a DetectionTask with a PQ metric
