"""Semantic-segmentation metrics accumulated over a data set (Notes: 002 §5.1, 003 §4, 000 §3.11).

Every metric is read off one confusion matrix M summed over all pixels of all images, rows = true class,
columns = predicted class (as dlkit.metrics.classification.confusion_matrix). With TP_c = M_cc,
|y = c| = sum_j M_cj (row) and |y_hat = c| = sum_i M_ic (column):

    IoU_c  = TP_c / (|y_hat = c| + |y = c| - TP_c)        mIoU = nanmean_c IoU_c
    Dice_c = 2 TP_c / (|y_hat = c| + |y = c|)              pixel accuracy = sum_c TP_c / sum M
    mean accuracy = nanmean_c TP_c / |y = c|               fwIoU = sum_c (|y = c| / sum M) IoU_c

Erratum: the notes sum TP_c and the counts over "i = 1..C"; the sum runs over the images i = 1..N, so IoU is
accumulated over the whole data set, not averaged per image. A class absent from both target and prediction
has an undefined IoU (NaN) and is left out of the mean; pixels whose target is `ignore_index` (e.g. 255, VOC's
void border) are never counted.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .classification import confusion_matrix
from .meter import Metric


def _check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int; got {num_classes!r}")


def segmentation_confusion(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """Pixel confusion matrix [C, C] int64 (rows true, columns predicted), ignored pixels dropped. Notes: 002 §5.1.

    `pred` and `target` are class-index maps of one shape, e.g. [N, H, W]; pass logits.argmax(1), not logits.
    """
    _check_num_classes(num_classes)
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape:
        hint = ("it looks like logits [N, C, H, W]: pass logits.argmax(1) or use SegmentationMeter"
                if pred.dim() == target.dim() + 1 else "pass class-index maps of one shape, e.g. [N, H, W]")
        raise ConfigError(f"segmentation_confusion expects pred and target of the same shape; got "
                          f"{tuple(pred.shape)} and {tuple(target.shape)} ({hint})")
    for name, v in (("pred", pred), ("target", target)):
        if v.is_floating_point() or v.is_complex():
            raise ConfigError(f"segmentation_confusion expects integer class indices for {name}; got dtype "
                              f"{v.dtype} (for scores use .argmax(1); for a float label map use .long())")
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        bad = int(target.max()) if target.max() >= num_classes else int(target.min())
        raise ConfigError(f"target must hold class indices in 0..{num_classes - 1}; got value {bad} (if it marks "
                          f"void pixels pass ignore_index={bad}, else raise num_classes)")
    return confusion_matrix(pred, target, num_classes)


def _check_conf(conf: Tensor) -> Tensor:
    conf = torch.as_tensor(conf)
    if conf.dim() != 2 or conf.shape[0] != conf.shape[1]:
        raise ConfigError(f"expected a square confusion matrix [C, C]; got shape {tuple(conf.shape)} "
                          "(build it with segmentation_confusion)")
    return conf.double()


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den with NaN where den == 0 (an undefined per-class value)."""
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, float("nan")))


def iou_per_class(conf: Tensor) -> Tensor:
    """IoU_c = TP_c / (|y_hat = c| + |y = c| - TP_c), float64 [C]; NaN for a class absent from target and prediction.

    Notes: 002 §5.1 (sums over images, see the module's erratum).
    """
    conf = _check_conf(conf)
    tp = conf.diagonal()
    return _ratio(tp, conf.sum(0) + conf.sum(1) - tp)


def mean_iou(conf: Tensor) -> float:
    """mIoU = mean of IoU_c over the classes present in target or prediction (NaN-mean). Notes: 002 §5.1."""
    return torch.nanmean(iou_per_class(conf)).item()


def dice_per_class(conf: Tensor) -> Tensor:
    """Dice (F1) per class: 2 TP_c / (|y_hat = c| + |y = c|), float64 [C], NaN for absent classes.

    Dice = 2 IoU / (1 + IoU); the soft, differentiable form is dlkit.losses.segmentation.dice_loss.
    """
    conf = _check_conf(conf)
    return _ratio(2 * conf.diagonal(), conf.sum(0) + conf.sum(1))


