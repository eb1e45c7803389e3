"""Unsupervised segmentation by k-means pixel clustering, evaluated after Hungarian matching (Notes: 003 §4).

The notes' unsupervised segmentation groups similar-looking pixels without any training data. Each pixel is a
feature vector, its colour (r, g, b) in [0, 1] ("rgb") or its colour and position (r, g, b, w y / (H - 1),
w x / (W - 1)) ("rgbxy", w = `xy_weight`), and k-means (`dlkit.ops.kmeans`) groups them into k clusters:

- `per_image=False` (the data-set protocol of unsupervised segmentation, e.g. IIC): one k-means over the pixels
  of all the images (fitted on `sample` pixels drawn uniformly, then every pixel goes to its nearest centre), so
  a cluster means the same thing in every image;
- `per_image=True`: one k-means per image (its cluster ids are arbitrary per image).

Clusters carry no class names. To score them, `cluster_confusion` counts pixels per (class, cluster), and
`match_clusters_to_classes` picks the one-to-one cluster -> class map with the most pixels on the diagonal
(the Hungarian method, `dlkit.ops.assignment.linear_sum_assignment` on the negated counts); the relabelled map is
then scored by the usual mIoU (`dlkit.metrics.segmentation`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from ..metrics.segmentation import segmentation_confusion
from ..ops.assignment import linear_sum_assignment
from ..ops.kmeans import kmeans, squared_distances

FEATURES = ("rgb", "rgbxy")


def pixel_features(images: Tensor, features: str = "rgb", xy_weight: float = 1.0) -> Tensor:
    """Per-pixel features [N, H W, 3 or 5] (float64) of images [N, 3, H, W] (uint8 0-255 or float 0-1)."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"kmeans segmentation expects RGB images [N, 3, H, W]; got {got} (add a batch dimension "
                          f"with x[None] or repeat a grey channel 3 times)")
    if features not in FEATURES:
        raise ConfigError(f"features must be one of {FEATURES}; got {features!r}")
    n, _, h, w = images.shape
    rgb = images.double() / 255 if not images.is_floating_point() else images.double()
    feats = rgb.flatten(2).transpose(1, 2)  # [N, H W, 3]
    if features == "rgbxy":
        ys = torch.linspace(0, 1, h, dtype=torch.float64) if h > 1 else torch.zeros(1, dtype=torch.float64)
        xs = torch.linspace(0, 1, w, dtype=torch.float64) if w > 1 else torch.zeros(1, dtype=torch.float64)
        yx = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(1, h * w, 2) * xy_weight
        feats = torch.cat([feats, yx.expand(n, -1, -1)], dim=2)
    return feats


def kmeans_segmentation(images: Tensor, k: int, features: str = "rgb", per_image: bool = False,
                        xy_weight: float = 1.0, sample: int | None = 100_000, max_iter: int = 100,
                        seed: int = 0) -> Tensor:
    """Cluster ids [N, H, W] (0..k-1) of the pixels of images [N, 3, H, W] by k-means on `features`. Notes: 003 §4.

    per_image=False: one k-means over all the images' pixels (fitted on `sample` of them, None: all), the same
    clusters everywhere; True: one per image (fitted on up to `sample` of its pixels). k-means++ seeding, seeded.
    """
    feats = pixel_features(images, features, xy_weight)
    n, _, h, w = images.shape
    gen = torch.Generator().manual_seed(seed)

    def fit(points: Tensor) -> Tensor:
        if sample is not None and len(points) > sample:
            points = points[torch.randperm(len(points), generator=gen)[:sample]]
        if k > len(points):
            raise ConfigError(f"kmeans segmentation: k = {k} clusters need at least k pixels; got {len(points)}")
        return kmeans(points, k, max_iter=max_iter, seed=int(torch.randint(2**31, (1,), generator=gen)))[0]

    if per_image:
        return torch.stack([squared_distances(f, fit(f)).argmin(1) for f in feats]).view(n, h, w)
    centres = fit(feats.reshape(-1, feats.shape[-1]))
    return torch.stack([squared_distances(f, centres).argmin(1) for f in feats]).view(n, h, w)


def cluster_confusion(clusters: Tensor, target: Tensor, k: int, num_classes: int,
                      ignore_index: int | None = None) -> Tensor:
    """Pixel counts [num_classes, k]: row = true class, column = cluster; pixels of `ignore_index` dropped."""
    size = max(k, num_classes)
    conf = segmentation_confusion(clusters.long(), target.long(), size, ignore_index)
    if conf[num_classes:].sum() > 0:
        raise ConfigError(f"target holds class ids >= num_classes = {num_classes}; pass ignore_index for void")
    return conf[:num_classes, :k]


def match_clusters_to_classes(confusion: Tensor) -> Tensor:
    """cluster -> class map [k] (long; -1 for a cluster left unmatched when k > C) maximising the matched pixels
    sum_j confusion[map[j], j] of a [C classes, k clusters] count matrix: the Hungarian method. Notes: 003 §4."""
    confusion = torch.as_tensor(confusion)
    if confusion.dim() != 2:
        raise ConfigError(f"match_clusters_to_classes expects counts [classes, clusters]; got shape "
                          f"{tuple(confusion.shape)} (build them with cluster_confusion)")
    classes, clusters = linear_sum_assignment(-confusion.double())
    mapping = torch.full((confusion.shape[1],), -1, dtype=torch.long)
    mapping[clusters] = classes
    return mapping


def relabel(clusters: Tensor, mapping: Tensor) -> Tensor:
    """Class map: every cluster id j replaced by mapping[j] (-1 where a cluster has no class)."""
    return mapping[clusters.long()]
