"""Localisation scores: class accuracy, mean IoU and localisation accuracy (Notes: 002 §4.3.1, §4.1; 003 §5).

Every image holds exactly one object; the prediction is the image's top-scored detection (a localiser gives one;
any detector in the contract of `dlkit.tasks.detection` may be scored the same way). Per image: the class is right
when the prediction's label is the object's; the IoU is that of the predicted box with the true box (002 §4.1),
whatever the class; the image is localised when the class is right and IoU >= `iou_threshold` (0.5: ILSVRC's
localisation criterion). An image without any detection counts as wrong with IoU 0. The states are sums over
images, so they add up across DDP ranks.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ...errors import ConfigError
from ...ops.boxes import box_iou
from ..meter import Metric


class LocalisationAccuracy(Metric):
    """`compute()` -> {accuracy (class), mean_iou (predicted vs true box), loc_accuracy (class right and IoU >=
    `iou_threshold`)}.

    Notes: 002 §4.3.1 (localisation: one object, a class and a box), §4.1 (IoU). `names`, a class attribute, lists
    the keys before any evaluation: `DetectionTask` declares them, so a `monitor` never reported is refused before
    training.
    """

    names = ("accuracy", "mean_iou", "loc_accuracy")

    def __init__(self, iou_threshold: float = 0.5):
        if not 0.0 <= iou_threshold <= 1.0:
            raise ConfigError(f"iou_threshold must be in [0, 1]; got {iou_threshold}")
        super().__init__()
        self.iou_threshold = float(iou_threshold)
        self.add_state("correct", torch.zeros((), dtype=torch.int64))
        self.add_state("iou_sum", torch.zeros((), dtype=torch.float64))
        self.add_state("localised", torch.zeros((), dtype=torch.int64))
        self.add_state("images", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, preds: list[Mapping[str, Tensor]], targets: list[Mapping[str, Tensor]]) -> None:
        """One batch: per image a detection dict {boxes [N, 4], scores [N], labels [N]} and a target {boxes [1, 4],
        labels [1]} (xyxy pixels)."""
        if not isinstance(preds, list | tuple) or not isinstance(targets, list | tuple) or len(preds) != len(targets):
            sizes = (f" of lengths {len(preds)} and {len(targets)}"
                     if hasattr(preds, "__len__") and hasattr(targets, "__len__") else "")
            raise ConfigError(f"LocalisationAccuracy.update expects a list of detection dicts and a list of target "
                              f"dicts, one per image; got {type(preds).__name__} and {type(targets).__name__}{sizes}")
        if not preds:
            return
        boxes, labels, true_boxes, true_labels = [], [], [], []
        for i, (p, t) in enumerate(zip(preds, targets)):
            if len(t["boxes"]) != 1 or len(t["labels"]) != 1:
                raise ConfigError(f"localisation scores images with exactly one object; image {i} of the batch has "
                                  f"{len(t['boxes'])} boxes. Score several objects with COCOMeanAP")
            true_boxes.append(t["boxes"].float().reshape(4))
            true_labels.append(t["labels"].reshape(()).long())
            if len(p["scores"]):  # the top-scored detection (no host sync: argmax stays a tensor)
                top = p["scores"].argmax()
                boxes.append(p["boxes"][top].float().to(true_boxes[-1].device))
                labels.append(p["labels"][top].long().to(true_labels[-1].device))
            else:  # no detection: an empty box and no class (label 0, the background) -> wrong, IoU 0
                boxes.append(true_boxes[-1].new_zeros(4))
                labels.append(true_labels[-1].new_zeros(()))
        true_box, box = torch.stack(true_boxes), torch.stack(boxes)
        iou = box_iou(box, true_box).diagonal().double()
        right = torch.stack(labels) == torch.stack(true_labels)
        self.correct = self.correct.to(iou.device) + right.sum()
        self.iou_sum = self.iou_sum.to(iou.device) + iou.sum()
        self.localised = self.localised.to(iou.device) + (right & (iou >= self.iou_threshold)).sum()
        self.images = self.images.to(iou.device) + len(preds)

    def compute(self) -> dict[str, float]:
        n = self.synced("images").item()
        if n == 0:
            raise ConfigError("LocalisationAccuracy.compute() before any image: is the evaluation data empty?")
        accuracy, mean_iou, localised = self.names
        return {accuracy: self.synced("correct").item() / n, mean_iou: self.synced("iou_sum").item() / n,
                localised: self.synced("localised").item() / n}
