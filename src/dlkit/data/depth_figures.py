"""Synthetic annotated depth images of articulated stick figures (Notes: 002 §5.1.1, "Synthetic annotated data").

The Kinect classifier was trained on mock-up bodies in motion-capture poses, rendered by a virtual camera with the
Kinect's intrinsics. Here a figure is ten capsules (a sphere is a capsule of zero length): head, torso, upper and
lower arms and legs, left and right, in a random pose (joint angles), yaw, position, distance and scale. A pinhole
camera (focal length in pixels, principal point at the image centre, x right, y down, z forward) renders it with a
z-buffer: each pixel's depth is the z of the nearest surface its ray meets and its label is that capsule's part;
pixels that meet nothing read `BACKGROUND` metres (the background removed) and label 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

BACKGROUND = 10.0  # metres: the depth read at background pixels (a large positive constant)
PARTS = ("background", "head", "torso", "left upper arm", "left lower arm", "right upper arm", "right lower arm",
         "left upper leg", "left lower leg", "right upper leg", "right lower leg")
JOINTS = ("head", "neck", "pelvis", "left shoulder", "left elbow", "left wrist", "right shoulder", "right elbow",
          "right wrist", "left hip", "left knee", "left ankle", "right hip", "right knee", "right ankle")
# the capsules of PARTS[1:] as (joint a, joint b, radius in metres at scale 1); the head is a sphere
CAPSULES = (("head", "head", 0.11), ("neck", "pelvis", 0.15),
            ("left shoulder", "left elbow", 0.05), ("left elbow", "left wrist", 0.045),
            ("right shoulder", "right elbow", 0.05), ("right elbow", "right wrist", 0.045),
            ("left hip", "left knee", 0.075), ("left knee", "left ankle", 0.055),
            ("right hip", "right knee", 0.075), ("right knee", "right ankle", 0.055))


@dataclass
class DepthFigures:
    """Rendered figures: depth [N, H, W] (metres, float32), labels [N, H, W] (int64, 0 background, 1..10 the
    PARTS), joints [N, 15, 3] and part centres [N, 10, 3] (the midpoints of the capsules' axes) in camera
    coordinates (metres), and the camera's focal length in pixels."""

    depth: np.ndarray
    labels: np.ndarray
    joints: np.ndarray
    part_centres: np.ndarray
    focal: float


def camera_rays(height: int, width: int, focal: float) -> np.ndarray:
    """The ray direction (x, y, 1) through the centre of every pixel, [H, W, 3]: x = (column + 0.5 - W/2) / f,
    y = (row + 0.5 - H/2) / f (pinhole camera, principal point at the image centre)."""
    rows, cols = np.meshgrid(np.arange(height) + 0.5 - height / 2, np.arange(width) + 0.5 - width / 2, indexing="ij")
    return np.stack([cols / focal, rows / focal, np.ones_like(rows)], -1)


def _sphere_hit(d: np.ndarray, dd: np.ndarray, c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """z of the first hit of rays t * d (d_z = 1, so z = t) with spheres (c, r), [M, K]; inf on a miss."""
    b = d @ c.T                                        # d . c
    disc = b * b - dd[:, None] * ((c * c).sum(1) - r * r)
    with np.errstate(invalid="ignore"):
        t = (b - np.sqrt(disc)) / dd[:, None]
    return np.where((disc >= 0) & (t > 0), t, np.inf)


def _cylinder_hit(d: np.ndarray, dd: np.ndarray, a: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
    """z of the first hit of rays t * d with the sides of the finite cylinders of axis a -> b and radius r, [M, K]:
    the component of t d - a across the unit axis w has length r, and its axial coordinate lies in [0, |b - a|]."""
    axis = b - a
    length = np.linalg.norm(axis, axis=1)
    w = axis / np.maximum(length, 1e-12)[:, None]
    dw, aw = d @ w.T, (a * w).sum(1)                   # d . w [M, K], a . w [K]
    da = d @ a.T
    qa = dd[:, None] - dw * dw                          # |d_perp|^2
    qb = da - dw * aw                                   # d_perp . a_perp
    qc = (a * a).sum(1) - aw * aw - r * r               # |a_perp|^2 - r^2
    disc = qb * qb - qa * qc
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (qb - np.sqrt(disc)) / qa
    s = t * dw - aw                                     # axial coordinate of the hit
    ok = (disc >= 0) & (qa > 1e-12) & (t > 0) & (s >= 0) & (s <= length) & (length > 0)
    return np.where(ok, t, np.inf)


def render_capsules(a: np.ndarray, b: np.ndarray, radius: np.ndarray, height: int, width: int,
                    focal: float) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer rendering of K capsules (axis a[k] -> b[k], [K, 3] in camera coordinates, radius [K]): depth
    [H, W] (z of the nearest surface, BACKGROUND where no capsule is hit) and labels [H, W] (k + 1 of the nearest
    capsule, 0 background). A capsule is the union of its two end spheres and the cylinder between them."""
    a, b, radius = (np.asarray(v, dtype=np.float64) for v in (a, b, radius))
    if a.ndim != 2 or a.shape[1] != 3 or b.shape != a.shape or radius.shape != a.shape[:1]:
        raise ConfigError(f"render_capsules expects a, b [K, 3] and radius [K]; got {a.shape}, {b.shape}, "
                          f"{radius.shape}")
    d = camera_rays(height, width, focal).reshape(-1, 3)
    dd = (d * d).sum(1)
    z = np.minimum(np.minimum(_sphere_hit(d, dd, a, radius), _sphere_hit(d, dd, b, radius)),
                   _cylinder_hit(d, dd, a, b, radius))
    k = z.argmin(1)
    near = z[np.arange(len(z)), k]
    hit = np.isfinite(near)
    depth = np.where(hit, near, BACKGROUND).reshape(height, width).astype(np.float32)
    labels = np.where(hit, k + 1, 0).reshape(height, width).astype(np.int64)
    return depth, labels


def _rotation(axis: str, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _limb(root: np.ndarray, side: float, lengths: tuple[float, float], abduct: float, flex: float, bend: float):
    """The middle and end joints of a two-segment limb hanging from `root` (body frame: x to the figure's left,
    y up, z backwards): abducted sideways by `abduct`, swung forwards by `flex`, the second segment bent by `bend`."""
    down = np.array([0.0, -1.0, 0.0])
    upper = _rotation("x", flex) @ _rotation("z", side * abduct) @ down
    lower = _rotation("x", flex + bend) @ _rotation("z", side * abduct) @ down
    mid = root + lengths[0] * upper
    return mid, mid + lengths[1] * lower


def figure_pose(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random joint positions of a figure in its body frame (metres, scale 1, pelvis at the origin; x towards the
    figure's left, y up, z backwards): the arms raised and swung, elbows and knees bent, the legs apart."""
    j = {"pelvis": np.zeros(3), "neck": np.array([0.0, 0.5, 0.0]), "head": np.array([0.0, 0.72, 0.0])}
    for name, side in (("left", 1.0), ("right", -1.0)):
        j[f"{name} shoulder"] = np.array([side * 0.21, 0.47, 0.0])
        j[f"{name} elbow"], j[f"{name} wrist"] = _limb(
            j[f"{name} shoulder"], side, (0.29, 0.27), rng.uniform(0.1, 2.6), rng.uniform(-0.6, 1.4),
            rng.uniform(0.0, 2.0))
        j[f"{name} hip"] = np.array([side * 0.1, -0.08, 0.0])
        j[f"{name} knee"], j[f"{name} ankle"] = _limb(
            j[f"{name} hip"], side, (0.43, 0.43), rng.uniform(0.0, 0.6), rng.uniform(-0.4, 1.2),
            -rng.uniform(0.0, 1.6))
    return j


def render_figures(n: int, height: int = 96, width: int = 72, focal: float = 110.0, seed: int = 0,
                   distance: tuple[float, float] = (2.2, 4.0)) -> DepthFigures:
    """n depth images of random figures (pose, yaw within +-60 degrees, lean, scale 0.85-1.15, distance in
    `distance` metres, a small sideways and vertical shift), deterministic under `seed`."""
    if n < 0 or height < 1 or width < 1 or focal <= 0 or not 0 < distance[0] <= distance[1]:
        raise ConfigError(f"render_figures expects n >= 0, height, width >= 1, focal > 0 and 0 < near <= far "
                          f"distance; got n={n}, {height}x{width}, focal={focal}, distance={distance}")
    rng = np.random.default_rng(seed)
    flip = np.diag([1.0, -1.0, 1.0])  # body (left, up, back) -> camera (right, down, forward): facing the camera
    depth = np.empty((n, height, width), np.float32)
    labels = np.empty((n, height, width), np.int64)
    joints = np.empty((n, len(JOINTS), 3))
    centres = np.empty((n, len(CAPSULES), 3))
    for i in range(n):
        pose = figure_pose(rng)
        scale = rng.uniform(0.85, 1.15)
        rot = flip @ _rotation("y", rng.uniform(-np.pi / 3, np.pi / 3)) @ _rotation("z", rng.uniform(-0.2, 0.2))
        z = rng.uniform(*distance)
        shift = np.array([rng.uniform(-0.1, 0.1) * z, rng.uniform(-0.05, 0.1) * z, z])
        pts = {k: scale * rot @ v + shift for k, v in pose.items()}
        joints[i] = [pts[k] for k in JOINTS]
        a = np.array([pts[c[0]] for c in CAPSULES])
        b = np.array([pts[c[1]] for c in CAPSULES])
        centres[i] = (a + b) / 2
        depth[i], labels[i] = render_capsules(a, b, scale * np.array([c[2] for c in CAPSULES]), height, width, focal)
    return DepthFigures(depth, labels, joints, centres, focal)
