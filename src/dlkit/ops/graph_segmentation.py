"""Felzenszwalb-Huttenlocher graph-based over-segmentation, the superpixels of selective search (Notes: 002 §4.3.2;
Felzenszwalb and Huttenlocher, "Efficient graph-based image segmentation", IJCV 2004).

The image is a graph: one node per pixel, an edge to each of its 8 neighbours weighted by the Euclidean distance of
the (Gaussian-smoothed) colours. Edges are taken in ascending order of weight (Kruskal's order); an edge (a, b)
between two components C_a, C_b merges them when its weight w satisfies

    w < min(Int(C_a) + k / |C_a|, Int(C_b) + k / |C_b|),

Int(C) being the largest weight of C's minimum spanning tree (the weight of the edge that last grew C, since edges
come in ascending order) and k the `scale` (larger: fewer, larger segments). A second pass over the same sorted
edges then merges every pair of neighbouring components of which one has fewer than `min_size` pixels.

Conventions are those of `skimage.segmentation.felzenszwalb` (the reference the tests compare against, whose
labels this equals pixel for pixel on the test images):

- the image is float in [0, 1] (uint8 is divided by 255), and `scale` is the paper's k for 0..255 intensities: the
  thresholds use k / 255 on the [0, 1] values;
- smoothing is a Gaussian of standard deviation `sigma` pixels on each channel separately, truncated at 4 sigma,
  with mirror ('reflect', d c b a | a b c d) borders: scipy.ndimage.gaussian_filter's arithmetic, re-done in numpy;
- the edge order is numpy's default argsort of the weights listed right, down, down-right, up-right neighbours
  (ties between equal weights are then broken as skimage does), and the thresholds Int(C) + k/|C| are rounded to
  float32 before the comparison, as skimage's Cython stores them;
- labels 0..n-1 number the segments in the order of their first pixel in raster order.

Everything but the union-find loop is vectorised; the loop is plain Python over lists with path halving and union
by size, and the `min_size` pass only visits the edges that touch a component smaller than `min_size` after the
first pass (any other edge could never merge anything, since components only grow).
"""

from __future__ import annotations

from array import array

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The normalised Gaussian weights exp(-x^2 / (2 sigma^2)) for x in -r..r, r = int(truncate sigma + 0.5)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    return phi / phi.sum()


def gaussian_smooth(image: np.ndarray, sigma: float, axes: tuple[int, ...] = (0, 1),
                    truncate: float = 4.0) -> np.ndarray:
    """Gaussian smoothing (float64) along `axes` one after another, mirror borders (d c b a | a b c d), the same
    floating-point operations in the same order as scipy.ndimage.gaussian_filter (so the same bits): for each output
    value, `x[i] w[0]` then `+ (x[i - j] + x[i + j]) w[j]` for j = r, r - 1, ..., 1."""
    out = np.asarray(image, dtype=np.float64)
    if sigma <= 1e-15:
        return out.copy()
    w = gaussian_kernel1d(sigma, truncate)
    r = len(w) // 2
    for axis in axes:
        n = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="symmetric")

        def window(start: int, p=p, axis=axis, n=n) -> np.ndarray:
            index = [slice(None)] * p.ndim
            index[axis] = slice(start, start + n)
            return p[tuple(index)]

        acc = window(r) * w[r]
        for j in range(r, 0, -1):
            acc += (window(r - j) + window(r + j)) * w[r - j]
        out = acc
    return out


def grid_edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8-connected grid graph of an image [H, W, C]: edges [E, 2] (flat pixel indices) and their weights [E],
    the Euclidean distance of the two pixels' values, listed right, down, down-right, up-right neighbours."""
    h, w = image.shape[:2]
    d_down = image[1:, :, :] - image[:h - 1, :, :]
    d_right = image[:, 1:, :] - image[:, :w - 1, :]
    d_dright = image[1:, 1:, :] - image[:h - 1, :w - 1, :]
    d_uright = image[1:, :w - 1, :] - image[:h - 1, 1:, :]
    costs = np.hstack([np.sqrt(np.sum(d * d, axis=-1)).ravel() for d in (d_right, d_down, d_dright, d_uright)])
    idx = np.arange(h * w, dtype=np.intp).reshape(h, w)
    edges = np.vstack([
        np.c_[idx[:, 1:].ravel(), idx[:, :w - 1].ravel()],
        np.c_[idx[1:, :].ravel(), idx[:h - 1, :].ravel()],
        np.c_[idx[1:, 1:].ravel(), idx[:h - 1, :w - 1].ravel()],
        np.c_[idx[:h - 1, 1:].ravel(), idx[1:, :w - 1].ravel()],
    ])
    return edges, costs.astype(np.float64)


