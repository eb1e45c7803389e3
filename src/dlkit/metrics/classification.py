"""Classification metrics: accuracy, top-k, confusion matrix, precision, recall, F1 (Notes: 003 §2.6, 004 CNN).

The confusion matrix C has rows = true class and columns = predicted class (scikit-learn's convention), so
precision_k = C_kk / sum_i C_ik (column), recall_k = C_kk / sum_j C_kj (row), F1 = 2PR / (P + R).
A class with no predictions (or no samples) gets precision (recall) 0, as scikit-learn's zero_division=0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError


def _check(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ConfigError(f"predictions and targets must have the same shape; got {tuple(pred.shape)} and "
                          f"{tuple(target.shape)} (pass class indices, e.g. logits.argmax(1), not logits)")


def accuracy(pred: Tensor, target: Tensor) -> float:
    """Fraction of predictions equal to the targets (class indices of the same shape)."""
    _check(pred, target)
    return (pred == target).float().mean().item() if target.numel() else float("nan")


def topk_accuracy(logits: Tensor, target: Tensor, k: int = 5) -> float:
    """Fraction of samples whose target is among the k highest scores (top-5 error = 1 - this; 003 §3)."""
    if logits.dim() != 2 or logits.shape[0] != target.shape[0]:
        raise ConfigError(f"topk_accuracy expects logits [N, classes] and targets [N]; got {tuple(logits.shape)} "
                          f"and {tuple(target.shape)}")
    if not 1 <= k <= logits.shape[1]:
        raise ConfigError(f"k must be in 1..{logits.shape[1]} (the number of classes); got {k}")
    top = logits.topk(k, dim=1).indices
    return (top == target[:, None]).any(1).float().mean().item()


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Counts C[t, p] of samples of true class t predicted as p, [num_classes, num_classes] int64."""
    _check(pred, target)
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    for name, v in (("predictions", pred), ("targets", target)):
        if v.numel() and (v.min() < 0 or v.max() >= num_classes):
            raise ConfigError(f"{name} must be class indices in 0..{num_classes - 1}; got values "
                              f"{int(v.min())}..{int(v.max())} (raise num_classes?)")
    flat = target * num_classes + pred
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def precision_recall_f1(cm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class precision, recall and F1 from a confusion matrix (rows true, columns predicted)."""
    cm = cm.double()
    tp = cm.diagonal()
    pred_pos, true_pos = cm.sum(0), cm.sum(1)
    precision = torch.where(pred_pos > 0, tp / pred_pos.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(true_pos > 0, tp / true_pos.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(tp))
    return precision, recall, f1


def macro_f1(cm: Tensor) -> float:
    """Unweighted mean of the per-class F1 scores."""
    return precision_recall_f1(cm)[2].mean().item()
