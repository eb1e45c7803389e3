"""Semantic segmentation: every pixel classified (Notes: 000 §3.11, 002 §5.1, 003 §4).

The loss is the per-pixel cross-entropy averaged over the labelled pixels (the void label is ignored), plus an
optional soft-Dice term; the metrics are accumulated over the whole data set as the notes' IoU is (one
confusion matrix of all pixels of all images): pixel accuracy, mean class accuracy, mIoU and per-class IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.task import Task
from ..errors import ConfigError
from ..losses.segmentation import dice_loss
from ..metrics.meter import Mean
from ..metrics.segmentation import SegmentationMeter
from ..models.segmentation.mask_classification import semantic_targets
from .detection import check_takes_targets
from .optimization import build_optimizers


class SegmentationTask(Task):
    """Per-pixel classifier of `num_classes` classes; label `ignore_index` (e.g. CamVid's void) is never scored.

    `dice_weight` > 0 adds that multiple of the soft-Dice loss to the cross-entropy; `class_weights` weights the
    cross-entropy per class (rare classes such as poles and signs). `show` un-normalises images for figures.
    """

    metric_names = ("loss", "pixel_accuracy", "mean_accuracy", "miou")

    def __init__(self, model: nn.Module, cfg, class_names: Sequence[str], ignore_index: int | None = None,
                 dice_weight: float = 0.0, class_weights: torch.Tensor | None = None, show=None):
        super().__init__(model)
        self.cfg, self.class_names, self.ignore_index = cfg, list(class_names), ignore_index
        self.dice_weight, self.class_weights, self.show = dice_weight, class_weights, show

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def configure_optimizers(self, plan):
        return build_optimizers(self.model.parameters(), self.cfg, plan)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the labelled pixels (+ dice_weight x soft Dice)."""
        per_pixel = logits.dim() == target.dim() + 1 and logits.shape[2:] == target.shape[1:]
        if not per_pixel or logits.shape[1] != self.num_classes:
            raise ConfigError(f"{type(self).__name__} needs per-pixel logits [N, {self.num_classes}, H, W] at the "
                              f"size of the target masks {tuple(target.shape)}; the model gave {tuple(logits.shape)}. "
                              "Train a segmentation model (`dlkit list models --task segmentation`) built with "
                              f"num_classes={self.num_classes}")
        target = target.long()
        weight = None if self.class_weights is None else self.class_weights.to(logits.device, logits.dtype)
        ignore = -100 if self.ignore_index is None else self.ignore_index
        loss = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore)
        if self.dice_weight:
            loss = loss + self.dice_weight * dice_loss(logits, target, ignore_index=self.ignore_index)
        return loss

    def training_step(self, model, batch, ctx):
        x, y = batch
        logits = model(x)
        return {"loss": self.loss(logits, y)}

    def _meter(self, model, loader) -> tuple[SegmentationMeter, float]:
        meter = SegmentationMeter(self.num_classes, ignore_index=self.ignore_index)
        device = next(model.parameters()).device
        loss = Mean()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x).float()
            n = (y != self.ignore_index).sum() if self.ignore_index is not None else y.numel()
            loss.update(self.loss(logits, y), n)  # batch mean x its labelled pixels: a per-pixel mean
            meter.update(logits, y)
        return meter, loss.compute()

    def evaluate(self, model, loader):
        meter, loss = self._meter(model, loader)
        m = meter.compute()  # the IoU of each class is drawn by `figures` (iou_per_class.png)
        return {"loss": loss, "pixel_accuracy": m["pixel_accuracy"], "mean_accuracy": m["mean_accuracy"],
                "miou": m["miou"]}

    def figures(self, run_dir: Path, model, loader) -> list[Path]:
        from ..report.figures import plot_bars, plot_confusion_matrix, plot_segmentations

        if loader is None:
            return []
        figs = run_dir / "figures"
        meter, _ = self._meter(model, loader)
        m = meter.compute()
        paths = [plot_bars(dict(zip(self.class_names, m["iou_per_class"])), figs / "iou_per_class.png", "IoU",
                           title=f"mIoU {m['miou']:.3f}, pixel accuracy {m['pixel_accuracy']:.3f}"),
                 plot_confusion_matrix(meter.confusion.cpu().numpy(), self.class_names, figs / "confusion_matrix.png")]
        x, y = next(iter(loader))
        n = min(4, len(x))
        device = next(model.parameters()).device
        pred = model(x[:n].to(device)).argmax(1).cpu()
        images = x[:n].float() if self.show is None else self.show(x[:n].float())
        paths.append(plot_segmentations(images, y[:n], pred, self.class_names, figs / "segmentations.png",
                                        ignore_index=self.ignore_index))
        return paths


class MaskClassificationSegmentationTask(SegmentationTask):
    """Semantic segmentation by a mask-classification model (MaskFormer, Mask2Former; Notes: 002 §5.3.2).

    Training turns each label map into one binary mask per class present (`semantic_targets`; void pixels in no
    mask) and returns the model's matched losses {loss_ce, loss_mask, loss_dice} beside their sum. Evaluation and
    figures score `model(x)`, the per-class scores sum_q p_q(k) sigmoid(m_q), as any per-pixel classifier's output:
    the same confusion-matrix metrics; the evaluation loss is the cross entropy of the scores normalised over the
    classes, -log(s_y / sum_k s_k). Class weights and the dice term of the per-pixel loss do not apply.
    """

    def __init__(self, model: nn.Module, cfg, class_names: Sequence[str], ignore_index: int | None = None,
                 show=None):
        super().__init__(model, cfg, class_names, ignore_index=ignore_index, show=show)
        check_takes_targets(model, type(self).__name__)

    def loss(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ignore = -100 if self.ignore_index is None else self.ignore_index
        return F.cross_entropy(scores.clamp_min(1e-12).log(), target.long(), ignore_index=ignore)

    def training_step(self, model, batch, ctx):
        x, y = batch
        targets = [semantic_targets(t, self.num_classes, self.ignore_index) for t in y]
        losses = model(x, targets)
        return {"loss": sum(losses.values()), **{k: v.detach() for k, v in losses.items()}}
