"""Object detection: the contract every detector trains and is scored through (Notes: 002 §4, §4.1).

Contract (torchvision's `GeneralizedRCNN` convention, DESIGN.md "Tasks"):
- a batch is `(images, targets)`: images a tensor [B, C, H, W] (or a list of [C, H, W]), targets a list of B dicts
  `{"boxes": [M, 4] float (x1, y1, x2, y2) in pixels, "labels": [M] int64 in 1..C}` (0 is the background);
- in training mode `model(images, targets)` returns a dict of scalar losses (e.g. `loss_classifier`,
  `loss_box_reg`, `loss_objectness`); the task minimises their (weighted) sum and logs each one;
- in eval mode `model(images)` returns a list of B dicts `{"boxes": [N, 4] xyxy, "scores": [N], "labels": [N]}`
  (plus `masks` for instance segmentation), the detections after the model's own post-processing (NMS).
The notes write a box as (centre x, centre y, w, h) (§4); the contract uses corners, as torchvision and COCO's
evaluation code do; `dlkit.ops.box_convert` converts between the formats and `dlkit.ops.box_iou` measures overlap.

Evaluation is a pluggable metric object (`metric=`, a factory of `metrics.meter.Metric` whose `update(preds,
targets)` takes one batch and whose `compute()` returns a dict). The default is COCO mAP (`COCOMeanAP`, equal to
pycocotools' COCOeval); a metric class that lists its result names in `names` lets the Trainer refuse a `monitor`
it never logs before training. `BoxRecallIoU` is a cheaper localisation check: for every ground-truth box the best
IoU reached by a detection of its class (scored >= `score_threshold`), averaged over the boxes, and the fraction
of boxes where that IoU is >= 0.5. It is a plain sum over boxes, so it adds up across DDP ranks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..data.loader import to_device
from ..engine.task import Task
from ..errors import ConfigError
from ..metrics.detection.coco_map import COCOMeanAP
from ..metrics.meter import Metric
from ..ops.boxes import box_iou
from .optimization import build_optimizers


class BoxRecallIoU(Metric):
    """Per ground-truth box, the best IoU of a same-class detection scored >= `score_threshold` (0 if none):
    `mean_iou` over all boxes and `recall@{iou_threshold}`, the fraction of boxes with best IoU >= the threshold.

    Notes: 002 §4.1 (IoU; recall = matched GT boxes / GT boxes). It ignores false positives, so a detector that
    fires everywhere scores high (COCO mAP does not); it is honest about localisation.
    """

    def __init__(self, score_threshold: float = 0.0, iou_threshold: float = 0.5):
        super().__init__()
        self.score_threshold, self.iou_threshold = score_threshold, iou_threshold
        self.add_state("iou_sum", torch.zeros((), dtype=torch.float64))
        self.add_state("hits", torch.zeros((), dtype=torch.int64))
        self.add_state("boxes", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, preds: list[Mapping[str, Tensor]], targets: list[Mapping[str, Tensor]]) -> None:
        check_detections(preds, len(targets))
        for pred, target in zip(preds, targets):
            gt_boxes, gt_labels = target["boxes"].float(), target["labels"]
            if len(gt_boxes) == 0:
                continue
            keep = pred["scores"] >= self.score_threshold
            boxes, labels = pred["boxes"][keep].float(), pred["labels"][keep]
            iou = box_iou(gt_boxes, boxes) if len(boxes) else gt_boxes.new_zeros(len(gt_boxes), 0)
            iou = iou * (gt_labels[:, None] == labels[None, :])  # a detection of another class does not count
            best = iou.max(dim=1).values if iou.shape[1] else iou.new_zeros(len(gt_boxes))
            self.iou_sum = self.iou_sum.to(best.device) + best.double().sum()
            self.hits = self.hits.to(best.device) + (best >= self.iou_threshold).sum()
            self.boxes = self.boxes.to(best.device) + len(gt_boxes)

    def compute(self) -> dict[str, float]:
        n = self.synced("boxes").item()
        if n == 0:
            raise ConfigError("BoxRecallIoU.compute() before any ground-truth box: is the evaluation data empty?")
        return {"mean_iou": self.synced("iou_sum").item() / n,
                f"recall@{self.iou_threshold:g}": self.synced("hits").item() / n}


def check_detections(preds, n_images: int) -> None:
    """Refuse a model output that is not one {boxes [N, 4], scores [N], labels [N]} dict per image."""
    if not isinstance(preds, list | tuple) or len(preds) != n_images:
        raise ConfigError(f"a detector in eval mode must return a list of {n_images} dicts (one per image) with "
                          f"boxes, scores and labels; got {type(preds).__name__}"
                          f"{f' of length {len(preds)}' if isinstance(preds, list | tuple) else ''}")
    for p in preds:
        missing = {"boxes", "scores", "labels"} - set(p) if isinstance(p, Mapping) else {"a dict"}
        if missing:
            raise ConfigError(f"each detection dict needs boxes [N, 4], scores [N] and labels [N]; missing "
                              f"{sorted(missing)}")
        n = len(p["scores"])
        if p["boxes"].shape != (n, 4) or p["labels"].shape != (n,):
            raise ConfigError(f"detections must be boxes [N, 4], scores [N], labels [N]; got boxes "
                              f"{tuple(p['boxes'].shape)}, scores {tuple(p['scores'].shape)}, labels "
                              f"{tuple(p['labels'].shape)}")


def check_takes_targets(model: nn.Module, who: str) -> None:
    """Refuse, before any training, a model whose forward cannot take (images, targets): the contract of the
    detectors and mask-classification models (002 §4), which a classifier or a per-pixel network does not follow."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a C extension): the first step will tell
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind == p.VAR_POSITIONAL for p in params):
        raise ConfigError(f"{who} trains a model by model(images, targets) (a loss dict in training); "
                          f"{type(model).__name__}.forward takes ({', '.join(p.name for p in params)}). Choose a "
                          f"model that follows that contract (`dlkit list models --task detection`, or the recipe's "
                          f"default model)")