def _as_hwc(image) -> np.ndarray:
    """A [C, H, W] or [H, W] tensor / array as float64 [H, W, C]; uint8 is divided by 255."""
    x = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or min(x.shape) < 1:
        raise ConfigError(f"felzenszwalb needs an image [C, H, W] or [H, W]; got shape {tuple(x.shape)}")
    if x.dtype == np.uint8:
        x = x / 255.0
    elif not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(f"felzenszwalb needs a float image in [0, 1] (or uint8); got dtype {x.dtype}")
    return np.ascontiguousarray(np.moveaxis(x.astype(np.float64, copy=False), 0, -1))


def _roots(parent: np.ndarray) -> np.ndarray:
    """The root of every node of a union-find forest (pointer jumping until nothing changes)."""
    while True:
        up = parent[parent]
        if np.array_equal(up, parent):
            return parent
        parent = up


def felzenszwalb(image, scale: float = 1.0, sigma: float = 0.8, min_size: int = 20) -> Tensor:
    """Felzenszwalb-Huttenlocher segmentation of `image` [C, H, W] (or [H, W]), float in [0, 1] (uint8 is divided
    by 255): labels int64 [H, W] in 0..n-1 (Notes: 002 §4.3.2). `scale` is k of the threshold Int(C) + k/|C| for
    0..255 intensities (skimage's convention), `sigma` the pre-smoothing, `min_size` the smallest segment kept
    (smaller ones are merged into a neighbour). See the module doc; equals skimage.segmentation.felzenszwalb."""
    if scale < 0 or sigma < 0 or min_size < 0:
        raise ConfigError(f"felzenszwalb needs scale, sigma, min_size >= 0; got {scale}, {sigma}, {min_size}")
    img = gaussian_smooth(_as_hwc(image), sigma)
    h, w = img.shape[:2]
    n = h * w
    edges, costs = grid_edges(img)
    order = np.argsort(costs)
    a_list = edges[order, 0].tolist()
    b_list = edges[order, 1].tolist()
    c_list = costs[order].tolist()
    k = float(scale) / 255.0

    parent = list(range(n))
    size = [1] * n
    f32 = array("f", [k])  # thresholds rounded to float32 as skimage stores them
    thr = [f32[0]] * n  # Int(C) + k / |C| of each root (Int = 0 for a single pixel)
    for a, b, c in zip(a_list, b_list, c_list):
        pa = parent[a]
        while pa != a:  # path halving: point at the grandparent, go there
            g = parent[pa]
            parent[a] = g
            a = g
            pa = parent[g]
        pb = parent[b]
        while pb != b:  # path halving: point at the grandparent, go there
            g = parent[pb]
            parent[b] = g
            b = g
            pb = parent[g]
        if a == b or c >= thr[a] or c >= thr[b]:
            continue
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        s = size[a] + size[b]
        size[a] = s
        f32[0] = c + k / s
        thr[a] = f32[0]

    # the min_size pass: only edges between two components one of which is smaller than min_size can ever merge
    par = np.asarray(parent, dtype=np.intp)
    roots = _roots(par)
    sizes = np.bincount(roots, minlength=n)
    ea, eb = edges[order, 0], edges[order, 1]
    ra, rb = roots[ea], roots[eb]
    todo = (ra != rb) & ((sizes[ra] < min_size) | (sizes[rb] < min_size))
    if todo.any():
        parent = roots.tolist()
        size = sizes.tolist()
        for a, b in zip(ea[todo].tolist(), eb[todo].tolist()):
            pa = parent[a]
            while pa != a:  # path halving: point at the grandparent, go there
                g = parent[pa]
                parent[a] = g
                a = g
                pa = parent[g]
            pb = parent[b]
            while pb != b:  # path halving: point at the grandparent, go there
                g = parent[pb]
                parent[b] = g
                b = g
                pb = parent[g]
            if a == b or (size[a] >= min_size and size[b] >= min_size):
                continue
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
        roots = _roots(np.asarray(parent, dtype=np.intp))

    # number the segments by their first pixel in raster order
    uniq, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    return torch.from_numpy(rank[inverse].reshape(h, w))