def mean_dice(conf: Tensor) -> float:
    """Mean of dice_per_class over the classes present (NaN-mean)."""
    return torch.nanmean(dice_per_class(conf)).item()


def pixel_accuracy(conf: Tensor) -> float:
    """Fraction of (non-ignored) pixels whose predicted class is the true one: trace(M) / sum(M). Notes: 003 §4."""
    conf = _check_conf(conf)
    total = conf.sum()
    return (conf.trace() / total).item() if total > 0 else float("nan")


def class_accuracy(conf: Tensor) -> Tensor:
    """Per-class pixel accuracy (recall) TP_c / |y = c|, float64 [C]; NaN for a class absent from the target."""
    conf = _check_conf(conf)
    return _ratio(conf.diagonal(), conf.sum(1))


def mean_pixel_accuracy(conf: Tensor) -> float:
    """Mean over the classes present in the target of the per-class pixel accuracy (FCN's "mean accuracy")."""
    return torch.nanmean(class_accuracy(conf)).item()


def frequency_weighted_iou(conf: Tensor) -> float:
    """fwIoU = sum_c (|y = c| / sum M) IoU_c: IoU weighted by each class's share of the true pixels (FCN paper)."""
    conf = _check_conf(conf)
    total = conf.sum()
    if total == 0:
        return float("nan")
    freq = conf.sum(1) / total
    iou = iou_per_class(conf)
    return torch.where(freq > 0, freq * iou, torch.zeros_like(freq)).sum().item()


class SegmentationMeter(Metric):
    """Streaming accumulator of the pixel confusion matrix over batches; `compute()` gives the data-set metrics.

    Notes: 002 §5.1 (IoU accumulated over all images, not averaged per image). `update` takes logits
    [N, C, H, W] (argmax over dim 1) or class indices [N, H, W], and targets [N, H, W]. The matrix lives on
    the device of the first batch; `confusion` can be summed across DDP ranks with all_reduce.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        _check_num_classes(num_classes)
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state("confusion", torch.zeros(num_classes, num_classes, dtype=torch.int64))

    @torch.no_grad()
    def update(self, logits_or_pred: Tensor, target: Tensor) -> None:
        """Add one batch: logits [N, C, ...] or class indices of the target's shape."""
        x = logits_or_pred
        if x.dim() == target.dim() + 1:
            if x.shape[1] != self.num_classes:
                raise ConfigError(f"SegmentationMeter expects logits with {self.num_classes} channels on dim 1; "
                                  f"got shape {tuple(x.shape)} (classes on dim 1, as [N, C, H, W])")
            x = x.argmax(1)
        elif x.shape != target.shape or x.is_floating_point():
            raise ConfigError(f"SegmentationMeter.update expects logits [N, {self.num_classes}, H, W] or integer "
                              f"class indices [N, H, W] with target [N, H, W]; got {tuple(x.shape)} ({x.dtype}) "
                              f"and {tuple(target.shape)}")
        conf = segmentation_confusion(x, target, self.num_classes, self.ignore_index)
        self.confusion = self.confusion.to(conf.device) + conf

    def compute(self) -> dict:
        """pixel_accuracy, mean_accuracy, miou, fwiou (floats) and iou_per_class (list, NaN for absent classes),
        over every rank's batches under DDP."""
        conf = self.synced("confusion").cpu()
        if not conf.any():
            raise ConfigError("SegmentationMeter.compute() before any update, or every pixel so far was ignore_index: "
                              "no pixel to score (is the data empty?)")
        return {
            "pixel_accuracy": pixel_accuracy(conf),
            "mean_accuracy": mean_pixel_accuracy(conf),
            "miou": mean_iou(conf),
            "fwiou": frequency_weighted_iou(conf),
            "iou_per_class": iou_per_class(conf).tolist(),
        }

    def __repr__(self) -> str:
        return (f"SegmentationMeter(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
                f"pixels={int(self.confusion.sum())})")
