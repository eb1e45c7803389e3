"""k-means clustering in Euclidean space: k-means++ seeding and Lloyd iterations (Notes: 003 §4, unsupervised
segmentation; the same algorithm with distance 1 - IoU gives YOLO's anchors, `dlkit.ops.anchors.kmeans_anchors`).

k-means minimises the within-cluster sum of squares sum_i ||x_i - mu_{a(i)}||^2 by alternating two steps (Lloyd):
assign every point to its nearest centre, then move every centre to the mean of its points; it stops when no point
changes cluster (a local minimum) or after `max_iter` assignments. k-means++ (Arthur & Vassilvitskii 2007) picks
the first centre uniformly among the points and each next one with probability proportional to D(x)^2, the squared
distance of x to the nearest centre already chosen. A cluster left empty keeps its previous centre.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError


def _check_points(x: Tensor, k: int, what: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ConfigError(f"{what} takes float points [N, D] (one row per point); got {got}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(x):
        raise ConfigError(f"{what}: k must be an int between 1 and the number of points ({len(x)}); got {k!r}")


def squared_distances(x: Tensor, centres: Tensor) -> Tensor:
    """||x_i - c_j||^2 [N, k], as ||x||^2 - 2 x.c + ||c||^2 clamped at 0 (one matrix product)."""
    d = (x * x).sum(1, keepdim=True) - 2 * x @ centres.T + (centres * centres).sum(1)
    return d.clamp_min_(0)


def kmeans_plusplus(x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """k-means++ seeding: k centres [k, D] chosen among the rows of x with probability ~ D(x)^2. Notes: 003 §4."""
    _check_points(x, k, "kmeans_plusplus")
    first = torch.randint(len(x), (1,), generator=generator)
    centres = [x[first[0]]]
    nearest = squared_distances(x, centres[0][None])[:, 0]
    for _ in range(k - 1):
        weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)  # all points on the centres
        pick = torch.multinomial(weights.double().cpu(), 1, generator=generator)[0]
        centres.append(x[pick])
        nearest = torch.minimum(nearest, squared_distances(x, x[pick][None])[:, 0])
    return torch.stack(centres)


def kmeans(x: Tensor, k: int, init: Tensor | None = None, max_iter: int = 100, seed: int = 0
           ) -> tuple[Tensor, Tensor, int]:
    """Lloyd's k-means on x [N, D]: (centres [k, D], labels [N], iterations). Notes: 003 §4.

    `init`: starting centres [k, D]; None seeds them by k-means++ with a generator seeded `seed`. Stops when no
    label changes (or after max_iter assignments); the labels returned are those of the final centres.
    """
    _check_points(x, k, "kmeans")
    if init is None:
        centres = kmeans_plusplus(x, k, torch.Generator().manual_seed(seed))
    else:
        if init.shape != (k, x.shape[1]):
            raise ConfigError(f"kmeans: init must be k centres [{k}, {x.shape[1]}]; got {tuple(init.shape)}")
        centres = init.to(x.dtype).clone()
    if max_iter < 1:
        raise ConfigError(f"kmeans: max_iter must be >= 1; got {max_iter}")
    labels, it = None, 0
    for it in range(1, max_iter + 1):
        new = squared_distances(x, centres).argmin(1)
        if labels is not None and torch.equal(new, labels):
            return centres, labels, it
        labels = new
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        filled = counts > 0  # an empty cluster keeps its centre
        centres = torch.where(filled[:, None], sums / counts.clamp_min(1)[:, None], centres)
    return centres, squared_distances(x, centres).argmin(1), it
