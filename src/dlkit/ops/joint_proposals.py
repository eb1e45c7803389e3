"""Joint proposals from local modes of each body part's pixels (Notes: 002 §5.1.1, step 3 of the Kinect pipeline).

A pixel of depth z back-projects to the 3-D point z (x, y, 1) on its camera ray (`camera_rays`); a part's joint is
proposed at the centre of mass of its pixels' points, or at the modes that mean shift (Gaussian kernel) finds.
"""

from __future__ import annotations

import numpy as np

from ..data.depth_figures import camera_rays
from ..errors import ConfigError


def backproject(depth: np.ndarray, focal: float) -> np.ndarray:
    """The 3-D point (camera coordinates, metres) of every pixel of depth [H, W]: [H, W, 3]."""
    depth = np.asarray(depth, dtype=np.float64)
    return camera_rays(*depth.shape, focal) * depth[..., None]


def part_centres_of_mass(depth: np.ndarray, labels: np.ndarray, parts: int, focal: float) -> np.ndarray:
    """For each part 1..parts, the mean 3-D point of the pixels labelled with it: [parts, 3], NaN where absent."""
    if np.shape(depth) != np.shape(labels) or np.ndim(depth) != 2:
        raise ConfigError(f"part_centres_of_mass expects depth and labels of the same shape [H, W]; got "
                          f"{np.shape(depth)} and {np.shape(labels)}")
    points = backproject(depth, focal).reshape(-1, 3)
    labels = np.asarray(labels).reshape(-1)
    keep = (labels >= 1) & (labels <= parts)
    count = np.bincount(labels[keep] - 1, minlength=parts)
    sums = np.stack([np.bincount(labels[keep] - 1, points[keep, d], minlength=parts) for d in range(3)], 1)
    with np.errstate(invalid="ignore"):
        return sums / count[:, None]


def mean_shift_modes(points: np.ndarray, bandwidth: float, weights: np.ndarray | None = None, iters: int = 100,
                     tol: float = 1e-6) -> np.ndarray:
    """The modes [K, D] of the Gaussian-kernel density of points [M, D] (optionally weighted, e.g. by the part's
    probability): every point climbs by mean shift until it moves less than tol; ends closer than bandwidth / 2
    are one mode. Sorted by decreasing weight of the points that reached them."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or len(points) == 0 or bandwidth <= 0:
        raise ConfigError(f"mean_shift_modes expects points [M, D] with M >= 1 and bandwidth > 0; got "
                          f"{points.shape}, bandwidth={bandwidth}")
    w = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64)
    y = points.copy()
    for _ in range(iters):
        k = w * np.exp(-((y[:, None] - points[None]) ** 2).sum(-1) / (2 * bandwidth ** 2))  # [M, M]
        new = k @ points / k.sum(1, keepdims=True)
        done = np.abs(new - y).max() < tol
        y = new
        if done:
            break
    modes, mass = [], []
    for p, m in zip(y, w):
        for i, q in enumerate(modes):
            if np.linalg.norm(p - q) < bandwidth / 2:
                mass[i] += m
                break
        else:
            modes.append(p)
            mass.append(m)
    order = np.argsort(-np.array(mass), kind="stable")
    return np.array(modes)[order]
