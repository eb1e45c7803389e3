"""Figures of a run: training curves, confusion matrix, image grids, line plots (matplotlib, no display).

Every function writes one PNG and returns its path; parents are created. The Agg backend is selected so
figures render on machines without a screen.
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ..errors import ConfigError  # noqa: E402


def _save(fig, path: Path, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


METRICS_COLUMNS = ("step", "name", "value")  # what read_metrics needs of the logger's step,epoch,wall_time,name,value


def read_metrics(metrics_csv: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The long-format metrics.csv as {name: (steps, values)}; a file that is not one (another program's CSV, a
    damaged file) raises ConfigError naming it and the first bad line."""
    metrics_csv = Path(metrics_csv)
    fix = ("it was not written by `dlkit run` or is damaged: move it out of the run folder (the report then has no "
           "curves) or run the recipe again")
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    header: list[str] | None = None
    reader = None
    try:
        with open(metrics_csv, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            if all(c in header for c in METRICS_COLUMNS):
                i, n, v = (header.index(c) for c in METRICS_COLUMNS)
                for row in reader:
                    if not row:  # a blank line
                        continue
                    series[row[n]].append((int(row[i]), float(row[v])))
    except (ValueError, IndexError, csv.Error, OverflowError) as e:  # UnicodeDecodeError is a ValueError
        detail = " ".join(str(e).split())[:120] or type(e).__name__
        where = f"line {reader.line_num}" if reader is not None and reader.line_num else "the file"
        raise ConfigError(f"{metrics_csv}: {where} is not a row of step (an integer), name and value (a number) "
                          f"({detail}); {fix}") from None
    except OSError as e:
        raise ConfigError(f"{metrics_csv} cannot be read ({e.strerror or e}); check its permissions") from None
    if header and not all(c in header for c in METRICS_COLUMNS):
        missing = [c for c in METRICS_COLUMNS if c not in header]
        raise ConfigError(f"{metrics_csv}: expected a dlkit metrics file with the columns step, epoch, wall_time, "
                          f"name, value; got the header {str(header)[:120]} (missing {', '.join(missing)}); {fix}")
    return {k: (np.array([s for s, _ in v]), np.array([x for _, x in v])) for k, v in series.items()}


def plot_curves(metrics_csv: Path, out_dir: Path) -> list[Path]:
    """One figure per metric (loss, accuracy, ...) with its train/val/test series against the step."""
    series = read_metrics(metrics_csv)
    groups: dict[str, list[str]] = defaultdict(list)
    for name in series:
        split, _, metric = name.rpartition("/")
        if metric in ("lr", "grad_norm", "seconds") or not split:
            metric = name.replace("/", "_")
        groups[metric].append(name)
    paths = []
    for metric, names in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for name in sorted(names):
            steps, values = series[name]
            finite = np.isfinite(values)  # a diverged run logs nan or inf: plot the finite points
            steps, values = steps[finite], values[finite]
            style = "-" if len(steps) > 20 else "o-"
            ax.plot(steps, values, style, label=name, markersize=3)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        if metric == "loss" and all((series[n][1][np.isfinite(series[n][1])] > 0).all() for n in names):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(_save(fig, Path(out_dir) / f"curve_{re.sub(r'[^A-Za-z0-9_.-]', '_', metric)[:80]}.png"))
    return paths


def plot_lines(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: Path, xlabel: str,
               ylabel: str, title: str = "", logy: bool = False) -> Path:
    """Several named (x, y) curves on one axis."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix (rows true, columns predicted) with counts in the cells."""
    cm = np.asarray(cm)
    k = len(class_names)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    return _save(fig, path)


def _to_hwc(img) -> np.ndarray:
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def plot_image_grid(images, path: Path, titles: Sequence[str] | None = None, correct: Sequence[bool] | None = None,
                    ncols: int = 8) -> Path:
    """A grid of images ([N, C, H, W], [N, H, W] or a list), each scaled to [0, 1]; wrong ones titled red."""
    images = [np.asarray(im.detach().cpu() if hasattr(im, "detach") else im) for im in images]
    n = len(images)
    ncols = min(ncols, n) or 1
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.4 * ncols, 1.55 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        a = _to_hwc(images[i])
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None)
        if titles is not None:
            color = "black" if correct is None or correct[i] else "red"
            ax.set_title(titles[i], fontsize=7, color=color)
    return _save(fig, path)


