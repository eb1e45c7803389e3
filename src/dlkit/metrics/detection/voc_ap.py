"""Precision-recall curves and average precision, VOC style (Notes: 002 §4.1).

A detection is a true positive (TP) when it has the class of a ground-truth box, IoU > rho_IoU with it (strict,
as the notes and the VOC devkit write it; COCO uses >=) and that box is not already taken by a higher-scored
detection (a duplicate is a false positive, FP). Sweeping the confidence threshold rho_min down the sorted
detections gives, after the n-th detection,

    recall_n = TP_n / #GT,    precision_n = TP_n / n,

recall never decreases as rho_min decreases; precision goes up and down. AP is the area under this curve:

- "all" (VOC2010+): with the precision envelope p_env(r) = max_{r' >= r} p(r'), AP = sum_n (r_n - r_{n-1}) p_env(r_n);
- "11point" (VOC2007): AP = (1/11) sum_{r in {0, 0.1, ..., 1}} max_{r' >= r} p(r') (0 if r is never reached);
- "101point" (COCO): the same on r in {0, 0.01, ..., 1}, read as COCOeval does (see coco_eval).

scikit-learn's `average_precision_score` is sum_n (r_n - r_{n-1}) p_n without the envelope and with recall out of
the scored positives only: it equals "all" when every ground truth is detected and the precision at each TP is
already its envelope; otherwise "all" is larger (the envelope only raises precision; a missed box lowers recall).
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ConfigError
from .coco_eval import box_iou_xywh


def _xywh(boxes) -> np.ndarray:
    b = torch.as_tensor(boxes).detach().to("cpu", torch.float64).numpy().reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def precision_recall_curve(scores, is_tp, n_gt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) after each detection, taken by decreasing score (stable on ties).

    Notes: 002 §4.1 (PR curve): `is_tp` flags the detections that are true positives; `n_gt` = #GT boxes.
    """
    scores, is_tp = np.asarray(scores, dtype=np.float64).reshape(-1), np.asarray(is_tp, dtype=bool).reshape(-1)
    if scores.shape != is_tp.shape:
        raise ConfigError(f"precision_recall_curve expects one TP flag per score; got {scores.shape[0]} scores and "
                          f"{is_tp.shape[0]} flags")
    if n_gt < 0 or n_gt < is_tp.sum():
        raise ConfigError(f"n_gt must count every ground-truth box (>= the {int(is_tp.sum())} true positives); "
                          f"got {n_gt}")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(is_tp[order])
    n = np.arange(1, len(tp) + 1)
    recall = tp / n_gt if n_gt else np.zeros(len(tp))
    return tp / n, recall, scores[order]


def average_precision(precision, recall, method: str = "all") -> float:
    """Area under a PR curve (arrays from `precision_recall_curve`): "all" (VOC2010+), "11point" (VOC2007) or
    "101point" (COCO). Notes: 002 §4.1 (AP = area under the PR curve; the interpolation is VOC's / COCO's)."""
    p, r = np.asarray(precision, dtype=np.float64), np.asarray(recall, dtype=np.float64)
    if p.shape != r.shape:
        raise ConfigError(f"precision and recall must have one value per detection; got {p.shape} and {r.shape}")
    if method == "all":
        mp = np.concatenate([[0.0], p, [0.0]])
        mr = np.concatenate([[0.0], r, [r[-1] if len(r) else 0.0]])
        mp = np.maximum.accumulate(mp[::-1])[::-1]  # the envelope
        step = np.flatnonzero(mr[1:] != mr[:-1])
        return float(np.sum((mr[step + 1] - mr[step]) * mp[step + 1]))
    if method in ("11point", "101point"):
        levels = np.linspace(0, 1, 11 if method == "11point" else 101)
        env = np.maximum.accumulate(p[::-1])[::-1] if len(p) else p
        idx = np.searchsorted(r, levels, side="left")  # first point reaching each recall level
        return float(np.mean(np.where(idx < len(r), env[np.minimum(idx, len(r) - 1)] if len(r) else 0.0, 0.0)))
    raise ConfigError(f"method must be 'all', '11point' or '101point'; got {method!r}")


def match_detections(boxes, scores, gt_boxes, iou_threshold: float = 0.5, difficult=None) -> np.ndarray:
    """TP flags (1 TP, 0 FP, -1 ignored) of one image's detections of one class, greedily by decreasing score.

    Notes: 002 §4.1 (TP/FP criterion): each detection takes the gt of highest IoU; it is a TP if that IoU >
    `iou_threshold` and the gt is still free, a FP otherwise (duplicates are FPs). A detection whose best gt is
    `difficult` is ignored (VOC's rule). Boxes are xyxy; flags are returned in the input order.
    """
    boxes, gt = _xywh(boxes), _xywh(gt_boxes)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    difficult = np.zeros(len(gt), bool) if difficult is None else np.asarray(difficult, bool).reshape(-1)
    flags = np.zeros(len(boxes), np.int64)
    if len(gt) == 0 or len(boxes) == 0:
        return flags
    d, g = np.repeat(np.arange(len(boxes)), len(gt)), np.tile(np.arange(len(gt)), len(boxes))
    iou = box_iou_xywh(boxes[d], gt[g], np.zeros(len(d), bool)).reshape(len(boxes), len(gt))
    taken = np.zeros(len(gt), bool)
    for i in np.argsort(-scores, kind="stable"):
        j = int(np.argmax(iou[i]))
        if iou[i, j] > iou_threshold:
            if difficult[j]:
                flags[i] = -1
            elif not taken[j]:
                flags[i], taken[j] = 1, True
    return flags


def voc_average_precision(detections: list[dict], ground_truth: list[dict], iou_threshold: float = 0.5,
                          method: str = "all") -> float:
    """VOC AP of one class over images: per image {boxes [N, 4] xyxy, scores [N]} and {boxes [M, 4], optional
    difficult [M]}; detections matched per image (`match_detections`), ranked over all images. Notes: 002 §4.1."""
    if len(detections) != len(ground_truth):
        raise ConfigError(f"one detection dict and one ground-truth dict per image; got {len(detections)} and "
                          f"{len(ground_truth)}")
    scores, flags, n_gt = [], [], 0
    for det, gt in zip(detections, ground_truth):
        diff = np.asarray(gt.get("difficult", np.zeros(len(gt["boxes"]))), bool).reshape(-1)
        n_gt += int((~diff).sum())
        flags.append(match_detections(det["boxes"], det["scores"], gt["boxes"], iou_threshold, diff))
        scores.append(np.asarray(det["scores"], np.float64).reshape(-1))
    scores, flags = np.concatenate(scores), np.concatenate(flags)
    keep = flags >= 0
    if n_gt == 0:
        raise ConfigError("voc_average_precision needs at least one (non-difficult) ground-truth box of the class")
    p, r, _ = precision_recall_curve(scores[keep], flags[keep] == 1, n_gt)
    return average_precision(p, r, method)
