"""Selective search region proposals (Notes: 002 §4.3.2; Uijlings, van de Sande, Gevers and Smeulders, "Selective
search for object recognition", IJCV 2013).

1. Over-segment the image with `felzenszwalb` (scale k, sigma 0.8, min_size k: the paper's code's defaults) run on
   the image converted to a colour space.
2. Hierarchical grouping: the similarity of every pair of adjacent regions (8-connected, as the segmentation's
   graph) is `s = a1 s_colour + a2 s_texture + a3 s_size + a4 s_fill`, each a_i in {0, 1}:
   - s_colour = sum_k min(c_i^k, c_j^k): histogram intersection of the colour histograms, 25 bins per channel,
     the whole vector (75 bins for 3 channels) L1-normalised;
   - s_texture: the same intersection of texture histograms: for each channel, Gaussian derivatives (sigma 1) in 8
     orientations theta = 0, 45, ..., 315 degrees (d/d theta = cos(theta) d/dx + sin(theta) d/dy, keeping the
     positive part, so opposite orientations are distinct), each scaled by its maximum over the image and cut into
     10 bins: 8 x 10 bins per channel (240 for 3 channels), L1-normalised;
   - s_size = 1 - (|r_i| + |r_j|) / |im|, which makes small regions merge early;
   - s_fill = 1 - (|BB_ij| - |r_i| - |r_j|) / |im|, BB_ij the box around both: regions that fill each other's
     gaps merge early.
   The two most similar regions merge into r_t with |r_t| = |r_i| + |r_j|, BB_t = BB_ij and the size-weighted
   average histograms C_t = (|r_i| C_i + |r_j| C_j) / (|r_i| + |r_j|); its similarities to its neighbours are
   computed, and so on until one region is left. n initial regions give 2n - 1 regions, hence 2n - 1 boxes.
3. Diversification: several strategies (colour space x similarity subset x k), their boxes pooled. Ranking (paper
   §3.3): in each hierarchy the region created last (the whole image) has position 1, the one before 2, ... (the
   initial regions last); each box gets `position x RND`, RND uniform in [0, 1) from a seeded generator, and the
   pooled boxes are sorted by that value, a box seen again later being dropped (duplicates: identical boxes).

Modes (paper Table 5): 'single' = HSV, C+T+S+F, k = 100; 'fast' = {HSV, Lab} x {C+T+S+F, T+S+F} x k in {50, 100}
(8 strategies, 4 segmentations); 'quality' = {HSV, Lab, rgI, H, I} x {C+T+S+F, T+S+F, F, S} x k in
{50, 100, 150, 300} (80 strategies).

Colour spaces, every channel scaled to [0, 1] (as an 8-bit image / 255: what the segmentation's k expects): 'rgb';
'hsv' (hue / 360); 'lab' (CIE L*a*b*, D65, from sRGB: L / 100, (a + 128) / 255, (b + 128) / 255, clipped);
'rgi' (r = R / (R+G+B), g = G / (R+G+B), intensity (R+G+B) / 3); 'h' (hue only); 'i' (intensity only).

Boxes are xyxy in pixel corners, x2 / y2 exclusive (a region of columns 3..7 gives x1 = 3, x2 = 8), as torchvision.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from .graph_segmentation import felzenszwalb, gaussian_kernel1d

COLOUR_SPACES = ("rgb", "hsv", "lab", "rgi", "h", "i")
SIMILARITY_TERMS = "ctsf"  # colour, texture, size, fill
COLOUR_BINS = 25
TEXTURE_BINS = 10
ORIENTATIONS = 8


@dataclass(frozen=True)
class Strategy:
    """One selective search strategy: the colour space of the segmentation and the histograms, the segmentation's
    k, and the similarity terms used (a subset of 'ctsf': colour, texture, size, fill)."""

    colour_space: str = "hsv"
    k: float = 100.0
    similarity: str = "ctsf"

    def __post_init__(self):
        if self.colour_space not in COLOUR_SPACES:
            raise ConfigError(f"colour_space must be one of {COLOUR_SPACES}; got {self.colour_space!r}")
        if not self.similarity or set(self.similarity) - set(SIMILARITY_TERMS):
            raise ConfigError(f"similarity must be a non-empty subset of the letters {SIMILARITY_TERMS!r} (colour, "
                              f"texture, size, fill); got {self.similarity!r}")
        if self.k <= 0:
            raise ConfigError(f"the segmentation's k must be > 0; got {self.k}")


MODES: dict[str, tuple[Strategy, ...]] = {
    "single": (Strategy("hsv", 100, "ctsf"),),
    "fast": tuple(Strategy(c, k, s) for c in ("hsv", "lab") for k in (50, 100) for s in ("ctsf", "tsf")),
    "quality": tuple(Strategy(c, k, s) for c in ("hsv", "lab", "rgi", "h", "i") for k in (50, 100, 150, 300)
                     for s in ("ctsf", "tsf", "f", "s")),
}


# ---- colour spaces ----

def _hue(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in [0, 1), saturation and value of RGB in [0, 1] (the hexcone model, as colorsys / skimage)."""
    v = np.maximum(np.maximum(r, g), b)
    c = v - np.minimum(np.minimum(r, g), b)
    safe = np.where(c > 0, c, 1.0)
    h = np.where(v == r, ((g - b) / safe) % 6.0, np.where(v == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h = np.where(c > 0, h / 6.0, 0.0) % 1.0
    s = np.where(v > 0, c / np.where(v > 0, v, 1.0), 0.0)
    return h, s, v


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65 white) of sRGB values [3, H, W] in [0, 1]: L in [0, 100], a, b about [-128, 127]."""
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
    xyz = np.tensordot(m, lin, axes=1) / np.array([0.95047, 1.0, 1.08883])[:, None, None]
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])])


def convert_colour(image: np.ndarray, space: str) -> np.ndarray:
    """An RGB image float [3, H, W] in [0, 1] in colour space `space` (see the module doc), every channel in
    [0, 1]: float64 [C, H, W] with C = 3, or 1 for 'h' and 'i'."""
    rgb = np.asarray(image, dtype=np.float64)
    r, g, b = rgb
    if space == "rgb":
        out = rgb.copy()
    elif space in ("hsv", "h"):
        h, s, v = _hue(r, g, b)
        out = np.stack([h, s, v]) if space == "hsv" else h[None]
    elif space == "lab":
        lab = _lab(rgb)
        out = np.stack([lab[0] / 100.0, (lab[1] + 128.0) / 255.0, (lab[2] + 128.0) / 255.0])
    elif space == "rgi":
        total = r + g + b
        safe = np.where(total > 0, total, 1.0)
        out = np.stack([np.where(total > 0, r / safe, 1 / 3), np.where(total > 0, g / safe, 1 / 3), total / 3.0])
    elif space == "i":
        out = ((r + g + b) / 3.0)[None]
    else:
        raise ConfigError(f"colour space must be one of {COLOUR_SPACES}; got {space!r}")
    return np.clip(out, 0.0, 1.0)


# ---- region features ----

def _correlate1d(a: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """out[i] = sum_j w[j + r] a[i + j] along `axis`, mirror borders (d c b a | a b c d)."""
    r = len(w) // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="symmetric")
    n = a.shape[axis]
    out = np.zeros_like(a, dtype=np.float64)
    for j in range(len(w)):
        index = [slice(None)] * a.ndim
        index[axis] = slice(j, j + n)
        out += w[j] * p[tuple(index)]
    return out


def gaussian_gradients(channels: np.ndarray, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian derivatives (d/dx, d/dy) [C, H, W] of each channel [C, H, W] (x to the right, y down)."""
    g = gaussian_kernel1d(sigma)
    r = len(g) // 2
    dg = np.arange(-r, r + 1) / (sigma * sigma) * g  # correlation weights of d/dx (G * I)
    gx = _correlate1d(_correlate1d(channels, g, 1), dg, 2)
    gy = _correlate1d(_correlate1d(channels, g, 2), dg, 1)
    return gx, gy


def texture_bins(channels: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """For each channel and each of the 8 orientations theta = 0, 45, ..., 315 degrees, the bin (0..9) of every
    pixel's oriented Gaussian derivative `max(0, cos(theta) gx + sin(theta) gy)` scaled by its image maximum:
    int64 [C * 8, H, W] (channel-major)."""
    gx, gy = gaussian_gradients(channels, sigma)
    out = []
    for c in range(len(channels)):
        for o in range(ORIENTATIONS):
            t = o * 2.0 * np.pi / ORIENTATIONS
            d = np.maximum(np.cos(t) * gx[c] + np.sin(t) * gy[c], 0.0)
            top = d.max()
            scaled = d / top if top > 0 else d
            out.append(np.minimum((scaled * TEXTURE_BINS).astype(np.int64), TEXTURE_BINS - 1))
    return np.stack(out)


def _histograms(labels: np.ndarray, bins: np.ndarray, nbins: int, n: int) -> np.ndarray:
    """L1-normalised histograms [n, F * nbins] of the per-pixel bin maps `bins` [F, H, W] over each region of
    `labels` [H, W] (0..n-1): bins of feature f at f * nbins .. (f + 1) * nbins - 1."""
    lab = labels.ravel()
    f = len(bins)
    hist = np.empty((n, f * nbins))
    for i in range(f):
        hist[:, i * nbins:(i + 1) * nbins] = np.bincount(lab * nbins + bins[i].ravel(),
                                                         minlength=n * nbins).reshape(n, nbins)
    return hist / hist.sum(1, keepdims=True)


def colour_histograms(labels: np.ndarray, channels: np.ndarray, n: int | None = None) -> np.ndarray:
    """Colour histograms [n, C * 25] of each region: 25 bins per channel over [0, 1], L1-normalised."""
    n = int(labels.max()) + 1 if n is None else n
    bins = np.minimum((np.asarray(channels) * COLOUR_BINS).astype(np.int64), COLOUR_BINS - 1)
    return _histograms(labels, np.clip(bins, 0, COLOUR_BINS - 1), COLOUR_BINS, n)


def texture_histograms(labels: np.ndarray, channels: np.ndarray, n: int | None = None) -> np.ndarray:
    """Texture histograms [n, C * 8 * 10] of each region (`texture_bins`), L1-normalised."""
    n = int(labels.max()) + 1 if n is None else n
    return _histograms(labels, texture_bins(np.asarray(channels)), TEXTURE_BINS, n)


def region_boxes(labels: np.ndarray, n: int | None = None) -> np.ndarray:
    """Boxes [n, 4] xyxy (x2, y2 exclusive) of the regions 0..n-1 of `labels` [H, W]."""
    labels = np.asarray(labels)
    n = int(labels.max()) + 1 if n is None else n
    h, w = labels.shape
    lab = labels.ravel()
    order = np.argsort(lab, kind="stable")
    starts = np.searchsorted(lab[order], np.arange(n))
    ys, xs = np.divmod(order, w)
    return np.stack([np.minimum.reduceat(xs, starts), np.minimum.reduceat(ys, starts),
                     np.maximum.reduceat(xs, starts) + 1, np.maximum.reduceat(ys, starts) + 1], 1).astype(np.float64)


def region_adjacency(labels: np.ndarray) -> np.ndarray:
    """The pairs (i, j), i < j, of regions of `labels` [H, W] that touch (8-connectivity): int64 [P, 2], sorted."""
    labels = np.asarray(labels, dtype=np.int64)
    n = int(labels.max()) + 1
    pairs = [(labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :]), (labels[:-1, :-1], labels[1:, 1:]),
             (labels[:-1, 1:], labels[1:, :-1])]
    a = np.concatenate([p[0].ravel() for p in pairs])
    b = np.concatenate([p[1].ravel() for p in pairs])
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    code = np.unique(lo * n + hi)
    return np.stack([code // n, code % n], 1)


@dataclass
class Regions:
    """The initial regions of a segmentation: sizes [n] (pixels), boxes [n, 4] xyxy, colour and texture histograms
    [n, *], adjacent pairs [P, 2], and the image's area."""

    sizes: np.ndarray
    boxes: np.ndarray
    colour: np.ndarray
    texture: np.ndarray
    pairs: np.ndarray
    image_area: int

    def __len__(self) -> int:
        return len(self.sizes)


def initial_regions(labels, channels: np.ndarray) -> Regions:
    """The features of the regions of `labels` [H, W] (0..n-1) of an image whose channels [C, H, W] are in [0, 1]."""
    labels = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels, dtype=np.int64)
    n = int(labels.max()) + 1
    return Regions(np.bincount(labels.ravel(), minlength=n).astype(np.float64), region_boxes(labels, n),
                   colour_histograms(labels, channels, n), texture_histograms(labels, channels, n),
                   region_adjacency(labels), labels.size)


# ---- similarities and merging ----

def histogram_intersection(a, b) -> np.ndarray:
    """sum_k min(a_k, b_k) over the last axis (Uijlings et al. eq. 1, 2)."""
    return np.minimum(np.asarray(a), np.asarray(b)).sum(-1)


def merge_histograms(a, size_a: float, b, size_b: float) -> np.ndarray:
    """The histogram of the union of two regions: (|r_a| a + |r_b| b) / (|r_a| + |r_b|)."""
    return (size_a * np.asarray(a) + size_b * np.asarray(b)) / (size_a + size_b)


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([np.minimum(a[..., :2], b[..., :2]), np.maximum(a[..., 2:], b[..., 2:])], -1)


def similarity(regions: Regions, i, j, terms: str = "ctsf", sizes=None, boxes=None, colour=None,
               texture=None) -> np.ndarray:
    """s(r_i, r_j) = a1 s_colour + a2 s_texture + a3 s_size + a4 s_fill with a = 1 for the letters in `terms`;
    i, j: region indices (broadcast). The arrays default to `regions`' (the grouping passes its grown copies)."""
    sizes = regions.sizes if sizes is None else sizes
    boxes = regions.boxes if boxes is None else boxes
    colour = regions.colour if colour is None else colour
    texture = regions.texture if texture is None else texture
    i, j = np.asarray(i), np.asarray(j)
    s = np.zeros(np.broadcast(i, j).shape)
    area = float(regions.image_area)
    if "c" in terms:
        s = s + histogram_intersection(colour[i], colour[j])
    if "t" in terms:
        s = s + histogram_intersection(texture[i], texture[j])
    if "s" in terms:
        s = s + 1.0 - (sizes[i] + sizes[j]) / area
    if "f" in terms:
        bb = _union(boxes[i], boxes[j])
        bb_area = (bb[..., 2] - bb[..., 0]) * (bb[..., 3] - bb[..., 1])
        s = s + 1.0 - (bb_area - sizes[i] - sizes[j]) / area
    return s


@dataclass
class Hierarchy:
    """The result of hierarchical grouping: boxes [2n - 1, 4] of every region in order of creation (the n initial
    regions, then one per merge), merges [n - 1, 2] (the two regions merged into region n + m), and similarities
    [n - 1] of those merges."""

    boxes: np.ndarray
    merges: np.ndarray
    similarities: np.ndarray = field(default_factory=lambda: np.zeros(0))


def hierarchical_grouping(regions: Regions, terms: str = "ctsf") -> Hierarchy:
    """Greedy grouping (Uijlings et al. Algorithm 1): merge the most similar adjacent pair, compute the new region's
    similarities to its neighbours, until one region is left (or no adjacent pair is: a disconnected region graph).
    Equal similarities go to the pair with the smaller (i, j)."""
    if not terms or set(terms) - set(SIMILARITY_TERMS):
        raise ConfigError(f"similarity terms must be a non-empty subset of {SIMILARITY_TERMS!r}; got {terms!r}")
    n = len(regions)
    total = 2 * n - 1
    sizes = np.zeros(total)
    sizes[:n] = regions.sizes
    boxes = np.zeros((total, 4))
    boxes[:n] = regions.boxes
    colour = np.zeros((total, regions.colour.shape[1])) if "c" in terms else regions.colour
    texture = np.zeros((total, regions.texture.shape[1])) if "t" in terms else regions.texture
    if "c" in terms:
        colour[:n] = regions.colour
    if "t" in terms:
        texture[:n] = regions.texture
    neighbours: list[set[int] | None] = [set() for _ in range(n)]
    pairs = regions.pairs
    for a, b in pairs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    arrays = dict(sizes=sizes, boxes=boxes, colour=colour, texture=texture)
    s0 = similarity(regions, pairs[:, 0], pairs[:, 1], terms, **arrays) if len(pairs) else np.zeros(0)
    heap = [(-s, a, b) for s, (a, b) in zip(s0.tolist(), pairs.tolist())]
    heapq.heapify(heap)
    alive = [True] * n
    merges, sims = [], []
    t = n
    while heap and t < total:
        negs, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue
        sizes[t] = sizes[a] + sizes[b]
        boxes[t] = _union(boxes[a], boxes[b])
        if "c" in terms:
            colour[t] = merge_histograms(colour[a], sizes[a], colour[b], sizes[b])
        if "t" in terms:
            texture[t] = merge_histograms(texture[a], sizes[a], texture[b], sizes[b])
        alive[a] = alive[b] = False
        alive.append(True)
        nb = (neighbours[a] | neighbours[b]) - {a, b}
        for u in nb:
            nu = neighbours[u]
            nu.discard(a)
            nu.discard(b)
            nu.add(t)
        neighbours[a] = neighbours[b] = None
        neighbours.append(nb)
        if nb:
            us = sorted(nb)
            for s, u in zip(similarity(regions, t, np.asarray(us), terms, **arrays).tolist(), us):
                heapq.heappush(heap, (-s, u, t))
        merges.append((a, b))
        sims.append(-negs)
        t += 1
    return Hierarchy(boxes[:t].copy(), np.asarray(merges, dtype=np.int64).reshape(-1, 2), np.asarray(sims))


# ---- selective search ----

def _as_rgb(image) -> np.ndarray:
    x = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3) or min(x.shape[1:]) < 1:
        raise ConfigError(f"selective_search needs an image [3, H, W] (or [1, H, W]) float in [0, 1]; got shape "
                          f"{tuple(x.shape)}")
    if x.dtype == np.uint8:
        x = x / 255.0
    elif not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(f"selective_search needs a float image in [0, 1] (or uint8); got dtype {x.dtype}")
    x = x.astype(np.float64)
    return np.repeat(x, 3, 0) if x.shape[0] == 1 else x


def _strategies(mode: str, strategies: Sequence[Strategy] | None) -> tuple[Strategy, ...]:
    if strategies is not None:
        out = tuple(s if isinstance(s, Strategy) else Strategy(*s) for s in strategies)
        if not out:
            raise ConfigError("strategies must hold at least one Strategy")
        return out
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {tuple(MODES)} (or pass strategies=); got {mode!r}")
    return MODES[mode]


def selective_search_hierarchies(image, mode: str = "fast", strategies: Sequence[Strategy] | None = None,
                                 sigma: float = 0.8, min_size: int | None = None) -> list[Hierarchy]:
    """The hierarchy of every strategy (in order), sharing each (colour space, k) segmentation and its region
    features between the similarity subsets. `min_size` None: the segmentation's min_size is k."""
    rgb = _as_rgb(image)
    cache: dict[tuple[str, float], Regions] = {}
    converted: dict[str, np.ndarray] = {}
    out = []
    for st in _strategies(mode, strategies):
        key = (st.colour_space, float(st.k))
        if key not in cache:
            if st.colour_space not in converted:
                converted[st.colour_space] = convert_colour(rgb, st.colour_space)
            channels = converted[st.colour_space]
            labels = felzenszwalb(channels, st.k, sigma, int(st.k) if min_size is None else min_size)
            cache[key] = initial_regions(labels, channels)
        out.append(hierarchical_grouping(cache[key], st.similarity))
    return out


def rank_boxes(hierarchies: Sequence[Hierarchy], seed: int = 0) -> np.ndarray:
    """Pool the boxes of several hierarchies (Uijlings et al. §3.3): the box at position p of its hierarchy (p = 1
    for the region created last) gets the value p x RND, RND uniform in [0, 1) drawn from `default_rng(seed)` (one
    draw per box, hierarchy by hierarchy); sorted by value, a box identical to one before it dropped. float64
    [K, 4]."""
    rng = np.random.default_rng(seed)
    boxes, values = [], []
    for hier in hierarchies:
        m = len(hier.boxes)
        position = np.arange(m, 0, -1, dtype=np.float64)  # the last region created: 1
        values.append(position * rng.random(m))
        boxes.append(hier.boxes)
    if not boxes:
        return np.zeros((0, 4))
    boxes_all, values_all = np.concatenate(boxes), np.concatenate(values)
    ranked = boxes_all[np.argsort(values_all, kind="stable")]
    _, first = np.unique(ranked, axis=0, return_index=True)
    return ranked[np.sort(first)]


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    """`image` [C, H, W] resized (bilinear, antialiased, clipped to [0, 1]) so that its longer side is `max_side`;
    unchanged if it is not longer already."""
    h, w = image.shape[1:]
    if max(h, w) <= max_side:
        return image
    f = max_side / max(h, w)
    size = (max(1, round(h * f)), max(1, round(w * f)))
    x = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(image))[None], size=size,
                                        mode="bilinear", antialias=True, align_corners=False)[0]
    return x.clamp(0.0, 1.0).numpy()


