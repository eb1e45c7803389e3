"""Depth-comparison features (Notes: 002 §5.1.1): f(x; D, (dp, dn)) = D[x + dp / D[x]] - D[x + dn / D[x]].

Each offset is in pixel-metres and divided by the depth at x, so that it covers the same piece of body whatever the
body's distance (o_di = o_w f / d); a probe that leaves the image reads the large background constant, as the
background pixels of the (background-removed) depth image do.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError


def depth_features(depth: np.ndarray, pixels: np.ndarray, offsets: np.ndarray, background: float,
                   chunk: int = 4_000_000) -> np.ndarray:
    """Features [M, F] (float32) of M pixels of depth images under F offset pairs.

    depth: [N, H, W] (or [H, W]) depths in metres, background pixels already set to `background`;
    pixels: [M, 3] integer (image, row, column) (or [M, 2] (row, column) for a single image);
    offsets: [F, 2, 2] pairs (dp, dn), each (row, column) in pixel-metres. A probe at pixel coordinate
    x + o / D[x] (x the pixel's centre) reads the pixel that contains it, `background` outside the image.
    """
    depth = np.asarray(depth, dtype=np.float32)
    pixels, offsets = np.asarray(pixels), np.asarray(offsets, dtype=np.float32)
    if depth.ndim == 2:
        depth = depth[None]
        if pixels.ndim == 2 and pixels.shape[1] == 2:
            pixels = np.concatenate([np.zeros((len(pixels), 1), pixels.dtype), pixels], 1)
    if depth.ndim != 3 or pixels.ndim != 2 or pixels.shape[1] != 3 or offsets.ndim != 3 or offsets.shape[1:] != (2, 2):
        raise ConfigError(f"depth_features expects depth [N, H, W], pixels [M, 3] (image, row, column) and offsets "
                          f"[F, 2, 2] (dp, dn as (row, column)); got {depth.shape}, {pixels.shape}, {offsets.shape}")
    n, h, w = depth.shape
    img, row, col = (pixels[:, i].astype(np.int64) for i in range(3))
    if len(pixels) and (img.min() < 0 or img.max() >= n or row.min() < 0 or row.max() >= h or col.min() < 0
                        or col.max() >= w):
        raise ConfigError(f"depth_features: every pixel must lie in the {n} images of {h}x{w}; got pixels out of "
                          "range")
    flat = np.append(depth.reshape(-1), np.float32(background))  # the last entry answers out-of-image probes
    inv = 1.0 / depth[img, row, col]
    out = np.empty((len(pixels), len(offsets)), np.float32)
    step = max(1, chunk // max(1, len(offsets)))
    for s in range(0, len(pixels), step):
        sl = slice(s, s + step)
        probes = []
        for o in (offsets[:, 0], offsets[:, 1]):                      # [F, 2]
            r = np.floor(row[sl, None] + 0.5 + o[None, :, 0] * inv[sl, None]).astype(np.int64)
            c = np.floor(col[sl, None] + 0.5 + o[None, :, 1] * inv[sl, None]).astype(np.int64)
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            probes.append(flat[np.where(inside, (img[sl, None] * h + r) * w + c, len(flat) - 1)])
        out[sl] = probes[0] - probes[1]
    return out


def random_offsets(n: int, max_offset: float, rng: np.random.Generator, unary: float = 0.5) -> np.ndarray:
    """n offset pairs [n, 2, 2] (dp, dn), each uniform in the disc of radius max_offset (pixel-metres); a fraction
    `unary` of them has dn = 0, which compares a probe with the pixel's own depth."""
    if n < 1 or max_offset <= 0 or not 0 <= unary <= 1:
        raise ConfigError(f"random_offsets expects n >= 1, max_offset > 0 and 0 <= unary <= 1; got n={n}, "
                          f"max_offset={max_offset}, unary={unary}")
    radius = max_offset * np.sqrt(rng.uniform(size=(n, 2)))
    angle = rng.uniform(0, 2 * np.pi, size=(n, 2))
    out = np.stack([radius * np.sin(angle), radius * np.cos(angle)], -1)
    out[rng.uniform(size=n) < unary, 1] = 0.0
    return out.astype(np.float32)
