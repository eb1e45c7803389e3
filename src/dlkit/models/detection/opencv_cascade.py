"""OpenCV's trained Haar cascades (`haarcascade_frontalface_default.xml`), read and run by dlkit's own evaluator
(Notes: 002 §4.2).

A cascade in OpenCV's XML format (`<cascade>`, stageType BOOST, featureType HAAR) is a list of stages, each a list
of stumps (`internalNodes` = left, right, feature index, threshold; `leafValues` = the two outputs) and a stage
threshold, over features of 2 or 3 weighted upright rectangles in a 24 x 24 window. `detect_multi_scale` follows
`cv2.CascadeClassifier.detectMultiScale` (OpenCV 4, modules/objdetect/src/cascadedetect.cpp) step by step:

- scales: factor = 1, r, r^2, ... (r = scaleFactor, kept as float32), while the window round(24 f) fits the image
  and max_size; windows smaller than min_size are skipped. At each factor the image is resized to
  round(W / f) x round(H / f) with OpenCV's bit-exact bilinear resize (INTER_LINEAR_EXACT: weights in 1/256,
  integer passes; not the INTER_LINEAR the OpenCV source names, which differs in the last bit and changes
  borderline windows), then its integral images of pixels and of squares;
- the 24 x 24 window slides every 2 pixels (every pixel once f >= 2); along a row, a window that the first stage
  rejects makes the scan skip the next position;
- variance normalisation: with the inner rectangle (1, 1, 22, 22) of area A, sum S and sum of squares Q,
  `nf = sqrt(A Q - S^2)`; a window with `A / nf >= 0.1` (nearly flat) is rejected; each feature value is
  `(sum_r weight_r * rect_sum_r) / nf` in float32;
- stump: `leaf_left if value < threshold else leaf_right`; stage: reject when the sum of its stumps is below
  `stage_threshold - 1e-5`;
- detections `(round(x f), round(y f), round(24 f), round(24 f))` in the original image, then `group_rectangles`
  (`cv::groupRectangles` with eps = 0.2 and minNeighbors) and clipping to the image.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError, DataNotFoundError

THRESHOLD_EPS = np.float32(1e-5)
GROUP_EPS = 0.2


@dataclass
class OpenCVCascade:
    """A stump cascade read from OpenCV's XML: window (width, height); per stage its threshold and its range of
    stumps; per stump feature index, threshold and the two leaf values; per feature up to 3 rectangles
    (x, y, w, h) with float32 weights (0 for an unused rectangle)."""

    window: tuple[int, int]
    stage_thresholds: np.ndarray   # [S] float32, XML value - 1e-5
    stage_ends: np.ndarray         # [S] int, stumps of stage i are stage_ends[i-1]:stage_ends[i]
    feature: np.ndarray            # [T] int
    threshold: np.ndarray          # [T] float32
    left: np.ndarray               # [T] float32
    right: np.ndarray              # [T] float32
    rects: np.ndarray              # [F, 3, 4] int (x, y, w, h)
    weights: np.ndarray            # [F, 3] float32

    @property
    def num_stages(self) -> int:
        return len(self.stage_thresholds)


def _numbers(node: ET.Element | None, what: str, path: Path) -> list[float]:
    if node is None or node.text is None:
        raise DataError(f"{path}: a cascade node lacks <{what}>; expected OpenCV's <cascade> XML format "
                        f"(opencv_traincascade), not the old <haarcascade> one")
    return [float(t) for t in node.text.split()]


def read_opencv_cascade(path: str | os.PathLike) -> OpenCVCascade:
    """Read an OpenCV Haar cascade in the XML format of opencv_traincascade (stump trees, upright features), e.g.
    `cv2.data.haarcascades + "haarcascade_frontalface_default.xml"` (Notes: 002 §4.2.3)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"cascade file not found: {path}. OpenCV's are in cv2.data.haarcascades "
                                f"(pip install 'opencv-python-headless<5')")
    root = ET.parse(path).getroot()
    casc = root.find("cascade") if root.tag != "cascade" else root
    if casc is None:
        raise DataError(f"{path}: no <cascade> node; expected OpenCV's cascade XML format")
    kind, feat = (casc.findtext(k, "").strip() for k in ("stageType", "featureType"))
    if kind != "BOOST" or feat != "HAAR":
        raise ConfigError(f"{path}: only BOOST cascades of HAAR features are supported; got stageType={kind!r}, "
                          f"featureType={feat!r}")
    window = (int(casc.findtext("width")), int(casc.findtext("height")))
    thresholds, ends, feature, threshold, left, right = [], [], [], [], [], []
    for stage in casc.find("stages"):
        thresholds.append(np.float32(float(stage.findtext("stageThreshold"))) - THRESHOLD_EPS)
        for weak in stage.find("weakClassifiers"):
            nodes = _numbers(weak.find("internalNodes"), "internalNodes", path)
            leaves = _numbers(weak.find("leafValues"), "leafValues", path)
            if len(nodes) != 4 or len(leaves) != 2:
                raise ConfigError(f"{path}: only stump cascades (one node per weak classifier) are supported; got "
                                  f"{len(nodes) // 4} nodes")
            feature.append(int(nodes[2]))
            threshold.append(nodes[3])
            left.append(leaves[0])
            right.append(leaves[1])
        ends.append(len(feature))
    feats = list(casc.find("features"))
    rects = np.zeros((len(feats), 3, 4), dtype=np.int64)
    weights = np.zeros((len(feats), 3), dtype=np.float32)
    for i, fnode in enumerate(feats):
        if fnode.findtext("tilted", "0").strip() not in ("0", ""):
            raise ConfigError(f"{path}: feature {i} is tilted (45 degrees); only upright features are supported")
        for j, r in enumerate(fnode.find("rects")):
            v = [float(t) for t in r.text.split()]
            rects[i, j], weights[i, j] = v[:4], v[4]
    f32 = np.float32
    return OpenCVCascade(window, np.array(thresholds, f32), np.array(ends), np.array(feature),
                         np.array(threshold, f32), np.array(left, f32), np.array(right, f32), rects, weights)


