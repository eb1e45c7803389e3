"""DETR's decoder attention drawn over the image (Notes: 002 §4.3.6 remark "Visualization": the decoder attends to
the objects' extremities, Fig. 4.22).

For a few images, the object queries with the highest scores (best object class of the softmax, no-object dropped);
per query, the last decoder layer's cross-attention over the stride-32 grid (`model.cross_attention_maps`, averaged
over the heads) is laid over the image in `ATTENTION_CMAP` (each map scaled to its own maximum, drawn as the
grid's blocks, not interpolated) with the query's predicted box. The first column shows the image with all the
chosen queries' boxes, each query in its own colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.patches import Rectangle

from ..errors import ConfigError
from ..ops.boxes import box_convert
from .detection_figures import _image_hwc, _name, _np
from .figures import _save, label_colours, plt

ATTENTION_CMAP = "viridis"
ATTENTION_ALPHA = 0.6


def plot_query_attention(images: Sequence, maps: Sequence, boxes: Sequence, titles: Sequence[Sequence[str]],
                         path: Path, stride: int = 32) -> Path:
    """One row per image: the image with every query's box, then one panel per query with its attention map
    [h, w] (cell (i, j) covering pixels [i stride, (i + 1) stride) x [j stride, (j + 1) stride)) over the image and
    its box. images: [C, H, W] in [0, 1]; maps: [k, h, w] per image; boxes: [k, 4] xyxy pixels; titles: k each."""
    n = len(images)
    if n == 0 or not len(maps) == len(boxes) == len(titles) == n:
        raise ConfigError(f"plot_query_attention needs maps, boxes and titles for each image; got {n} images, "
                          f"{len(maps)} maps, {len(boxes)} box sets, {len(titles)} title sets")
    k = max(len(m) for m in maps)
    colours = label_colours(max(k, 1))
    fig, axes = plt.subplots(n, 1 + k, figsize=(2.6 * (1 + k), 2.6 * n + 0.3), squeeze=False)
    for row, (image, m, bx, names) in enumerate(zip(images, maps, boxes, titles)):
        img = _image_hwc(image)
        h_img, w_img = img.shape[:2]
        m, bx = _np(m).reshape(-1, *_np(m).shape[-2:]), _np(bx).reshape(-1, 4)
        if not len(m) == len(bx) == len(names):
            raise ConfigError(f"image {row}: {len(m)} maps, {len(bx)} boxes and {len(names)} titles; one each per "
                              f"query")
        for ax in axes[row]:
            ax.axis("off")
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        axes[row, 0].set_title("top queries", fontsize=8)
        for q, (a, box, name) in enumerate(zip(m, bx, names)):
            ax = axes[row, 1 + q]
            gh, gw = a.shape
            ax.imshow(a / max(float(a.max()), 1e-12), cmap=ATTENTION_CMAP, vmin=0, vmax=1, alpha=ATTENTION_ALPHA,
                      interpolation="nearest", extent=(0, gw * stride, gh * stride, 0))
            ax.set_xlim(0, w_img)
            ax.set_ylim(h_img, 0)
            ax.set_title(name, fontsize=8)
            for target in (ax, axes[row, 0]):
                x1, y1, x2, y2 = box
                target.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colours[q],
                                           linewidth=1.5))
    fig.suptitle("DETR: last decoder layer's cross-attention of the highest-scoring object queries", fontsize=9)
    return _save(fig, path)


@torch.no_grad()
def detr_attention_figures(model, data, out_dir: Path, class_names: Sequence[str] | None = None,
                           n_images: int = 3, top_k: int = 3) -> list[Path]:
    """`detr_attention.png` for the first `n_images` images of `data` ((images, targets) batches): the `top_k`
    highest-scoring queries of each, their attention maps and boxes (`plot_query_attention`). The model needs
    `head_outputs`, `cross_attention_maps` and `stride` (`models.detection.detr.DETR`); it runs in eval mode and
    its mode is restored."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    images, maps, boxes, titles = [], [], [], []
    try:
        for batch, _ in data:
            batch = list(batch)[: n_images - len(images)]
            x = [im.to(device) for im in batch]
            logits, pred_boxes, sizes = model.head_outputs(x)
            attention = model.cross_attention_maps(x)
            scores, labels = logits[-1].softmax(-1)[..., :-1].max(-1)
            for i, im in enumerate(batch):
                h, w = sizes[i].tolist()
                top = scores[i].argsort(descending=True)[:top_k]
                xyxy = box_convert(pred_boxes[-1, i, top], "cxcywh", "xyxy") * torch.tensor([w, h, w, h],
                                                                                             device=device)
                images.append(im.cpu())
                maps.append(attention[i, top].cpu())
                boxes.append(xyxy.cpu())
                titles.append([f"query {int(q)}: {_name(int(labels[i, q]) + 1, class_names)} "
                               f"{float(scores[i, q]):.2f}" for q in top])
            if len(images) >= n_images:
                break
    finally:
        model.train(was_training)
    if not images:
        return []
    return [plot_query_attention(images, maps, boxes, titles, Path(out_dir) / "detr_attention.png",
                                 getattr(model, "stride", 32))]
