"""Figures of a detection run: predicted and ground-truth boxes on images, precision-recall curves per class
(Notes: 002 §4.1: a detection is judged against the ground truth by IoU; the PR curve sweeps the score threshold).

Ground-truth boxes are drawn in `GT_COLOUR` (green, thick, so that a prediction on top leaves a green rim),
predictions scored >= the threshold in `PRED_COLOUR` (red) with their class and score; the curves come from
`metrics.detection.voc_ap` (VOC matching at IoU > 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.patches import Rectangle

from ..errors import ConfigError
from .figures import _save, plt

GT_COLOUR = (0.0, 1.0, 0.0)
PRED_COLOUR = (1.0, 0.0, 0.0)
CURVE_COLOUR = "tab:blue"


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)


def _image_hwc(image) -> np.ndarray:
    """[H, W(, C)] floats in [0, 1]: uint8 images are divided by 255, float images (in [0, 1] up to rounding, which
    resizing can overshoot by 1e-7) are clipped."""
    a = _np(image)
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else np.clip(a.astype(np.float32), 0.0, 1.0)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return a


def _name(label: int, class_names: Sequence[str] | None) -> str:
    return class_names[label - 1] if class_names is not None and 1 <= label <= len(class_names) else str(label)


def _image_panels(images, ncols: int, targets: Sequence[Mapping] | None = None):
    """A figure with one panel per image (float [C, H, W] in [0, 1] or uint8) drawn with its ground-truth boxes in
    green; returns (figure, [(index, axes)] of the panels in use)."""
    n = len(images)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.2 * nrows + 0.3), squeeze=False)
    panels = []
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = _image_hwc(images[i])
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        for box in (_np(targets[i]["boxes"]).reshape(-1, 4) if targets is not None else ()):
            x1, y1, x2, y2 = box
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=GT_COLOUR, linewidth=3.0))
        panels.append((i, ax))
    return fig, panels


def plot_detections(images, targets: Sequence[Mapping], preds: Sequence[Mapping], path: Path,
                    class_names: Sequence[str] | None = None, score_threshold: float = 0.5, ncols: int = 4) -> Path:
    """A grid of images (float [C, H, W] in [0, 1] or uint8), each with its ground-truth boxes (green) and the
    predicted boxes scored >= `score_threshold` (red, labelled 'class score'); boxes xyxy in pixels."""
    n = len(images)
    if n == 0 or len(targets) != n or len(preds) != n:
        raise ConfigError(f"plot_detections needs one target and one prediction per image; got {n} images, "
                          f"{len(targets)} targets, {len(preds)} predictions")
    fig, panels = _image_panels(images, ncols, targets)
    for i, ax in panels:
        scores = _np(preds[i]["scores"]).reshape(-1)
        boxes, labels = _np(preds[i]["boxes"]).reshape(-1, 4), _np(preds[i]["labels"]).reshape(-1)
        for box, label, score in zip(boxes[scores >= score_threshold], labels[scores >= score_threshold],
                                     scores[scores >= score_threshold]):
            x1, y1, x2, y2 = box
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=PRED_COLOUR, linewidth=1.2))
            ax.text(x1, y1, f"{_name(int(label), class_names)} {score:.2f}", color="white", fontsize=6,
                    va="bottom", bbox={"facecolor": PRED_COLOUR, "alpha": 0.7, "pad": 1, "linewidth": 0})
    fig.suptitle(f"green: ground truth, red: detections with score >= {score_threshold:g}", fontsize=8)
    return _save(fig, path)


def plot_proposals(images, proposals: Sequence, path: Path, targets: Sequence[Mapping] | None = None,
                   top: int = 30, ncols: int = 4) -> Path:
    """A grid of images, each with its first `top` region proposals (xyxy, best first: the most confident in the
    warmest colour) and its ground-truth boxes in green. Notes: 002 §4.3.2 (proposals need high recall)."""
    n = len(images)
    if n == 0 or len(proposals) != n or (targets is not None and len(targets) != n):
        raise ConfigError(f"plot_proposals needs one proposal set (and target) per image; got {n} images, "
                          f"{len(proposals)} proposal sets, {'no' if targets is None else len(targets)} targets")
    cmap = plt.get_cmap("autumn")
    fig, panels = _image_panels(images, ncols, targets)
    for i, ax in panels:
        boxes = _np(proposals[i]).reshape(-1, 4)
        shown = boxes[:top]
        for rank, (x1, y1, x2, y2) in enumerate(shown):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=0.8,
                                   edgecolor=cmap(rank / max(len(shown) - 1, 1))))
        ax.set_title(f"{len(shown)} of {len(boxes)} proposals", fontsize=8)
    fig.suptitle(f"the first {top} region proposals of each image (red: first), ground truth in green", fontsize=8)
    return _save(fig, path)


def plot_pr_curves(curves: Mapping[str, tuple], path: Path, ap: Mapping[str, float] | None = None,
                   ncols: int = 4) -> Path:
    """One precision-recall panel per class: `curves[name] = (recall, precision)` arrays (one point per ranked
    detection, e.g. from `metrics.detection.precision_recall_curve`), drawn as steps from (0, first precision);
    `ap[name]` goes in the title."""
    if not curves:
        raise ConfigError("plot_pr_curves needs at least one class's (recall, precision) arrays")
    names = list(curves)
    ncols = min(ncols, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        r, p = (np.asarray(v, dtype=np.float64).reshape(-1) for v in curves[name])
        if r.shape != p.shape:
            raise ConfigError(f"class {name!r}: recall and precision need one value per point; got {r.shape} and "
                              f"{p.shape}")
        if len(r):
            ax.step(np.concatenate([[0.0], r]), np.concatenate([[p[0]], p]), where="pre", color=CURVE_COLOUR)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.set_title(name if ap is None or name not in ap else f"{name}: AP {ap[name]:.3f}", fontsize=9)
        ax.tick_params(labelsize=7)
    return _save(fig, path)


@torch.no_grad()
def detection_figures(model, data, out_dir: Path, class_names: Sequence[str] | None = None, n_images: int = 4,
                      show: Callable | None = None) -> list[Path]:
    """Run `model` (eval mode, detection contract) over `data` ((images, targets) batches) and write
    `detections.png` (the first `n_images` images, predictions vs ground truth) and `pr_curves.png` (VOC PR curve
    and all-point AP at IoU 0.5 for each class with ground truth); `masks.png` when the predictions and targets
    carry instance masks (`panoptic_figures.plot_instance_masks`); for a two-stage detector (one with a
    `proposals(images)` method) also `proposals.png`, its region proposals on the same images. `show` maps a batch
    of images to [0, 1] (e.g. `Normalize.inverse`)."""
    from ..metrics.detection.voc_ap import average_precision, match_detections, precision_recall_curve

    out_dir = Path(out_dir)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    shown_images, shown_targets, shown_preds = [], [], []
    flags, scores, n_gt = {}, {}, {}
    try:
        for images, targets in data:
            batch = images.to(device) if isinstance(images, torch.Tensor) else [im.to(device) for im in images]
            preds = [{k: v.detach().cpu() for k, v in p.items()} for p in model(batch)]
            for im, t, p in zip(images, targets, preds):
                if len(shown_images) < n_images:
                    shown_images.append(im.cpu())
                    shown_targets.append(t)
                    shown_preds.append(p)
                gt_labels = _np(t["labels"]).reshape(-1)
                difficult = _np(t["difficult"]).astype(bool) if "difficult" in t else np.zeros(len(gt_labels), bool)
                for c in np.union1d(gt_labels, _np(p["labels"]).reshape(-1)).astype(int):
                    g, d = gt_labels == c, _np(p["labels"]).reshape(-1) == c
                    f = match_detections(_np(p["boxes"])[d], _np(p["scores"])[d], _np(t["boxes"])[g], 0.5,
                                         difficult[g])
                    flags.setdefault(c, []).append(f)
                    scores.setdefault(c, []).append(_np(p["scores"])[d])
                    n_gt[c] = n_gt.get(c, 0) + int((~difficult[g]).sum())
    finally:
        model.train(was_training)
    if not shown_images:
        return []
    inputs = list(shown_images)  # what the model saw (`show` may change them for display)
    if show is not None:
        shown_images = list(show(torch.stack(shown_images))) if all(
            im.shape == shown_images[0].shape for im in shown_images) else shown_images
    paths = [plot_detections(shown_images, shown_targets, shown_preds, out_dir / "detections.png", class_names)]
    if "masks" in shown_preds[0] and all("masks" in t for t in shown_targets):  # instance segmentation
        from .panoptic_figures import plot_instance_masks

        paths.append(plot_instance_masks(shown_images, shown_targets, shown_preds, out_dir / "masks.png",
                                         class_names))
    if callable(getattr(model, "proposals", None)):
        with torch.no_grad():
            proposals = [model.proposals(im[None].to(device))[0].cpu() for im in inputs]
        paths.append(plot_proposals(shown_images, proposals, out_dir / "proposals.png", shown_targets))
    curves, aps = {}, {}
    for c in sorted(c for c in n_gt if n_gt[c] > 0):
        f, s = np.concatenate(flags[c]), np.concatenate(scores[c])
        p, r, _ = precision_recall_curve(s[f >= 0], f[f >= 0] == 1, n_gt[c])
        name = _name(int(c), class_names)
        curves[name], aps[name] = (r, p), average_precision(p, r, "all") if len(p) else 0.0
    if curves:
        paths.append(plot_pr_curves(curves, out_dir / "pr_curves.png", aps))
    return paths