def selective_search(image, mode: str = "fast", strategies: Sequence[Strategy] | None = None, sigma: float = 0.8,
                     min_size: int | None = None, max_proposals: int | None = None, min_box_size: float = 0.0,
                     seed: int = 0, max_side: int | None = None) -> Tensor:
    """Selective search proposals of `image` [3, H, W] float in [0, 1] (Notes: 002 §4.3.2): boxes float32 [K, 4]
    xyxy in pixels (x2, y2 exclusive), best-ranked first, without duplicates.

    mode: 'single', 'fast' (default) or 'quality' (see the module doc), or explicit `strategies`; sigma: the
    segmentation's smoothing; min_size: the segmentation's smallest segment (None: k, the paper's choice);
    max_proposals: keep the first K; min_box_size: drop boxes narrower or lower than this (R-CNN used 20 pixels);
    seed: the ranking's random numbers (the same seed gives the same boxes in the same order); max_side: search a
    copy of the image shrunk so that its longer side is at most max_side (the time grows with the pixels; k and
    min_size are then in the small image's pixels) and scale the boxes back to the image's coordinates (no longer
    whole pixels; min_box_size is checked on the scaled boxes)."""
    if max_proposals is not None and max_proposals < 0:
        raise ConfigError(f"max_proposals must be >= 0 or None; got {max_proposals}")
    if max_side is not None and max_side < 8:
        raise ConfigError(f"max_side must be at least 8 pixels or None; got {max_side}")
    rgb = _as_rgb(image)
    small = rgb if max_side is None else shrink(rgb, max_side)
    hierarchies = selective_search_hierarchies(small, mode, strategies, sigma, min_size)
    boxes = rank_boxes(hierarchies, seed)
    if small is not rgb:
        (h, w), (sh, sw) = rgb.shape[1:], small.shape[1:]
        boxes = boxes * np.array([w / sw, h / sh, w / sw, h / sh])
    if min_box_size > 0:
        keep = ((boxes[:, 2] - boxes[:, 0]) >= min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_box_size)
        boxes = boxes[keep]
    if max_proposals is not None:
        boxes = boxes[:max_proposals]
    return torch.from_numpy(boxes).float()


@dataclass(frozen=True)
class SelectiveSearch:
    """Selective search with fixed options (picklable), called on images [3, H, W] float in [0, 1]:
    `SelectiveSearch(mode="fast", max_proposals=2000)(image)` -> float32 [K, 4] xyxy (see `selective_search`)."""

    mode: str = "fast"
    strategies: tuple[Strategy, ...] | None = None
    sigma: float = 0.8
    min_size: int | None = None
    max_proposals: int | None = None
    min_box_size: float = 0.0
    seed: int = 0
    max_side: int | None = None

    def __post_init__(self):
        _strategies(self.mode, self.strategies)  # refuse a bad mode / strategy now, not at the first image
        if self.max_proposals is not None and self.max_proposals < 0:
            raise ConfigError(f"max_proposals must be >= 0 or None; got {self.max_proposals}")
        if self.max_side is not None and self.max_side < 8:
            raise ConfigError(f"max_side must be at least 8 pixels or None; got {self.max_side}")

    def __call__(self, image) -> Tensor:
        return selective_search(image, self.mode, self.strategies, self.sigma, self.min_size, self.max_proposals,
                                self.min_box_size, self.seed, self.max_side)