def plot_decision_regions(predict, x, t, path: Path, title: str = "", resolution: int = 200) -> Path:
    """Class regions of `predict` (a function of an [M, 2] array returning scores or labels) over the
    bounding box of 2-D points `x`, with the points coloured by their targets `t`."""
    x, t = np.asarray(x, dtype=np.float64), np.asarray(t)
    lo, hi = x.min(0) - 0.5, x.max(0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    z = np.asarray(predict(np.c_[gx.ravel(), gy.ravel()]), dtype=np.float64).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.contourf(gx, gy, z, levels=20, cmap="coolwarm", alpha=0.6)
    ax.scatter(x[:, 0], x[:, 1], c=t, cmap="coolwarm", edgecolors="k", s=60)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_paths_on_contour(f, paths: Mapping[str, np.ndarray], path: Path, xlim: tuple[float, float],
                          ylim: tuple[float, float], title: str = "", minimum: tuple[float, float] | None = None,
                          resolution: int = 300) -> Path:
    """Trajectories (each [T, 2]) drawn over log-spaced contours of a 2-D function `f` (array [..., 2] -> [...])."""
    gx, gy = np.meshgrid(np.linspace(*xlim, resolution), np.linspace(*ylim, resolution))
    z = np.asarray(f(np.stack([gx, gy], -1)), dtype=np.float64)
    levels = np.logspace(np.log10(max(z.min(), 1e-3)), np.log10(z.max()), 25)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.contour(gx, gy, z, levels=levels, cmap="Greys", linewidths=0.6)
    for name, p in paths.items():
        p = np.asarray(p)
        ax.plot(p[:, 0], p[:, 1], ".-", label=name, markersize=2.5, linewidth=1)
    if minimum is not None:
        ax.plot(*minimum, "k*", markersize=12)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_attention_maps(weights: Sequence[np.ndarray], sources: Sequence[Sequence[str]],
                        targets: Sequence[Sequence[str]], path: Path) -> Path:
    """Alignment heat maps: one [T, S] attention matrix per example, target tokens down, source tokens across."""
    n = len(weights)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, w, src, tgt in zip(axes[0], weights, sources, targets):
        ax.imshow(np.asarray(w), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(src)), src, fontsize=7)
        ax.set_yticks(range(len(tgt)), tgt, fontsize=7)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
    return _save(fig, path)


def label_colours(num_classes: int) -> np.ndarray:
    """A distinct RGB colour per class id ([num_classes, 3] floats in [0, 1], matplotlib's tab20 cycle)."""
    cmap = plt.get_cmap("tab20")
    return np.array([cmap(i % 20)[:3] for i in range(num_classes)], dtype=np.float32)


def colourise(labels, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """A label map [H, W] as an RGB image [H, W, 3] in `label_colours`; ignored and out-of-range ids black."""
    labels = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).astype(np.int64)
    colours = np.concatenate([label_colours(num_classes), np.zeros((1, 3), np.float32)])
    ids = np.where((labels < 0) | (labels >= num_classes) | (labels == (-1 if ignore_index is None
                                                                          else ignore_index)), num_classes, labels)
    return colours[ids]


def plot_segmentations(images, targets, preds, class_names: Sequence[str], path: Path,
                       ignore_index: int | None = None) -> Path:
    """Rows of image | ground truth | prediction (black = ignored label), with a legend of the class colours."""
    k, n = len(class_names), len(images)
    fig, axes = plt.subplots(n, 3, figsize=(9, 2.6 * n + 0.6), squeeze=False)
    for i in range(n):
        panels = (_to_hwc(np.asarray(images[i].detach().cpu())), colourise(targets[i], k, ignore_index),
                  colourise(preds[i], k, ignore_index))
        for ax, panel, title in zip(axes[i], panels, ("image", "ground truth", "prediction")):
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest")
            ax.axis("off")
            if i == 0:
                ax.set_title(title, fontsize=9)
    handles = [Patch(color=c, label=name) for c, name in zip(label_colours(k), class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(k, 6), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.5 / (2.6 * n + 0.6) * (1 + (k > 6)), 1, 1))
    return _save(fig, path, tight=False)


def plot_bars(values: Mapping[str, float], path: Path, xlabel: str, title: str = "",
              xlim: tuple[float, float] | None = None) -> Path:
    """Horizontal bars, one per named value (e.g. the IoU of each class, the accuracies of a comparison), with the
    value printed; `xlim` zooms on close values (default: from 0 to at least 1)."""
    names, vals = list(values), [float(v) for v in values.values()]
    fig, ax = plt.subplots(figsize=(6, 0.32 * len(names) + 1.2))
    ax.barh(range(len(names)), np.nan_to_num(vals), color="tab:blue")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    lo, hi = xlim if xlim is not None else (0.0, max(1.0, max(np.nan_to_num(vals), default=0) * 1.15))
    for i, v in enumerate(vals):
        ax.text((lo if v != v else max(v, lo)) + 0.01 * (hi - lo), i, "n/a" if v != v else f"{v:.3f}", va="center",
                fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_xlim(lo, hi)
    if title:
        ax.set_title(title)
    return _save(fig, path)
