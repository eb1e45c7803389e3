"""Figures of panoptic and instance segmentations (Notes: 002 §5.2, §5.3): a predicted `(id_map, segments)` next to
its ground truth; instance masks are drawn as the panoptic segments of their instances (`ops.masks`).

Each segment gets its own colour: the hue is its category's (so a category looks alike in both panels and across
images), the brightness steps with the instance's rank within its category (so two cars differ). Void pixels are
black, things are outlined in white and every segment is labelled with its category's name.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..ops.masks import masks_to_panoptic
from .figures import _save, plt

VOID_COLOUR = (0.0, 0.0, 0.0)
OUTLINE_COLOUR = "white"


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)


def _category(seg: Mapping) -> int:
    return int(seg["category"] if "category" in seg else seg["category_id"])


def segment_colours(segments: Sequence[Mapping]) -> dict[int, tuple[float, float, float]]:
    """{segment id: RGB in [0, 1]}: hue from the category (golden-ratio steps), brightness from the instance's rank
    within its category, so that no two segments of one image share a colour."""
    rank: dict[int, int] = {}
    colours = {}
    for seg in segments:
        c = _category(seg)
        r = rank[c] = rank.get(c, -1) + 1
        hue = (c * 0.6180339887) % 1.0
        value = 0.95 - 0.6 * ((r * 0.3819660113) % 1.0)
        colours[int(seg["id"])] = colorsys.hsv_to_rgb(hue, 0.8, value)
    return colours


def panoptic_rgb(id_map, segments: Sequence[Mapping]) -> np.ndarray:
    """The map [H, W] painted as an RGB image [H, W, 3] in [0, 1] with `segment_colours`; unlisted ids are void."""
    ids = _np(id_map)
    if ids.ndim != 2:
        raise ConfigError(f"panoptic_rgb expects a segment-id map [H, W]; got shape {ids.shape}")
    rgb = np.empty(ids.shape + (3,), dtype=np.float32)
    rgb[:] = VOID_COLOUR
    for sid, colour in segment_colours(segments).items():
        rgb[ids == sid] = colour
    return rgb


def _draw(ax, panoptic, title: str, category_names, thing_categories, image) -> None:
    ids, segments = _np(panoptic[0]), panoptic[1]
    rgb = panoptic_rgb(ids, segments)
    if image is not None:
        img = _np(image).astype(np.float32)
        img = img / 255.0 if img.max() > 1.0 else img
        img = img.transpose(1, 2, 0) if img.ndim == 3 and img.shape[0] in (1, 3) else img
        img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else np.broadcast_to(img, rgb.shape)
        rgb = 0.5 * rgb + 0.5 * img
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    for seg in segments:
        mask = ids == int(seg["id"])
        if not mask.any():
            continue
        c = _category(seg)
        if seg.get("isthing", c in thing_categories):
            h, w = mask.shape  # padded with void so that an outline along the image border closes
            ax.contour(np.arange(-1, w + 1), np.arange(-1, h + 1), np.pad(mask, 1).astype(float), levels=[0.5],
                       colors=OUTLINE_COLOUR, linewidths=0.8)
        ys, xs = np.nonzero(mask)
        k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)  # the segment's pixel nearest its centroid
        name = category_names[c] if category_names is not None and 0 <= c < len(category_names) else str(c)
        ax.set_xlim(-0.5, mask.shape[1] - 0.5)
        ax.set_ylim(mask.shape[0] - 0.5, -0.5)
        ax.text(xs[k], ys[k], name, fontsize=6, color="white", ha="center", va="center",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})


def plot_panoptic(pred, target, path: Path, category_names: Sequence[str] | None = None,
                  thing_categories: Sequence[int] = (), image=None) -> Path:
    """Prediction (left) and ground truth (right), each an `(id_map, segments)` pair; things (segments flagged
    `isthing`, else those of `thing_categories`) outlined, segments named; `image` (optional) shows through."""
    return plot_panoptic_grid([pred], [target], path, category_names, thing_categories,
                              None if image is None else [image])


def plot_panoptic_grid(preds: Sequence, targets: Sequence, path: Path, category_names: Sequence[str] | None = None,
                       thing_categories: Sequence[int] = (), images: Sequence | None = None) -> Path:
    """One row per image: its predicted `(id_map, segments)` (left) and ground truth (right), drawn as
    `plot_panoptic`'s; `category_names[c]` names category c."""
    n = len(preds)
    if n == 0 or len(targets) != n or (images is not None and len(images) != n):
        raise ConfigError(f"plot_panoptic_grid needs one target (and image) per prediction; got {n} predictions, "
                          f"{len(targets)} targets" + ("" if images is None else f", {len(images)} images"))
    for name, xs in (("pred", preds), ("target", targets)):
        for x in xs:
            if not isinstance(x, (tuple, list)) or len(x) != 2:
                raise ConfigError(f"plot_panoptic expects each {name} as an (id_map, segments) pair; got "
                                  f"{type(x).__name__}")
    fig, axes = plt.subplots(n, 2, figsize=(7.0, 3.6 * n), squeeze=False)
    things = {int(c) for c in thing_categories}
    for i in range(n):
        image = None if images is None else images[i]
        _draw(axes[i, 0], preds[i], "prediction", category_names, things, image)
        _draw(axes[i, 1], targets[i], "ground truth", category_names, things, image)
    return _save(fig, path)


def plot_instance_masks(images, targets: Sequence[Mapping], preds: Sequence[Mapping], path: Path,
                        class_names: Sequence[str] | None = None, score_threshold: float = 0.5) -> Path:
    """Instance segmentation, one row per image: the predicted masks of detections scored >= `score_threshold`
    ({masks [N, (1,) H, W] probabilities, labels, scores}, thresholded at 0.5, the more confident on top) beside the
    ground-truth masks ({masks [M, H, W], labels}); each instance its own colour, outlined and named (labels 1..C
    name class_names[label - 1]). Notes: 002 §5.2.1."""
    panels = []
    for pred, target in zip(preds, targets, strict=True):
        masks = pred["masks"][:, 0] if pred["masks"].dim() == 4 else pred["masks"]
        keep = pred["scores"] >= score_threshold
        panels.append((masks_to_panoptic(masks[keep].float(), pred["labels"][keep], pred["scores"][keep]),
                       masks_to_panoptic(target["masks"].float(), target["labels"])))
    names = None if class_names is None else ["background", *class_names]
    return plot_panoptic_grid([p for p, _ in panels], [t for _, t in panels], path, names, images=images)