def resize_linear_u8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV's bit-exact bilinear resize (INTER_LINEAR_EXACT, what its cascade's image pyramid gets) of an 8-bit
    grey image to size (width, height): the pixel centre d maps to `(d + 0.5) * src / dst - 0.5`, the weights are
    rounded to 1/256, each pass is exact in integers and the result is rounded once, `(v + 2^15) >> 16`."""
    h, w = image.shape
    dw, dh = size
    if (dw, dh) == (w, h):
        return image.copy()

    def taps(n_src: int, n_dst: int) -> tuple[np.ndarray, ...]:
        fval = (1.0 / (n_dst / n_src)) * (np.arange(n_dst) + 0.5) - 0.5
        s = np.floor(fval).astype(np.int64)
        c1 = np.rint((fval - s) * 256).astype(np.int64)
        lo, hi = s < 0, s >= n_src - 1  # outside: the border pixel alone
        s[lo], c1[lo] = 0, 0
        s[hi], c1[hi] = n_src - 1, 0
        return s, np.minimum(s + 1, n_src - 1), 256 - c1, c1

    sx, sx1, a0, a1 = taps(w, dw)
    sy, sy1, b0, b1 = taps(h, dh)
    p = image.astype(np.int64)
    rows = p[:, sx] * a0 + p[:, sx1] * a1
    out = (rows[sy] * b0[:, None] + rows[sy1] * b1[:, None] + (1 << 15)) >> 16
    return out.astype(np.uint8)


def _cv_round(x: np.ndarray | float) -> np.ndarray:
    """cvRound: nearest integer, halves to even (lrint)."""
    return np.rint(x).astype(np.int64)


def _integral(img: np.ndarray) -> np.ndarray:
    out = np.zeros((img.shape[0] + 1, img.shape[1] + 1), dtype=np.int64)
    out[1:, 1:] = img.astype(np.int64).cumsum(0).cumsum(1)
    return out


def _rect_sums(ii: np.ndarray, y: np.ndarray, x: np.ndarray, rect: np.ndarray) -> np.ndarray:
    """Sums [W, ...] of rectangles rect [..., 4] (x, y, w, h) relative to windows at (y, x) [W]."""
    rx, ry, rw, rh = (rect[..., i] for i in range(4))
    y0, x0 = y.reshape(-1, *([1] * rx.ndim)) + ry, x.reshape(-1, *([1] * rx.ndim)) + rx
    return ii[y0 + rh, x0 + rw] - ii[y0, x0 + rw] - ii[y0 + rh, x0] + ii[y0, x0]


class CascadeEvaluator:
    """Runs an `OpenCVCascade` on windows of one resized image, as OpenCV's HaarEvaluator (Notes: 002 §4.2.2)."""

    def __init__(self, cascade: OpenCVCascade, image: np.ndarray):
        self.c = cascade
        self.ii = _integral(image)
        self.ii2 = _integral(image.astype(np.int64) ** 2)
        ww, wh = cascade.window
        self.normrect = np.array([1, 1, ww - 2, wh - 2])

    def norm_factor(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 1/nf [W] and whether each window is usable (not nearly flat)."""
        area = float(self.normrect[2] * self.normrect[3])
        s = _rect_sums(self.ii, y, x, self.normrect).astype(np.float64)
        q = _rect_sums(self.ii2, y, x, self.normrect).astype(np.float64)
        nf = area * q - s * s
        ok = nf > 0
        inv = np.ones(len(y), dtype=np.float32)
        inv[ok] = (1.0 / np.sqrt(nf[ok])).astype(np.float32)
        return inv, ok & (area * inv.astype(np.float64) < 0.1)

    def stage_sum(self, i: int, y: np.ndarray, x: np.ndarray, inv: np.ndarray) -> np.ndarray:
        """Sum of stage i's stump outputs [W] (float64 as OpenCV accumulates)."""
        lo = self.c.stage_ends[i - 1] if i else 0
        hi = self.c.stage_ends[i]
        f = self.c.feature[lo:hi]
        sums = _rect_sums(self.ii, y, x, self.c.rects[f]).astype(np.float32)  # [W, T, 3]
        wts = self.c.weights[f]
        ret = wts[:, 0] * sums[..., 0] + wts[:, 1] * sums[..., 1]
        ret = np.where(wts[:, 2] != 0, ret + wts[:, 2] * sums[..., 2], ret).astype(np.float32)
        value = (ret * inv[:, None]).astype(np.float32)
        out = np.where(value < self.c.threshold[lo:hi], self.c.left[lo:hi], self.c.right[lo:hi]).astype(np.float64)
        total = np.zeros(len(y))
        for t in range(out.shape[1]):  # left to right, as OpenCV adds them
            total += out[:, t]
        return total

    def run(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """OpenCV's runAt for windows at (y, x) [W]: 1 accepted, -1 unusable (flat), -i rejected by stage i
        (0: by the first stage)."""
        inv, ok = self.norm_factor(y, x)
        result = np.where(ok, 1, -1)
        alive = np.flatnonzero(ok)
        for i in range(self.c.num_stages):
            if len(alive) == 0:
                break
            s = self.stage_sum(i, y[alive], x[alive], inv[alive])
            rejected = s < self.c.stage_thresholds[i]
            result[alive[rejected]] = -i
            alive = alive[~rejected]
        return result


def _scales(cascade: OpenCVCascade, size: tuple[int, int], scale_factor: float, min_size: tuple[int, int],
            max_size: tuple[int, int]) -> list[np.float32]:
    ww, wh = cascade.window
    w, h = size
    max_w, max_h = max_size if max_size[0] and max_size[1] else (w, h)
    out, factor = [], 1.0
    while True:
        win = (_cv_round(ww * factor), _cv_round(wh * factor))
        if win[0] > max_w or win[1] > max_h or win[0] > w or win[1] > h:
            return out
        if win[0] >= min_size[0] and win[1] >= min_size[1]:
            out.append(np.float32(factor))
        factor *= scale_factor


def detect_raw(cascade: OpenCVCascade, image: np.ndarray, scale_factor: float = 1.1,
               min_size: tuple[int, int] = (0, 0), max_size: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Every window the cascade accepts, as int rectangles [K, 4] (x, y, w, h) in `image` (8-bit grey [H, W]),
    before grouping: OpenCV's detectMultiScale with minNeighbors = 0 (see the module docstring)."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ConfigError(f"expected an 8-bit grey image [H, W] (uint8); got {image.dtype} {image.shape}")
    if scale_factor <= 1:
        raise ConfigError(f"scale_factor must be > 1; got {scale_factor}")
    h, w = image.shape
    ww, wh = cascade.window
    found = []
    for f in _scales(cascade, (w, h), scale_factor, min_size, max_size):
        sw, sh = int(_cv_round(np.float32(w) / f)), int(_cv_round(np.float32(h) / f))
        if sw < ww or sh < wh:
            continue
        ev = CascadeEvaluator(cascade, resize_linear_u8(image, (sw, sh)))
        step = 1 if f >= 2 else 2
        gy, gx = np.meshgrid(np.arange(0, sh - wh + 1, step), np.arange(0, sw - ww + 1, step), indexing="ij")
        result = ev.run(gy.reshape(-1), gx.reshape(-1)).reshape(gy.shape)
        # along a row, a window that the first stage rejects (result 0) makes the scan skip the next position
        visited = np.zeros_like(result, dtype=bool)
        for r in range(result.shape[0]):
            row, k = result[r], 0
            while k < len(row):
                visited[r, k] = True
                k += 2 if row[k] == 0 else 1
        hit = visited & (result > 0)
        ys, xs = gy[hit], gx[hit]
        size = (int(_cv_round(np.float32(ww) * f)), int(_cv_round(np.float32(wh) * f)))
        found.append(np.stack([_cv_round(xs.astype(np.float32) * f), _cv_round(ys.astype(np.float32) * f),
                               np.full(len(xs), size[0]), np.full(len(xs), size[1])], 1))
    return np.concatenate(found) if found else np.zeros((0, 4), dtype=np.int64)


def group_rectangles(rects: np.ndarray, group_threshold: int, eps: float = GROUP_EPS) -> tuple[np.ndarray, np.ndarray]:
    """cv::groupRectangles: rectangles (x, y, w, h) whose corners all lie within
    `eps * (min(w1, w2) + min(h1, h2)) / 2` are similar; the classes of the transitive closure are averaged, a
    class with at most `group_threshold` members is dropped, and so is one lying inside a larger, stronger one.
    Returns the rectangles [G, 4] and their member counts [G] (unordered). group_threshold <= 0: no grouping."""
    rects = np.asarray(rects, dtype=np.int64).reshape(-1, 4)
    if group_threshold <= 0 or len(rects) == 0:
        return rects.copy(), np.ones(len(rects), dtype=np.int64)
    from scipy.sparse.csgraph import connected_components

    x, y, w, h = rects.T
    delta = eps * (np.minimum(w[:, None], w) + np.minimum(h[:, None], h)) * 0.5
    x2, y2 = x + w, y + h
    similar = ((np.abs(x[:, None] - x) <= delta) & (np.abs(y[:, None] - y) <= delta)
               & (np.abs(x2[:, None] - x2) <= delta) & (np.abs(y2[:, None] - y2) <= delta))
    n, labels = connected_components(similar, directed=False)
    counts = np.bincount(labels, minlength=n)
    sums = np.zeros((n, 4), dtype=np.int64)
    np.add.at(sums, labels, rects)
    inv = (np.float32(1) / counts.astype(np.float32))[:, None]
    avg = _cv_round((sums.astype(np.float32) * inv).astype(np.float32))
    keep = []
    for i in range(n):
        n1 = counts[i]
        if n1 <= group_threshold:
            continue
        r1 = avg[i]
        inside = False
        for j in range(n):
            n2 = counts[j]
            if j == i or n2 <= group_threshold:
                continue
            r2 = avg[j]
            dx, dy = int(_cv_round(r2[2] * eps)), int(_cv_round(r2[3] * eps))
            if (r1[0] >= r2[0] - dx and r1[1] >= r2[1] - dy and r1[0] + r1[2] <= r2[0] + r2[2] + dx
                    and r1[1] + r1[3] <= r2[1] + r2[3] + dy and (n2 > max(3, n1) or n1 < 3)):
                inside = True
                break
        if not inside:
            keep.append(i)
    return avg[keep], counts[keep]


def clip_rectangles(rects: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Rectangles (x, y, w, h) intersected with the image of size (width, height); empty ones dropped."""
    w, h = size
    x0, y0 = np.maximum(rects[:, 0], 0), np.maximum(rects[:, 1], 0)
    x1, y1 = np.minimum(rects[:, 0] + rects[:, 2], w), np.minimum(rects[:, 1] + rects[:, 3], h)
    out = np.stack([x0, y0, x1 - x0, y1 - y0], 1)
    return out[(out[:, 2] > 0) & (out[:, 3] > 0)]


def detect_multi_scale(cascade: OpenCVCascade, image: np.ndarray, scale_factor: float = 1.1, min_neighbors: int = 3,
                       min_size: tuple[int, int] = (0, 0), max_size: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The objects [K, 4] (x, y, w, h) that `cv2.CascadeClassifier.detectMultiScale(image, scale_factor,
    min_neighbors, minSize=min_size, maxSize=max_size)` finds, computed by dlkit (Notes: 002 §4.2; rows unordered)."""
    raw = detect_raw(cascade, image, scale_factor, min_size, max_size)
    grouped, _ = group_rectangles(raw, min_neighbors)
    return clip_rectangles(grouped, (image.shape[1], image.shape[0]))


def frontal_face_cascade() -> OpenCVCascade:
    """OpenCV's `haarcascade_frontalface_default.xml` (Lienhart's 25-stage, 2,913-stump frontal face cascade), read
    from the opencv-python-headless package (the optional extra `opencv`)."""
    try:
        import cv2
    except ImportError:
        raise ConfigError("the OpenCV cascades ship with opencv-python-headless: pip install "
                          "'opencv-python-headless<5' (dlkit's 'test' extra pulls it in)") from None
    return read_opencv_cascade(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")


__all__ = ["OpenCVCascade", "clip_rectangles", "detect_multi_scale", "detect_raw", "frontal_face_cascade",
           "group_rectangles", "read_opencv_cascade", "resize_linear_u8"]