class DetectionTask(Task):
    """Trains a detector on the sum of the loss dict its forward returns; evaluates its detections.

    Notes: 002 §4. `loss_weights` scales named terms (others weigh 1); the step logs every term. `metric` is a
    factory of the evaluation metric (default `COCOMeanAP`); its `names`, when it has them, are the task's
    `metric_names`. Optimizer and schedule from
    `cfg` (`tasks.optimization.build_optimizers`). `figures` draws predicted and ground-truth boxes on validation
    images and a precision-recall curve per class (`report.detection_figures`), naming labels 1..C by `class_names`,
    and for a model with `cross_attention_maps` (DETR) its decoder's attention (`report.detr_figures`).
    """

    def __init__(self, model: nn.Module, cfg, metric: Callable[[], Metric] = COCOMeanAP,
                 loss_weights: Mapping[str, float] | None = None, class_names: Sequence[str] | None = None):
        super().__init__(model)
        check_takes_targets(model, type(self).__name__)
        self.cfg, self.metric, self.loss_weights = cfg, metric, dict(loss_weights or {})
        self.class_names = None if class_names is None else tuple(class_names)
        names = getattr(metric, "names", None)
        self.metric_names = None if names is None else tuple(names)

    def configure_optimizers(self, plan):
        return build_optimizers(self.model.parameters(), self.cfg, plan)

    def training_step(self, model, batch, ctx):
        images, targets = batch
        losses = model(images, targets)
        if not isinstance(losses, Mapping) or not losses:
            raise ConfigError("a detector in training mode must return a dict of scalar losses from "
                              f"model(images, targets); got {type(losses).__name__}")
        unknown = set(self.loss_weights) - set(losses)
        if unknown:
            raise ConfigError(f"loss_weights names {sorted(unknown)}, which the model does not return; it returns "
                              f"{sorted(losses)}")
        total = sum(self.loss_weights.get(k, 1.0) * v for k, v in losses.items())
        return {"loss": total, **{k: v.detach() for k, v in losses.items()}}

    def evaluate(self, model, data):
        metric = self.metric()
        device = next(model.parameters()).device
        for images, targets in data:
            images, targets = to_device((images, targets), device)
            metric.update(model(images), targets)
        out = metric.compute()
        return out if isinstance(out, Mapping) else {"metric": out}

    def figures(self, run_dir, model, data):
        from ..report.detection_figures import detection_figures

        if data is None:
            return []
        paths = detection_figures(model, data, run_dir / "figures", self.class_names)
        if hasattr(model, "cross_attention_maps"):  # DETR: its decoder's attention (report.detr_figures)
            from ..report.detr_figures import detr_attention_figures

            paths += detr_attention_figures(model, data, run_dir / "figures", self.class_names)
        return paths
