"""Anchors: reference boxes on a feature map's stride grid, and anchor shapes learned by k-means
(Notes: 002 §4.3.2 Faster R-CNN, §4.3.4 YOLOv2/v3 learned anchors; 000 §3.12.1 "Anchor box").

Grid anchors (Faster R-CNN, 002 §4.3.2): k = len(sizes) x len(aspect_ratios) boxes per feature-map location, centred
on the location times the stride, of area size^2 and ratio h / w = r (so w = size / sqrt(r), h = size sqrt(r)).
`AnchorGenerator` equals torchvision's `AnchorGenerator` (which rounds the zero-centred boxes to integers; pass
`rounded=False` for the exact areas and ratios). The order is location-major (row by row), then ratio, then size.

Learned anchors (YOLOv2, 002 §4.3.4, 000 §3.12.1): k-means on the (w, h) of the training boxes with the distance
`d = 1 - IoU` of the two boxes placed at a common centre, so that a large box does not dominate as with the
Euclidean distance. YOLOv2 uses k = 5, YOLOv3 k = 9 (three per scale, by area).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float], rounded: bool = True,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """Zero-centred xyxy anchors [len(aspect_ratios) * len(sizes), 4]: for each ratio r = h / w, for each size s,
    the box of width s / sqrt(r) and height s sqrt(r); `rounded` rounds the corners as torchvision does."""
    if not sizes or not aspect_ratios or min(sizes) <= 0 or min(aspect_ratios) <= 0:
        raise ConfigError(f"anchor sizes and aspect ratios must be non-empty and positive; got sizes {tuple(sizes)}, "
                          f"aspect_ratios {tuple(aspect_ratios)}")
    s = torch.as_tensor(sizes, dtype=dtype)
    h_ratio = torch.as_tensor(aspect_ratios, dtype=dtype).sqrt()
    w = (s[None, :] / h_ratio[:, None]).reshape(-1)
    h = (s[None, :] * h_ratio[:, None]).reshape(-1)
    anchors = torch.stack([-w, -h, w, h], dim=1) / 2
    return anchors.round() if rounded else anchors


def grid_anchors(cell: Tensor, grid_size: Sequence[int], stride: Sequence[float], offset: float = 0.0) -> Tensor:
    """All anchors [H * W * A, 4] of a feature map of `grid_size` (H, W) with `stride` (sy, sx) in pixels: the A
    `cell` anchors moved to ((j + offset) sx, (i + offset) sy) for every location (i, j), row by row."""
    (gh, gw), (sy, sx) = grid_size, stride
    ys = (torch.arange(gh, device=cell.device) + offset).to(cell.dtype) * sy
    xs = (torch.arange(gw, device=cell.device) + offset).to(cell.dtype) * sx
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([x, y, x, y], dim=-1).reshape(-1, 1, 4)
    return (shifts + cell[None]).reshape(-1, 4)


class AnchorGenerator(nn.Module):
    """Anchors of every feature level for images [B, C, H, W] and feature maps [B, C_l, H_l, W_l] (Notes: 002
    §4.3.2). `sizes[l]` and `aspect_ratios[l]` configure level l; the stride of a level is the image size over
    the feature size (integer division). Returns one tensor [sum_l H_l W_l A_l, 4], shared by every image."""

    def __init__(self, sizes: Sequence[Sequence[float]] = ((128, 256, 512),),
                 aspect_ratios: Sequence[Sequence[float]] = ((0.5, 1.0, 2.0),), rounded: bool = True,
                 offset: float = 0.0):
        super().__init__()
        if len(aspect_ratios) == 1 and len(sizes) > 1:
            aspect_ratios = tuple(aspect_ratios) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ConfigError(f"one tuple of sizes and one of aspect ratios per feature level; got {len(sizes)} "
                              f"levels of sizes and {len(aspect_ratios)} of aspect ratios")
        self.sizes, self.aspect_ratios = tuple(map(tuple, sizes)), tuple(map(tuple, aspect_ratios))
        self.rounded, self.offset = rounded, offset

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def forward(self, images: Tensor, features: Sequence[Tensor]) -> Tensor:
        if len(features) != len(self.sizes):
            raise ConfigError(f"AnchorGenerator was configured for {len(self.sizes)} feature levels; got "
                              f"{len(features)} feature maps")
        height, width = images.shape[-2:]
        dtype = features[0].dtype if features[0].is_floating_point() else torch.float32
        out = []
        for f, sizes, ratios in zip(features, self.sizes, self.aspect_ratios):
            gh, gw = f.shape[-2:]
            cell = cell_anchors(sizes, ratios, self.rounded, dtype).to(f.device)
            out.append(grid_anchors(cell, (gh, gw), (height // gh, width // gw), self.offset))
        return torch.cat(out)


def wh_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU [N, M] of box shapes a [N, 2] and b [M, 2] (w, h) placed at a common centre (Notes: 000 §3.12.1)."""
    inter = torch.minimum(a[:, None, 0], b[None, :, 0]) * torch.minimum(a[:, None, 1], b[None, :, 1])
    return inter / (a[:, None, 0] * a[:, None, 1] + b[None, :, 0] * b[None, :, 1] - inter)


def kmeans_anchors(wh: Tensor, k: int, iters: int = 300, seed: int = 0, centre: str = "mean") -> Tensor:
    """k anchor shapes [k, 2] (w, h), sorted by area, by k-means on box shapes `wh` [N, 2] with distance
    1 - IoU (Notes: 002 §4.3.4 YOLOv2, 000 §3.12.1). Seeded k-means++ start (deterministic for a `seed`); each
    centroid moves to the `centre` ("mean" or "median") of its boxes; stops when no box changes cluster."""
    if not isinstance(wh, Tensor) or wh.dim() != 2 or wh.shape[1] != 2:
        got = tuple(wh.shape) if isinstance(wh, Tensor) else type(wh).__name__
        raise ConfigError(f"kmeans_anchors takes box shapes [N, 2] (w, h); got {got}. From xyxy boxes: "
                          "boxes[:, 2:] - boxes[:, :2]")
    if not 1 <= k <= len(wh):
        raise ConfigError(f"k must be between 1 and the number of boxes ({len(wh)}); got {k}")
    if centre not in ("mean", "median"):
        raise ConfigError(f"centre must be 'mean' or 'median'; got {centre!r}")
    dtype, wh = wh.dtype if wh.is_floating_point() else torch.get_default_dtype(), wh.double()
    if (wh <= 0).any():
        raise ConfigError("kmeans_anchors needs boxes of positive width and height; remove empty boxes first")
    gen = torch.Generator().manual_seed(seed)
    centroids = wh[torch.randint(len(wh), (1,), generator=gen)]
    for _ in range(k - 1):  # k-means++: the next centroid far (in 1 - IoU) from those chosen
        d = (1 - wh_iou(wh, centroids)).min(dim=1).values
        weights = d**2 if d.sum() > 0 else torch.ones_like(d)
        centroids = torch.cat([centroids, wh[torch.multinomial(weights.cpu(), 1, generator=gen)]])
    assign = None
    for _ in range(iters):
        new = (1 - wh_iou(wh, centroids)).argmin(dim=1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        for c in range(k):  # a loop over clusters, not boxes
            members = wh[assign == c]
            if len(members) == 0:  # an empty cluster restarts at the box farthest from its centroid
                far = (1 - wh_iou(wh, centroids)).gather(1, assign[:, None]).argmax()
                centroids[c] = wh[far]
            else:
                centroids[c] = members.mean(0) if centre == "mean" else members.median(0).values
    return centroids[torch.argsort(centroids.prod(dim=1))].to(dtype)
