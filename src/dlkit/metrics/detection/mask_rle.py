"""Run-length encoded (RLE) masks in COCO's format: encode, decode, area, bounding box, polygons to RLE.

A mask of h x w pixels is read column by column (Fortran order); `counts` alternate runs of 0s and 1s, starting
with 0s. The compressed form packs the counts in a string: each count (minus the count two places before it,
from the fourth count on) in 5-bit groups, low group first, a continuation bit 0x20 and a sign bit 0x10 in the
last group, each group + 48 as one ASCII character. Polygons are rasterised as COCO does: vertices scaled by 5
and rounded, edges walked pixel by pixel, and a column's pixel (x, y) is inside when y lies between the
boundary crossings of column x (so a polygon's mask equals pycocotools.mask's, tested).
"""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError


def rle_encode(mask: np.ndarray, compress: bool = True) -> dict:
    """RLE {"size": [h, w], "counts": str} of a binary mask [h, w] (`compress=False`: counts as an int array)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ConfigError(f"rle_encode expects one mask [h, w]; got shape {mask.shape}")
    h, w = mask.shape
    counts = mask_counts(mask.reshape(-1, order="F") > 0)
    return {"size": [h, w], "counts": counts_to_string(counts) if compress else counts}


def mask_counts(flat: np.ndarray) -> np.ndarray:
    """Run lengths of a flat boolean pixel vector, starting with a (possibly empty) run of 0s."""
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [len(flat)]])
    counts = np.diff(edges)
    if len(flat) and flat[0]:
        counts = np.concatenate([[0], counts])
    return counts.astype(np.int64)


def counts_to_string(counts) -> str:
    """COCO's compressed string of a list of run lengths."""
    out = []
    counts = [int(c) for c in counts]
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        while True:
            group = x & 0x1F
            x >>= 5
            more = x != -1 if group & 0x10 else x != 0
            out.append(chr(group + 48 + (0x20 if more else 0)))
            if not more:
                break
    return "".join(out)


def string_to_counts(s: str | bytes) -> np.ndarray:
    """The run lengths packed in COCO's compressed string (vectorised over the characters)."""
    c = np.frombuffer(s.encode("ascii") if isinstance(s, str) else bytes(s), dtype=np.uint8).astype(np.int64) - 48
    if len(c) == 0:
        return np.zeros(0, np.int64)
    last = (c & 0x20) == 0  # the last 5-bit group of a count
    end = np.flatnonzero(last)
    start = np.concatenate([[0], end[:-1] + 1])
    k = np.arange(len(c)) - np.repeat(start, end - start + 1)  # group position within its count
    x = np.add.reduceat((c & 0x1F) << (5 * k), start)
    negative = (c[end] & 0x10) != 0
    x = np.where(negative, x - (np.int64(1) << (5 * (end - start + 1))), x)
    # from the fourth count on, each is stored minus the count two places before it
    counts = x.copy()
    counts[3::2] = np.cumsum(x[1::2])[1:] if len(x) > 3 else counts[3::2]
    counts[4::2] = np.cumsum(x[2::2])[1:] if len(x) > 4 else counts[4::2]
    return counts


def rle_counts(rle: dict) -> np.ndarray:
    """The run lengths of an RLE dict, compressed (string counts) or not (a list)."""
    c = rle["counts"]
    return np.asarray(c, dtype=np.int64) if isinstance(c, list | np.ndarray) else string_to_counts(c)


def rle_decode(rle: dict) -> np.ndarray:
    """The binary mask uint8 [h, w] of an RLE."""
    h, w = (int(v) for v in rle["size"])
    counts = rle_counts(rle)
    flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(np.uint8)
    if len(flat) != h * w:
        raise ConfigError(f"RLE counts sum to {len(flat)} pixels but size {h}x{w} has {h * w}")
    return flat.reshape((h, w), order="F")


def rle_area(rle: dict) -> int:
    """Number of mask pixels: the sum of the odd-position runs."""
    return int(rle_counts(rle)[1::2].sum())


def rle_to_bbox(rle: dict) -> list[float]:
    """[x, y, w, h] of the mask's pixels (COCO's toBbox: a run crossing a column spans the full height)."""
    h = int(rle["size"][0])
    counts = rle_counts(rle)
    if len(counts) < 2:
        return [0.0, 0.0, 0.0, 0.0]
    m = len(counts) - (len(counts) % 2 == 1)  # an even number of runs: the trailing 0-run does not matter
    ends = np.cumsum(counts[:m])
    t = ends - np.arange(m) % 2  # first pixel of each 1-run (even j), its last pixel (odd j)
    y, x = t % h, t // h
    xs, xe, ys, ye = x.min(), x.max(), y.min(), y.max()
    if np.any(x[0::2] < x[1::2]):  # some 1-run covers the bottom of one column and the top of the next
        ys, ye = 0, h - 1
    return [float(xs), float(ys), float(xe - xs + 1), float(ye - ys + 1)]


def polygon_counts(xy, h: int, w: int) -> np.ndarray:
    """Run lengths of one polygon [x1, y1, x2, y2, ...] rasterised into h x w pixels as COCO's rleFrPoly does."""
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    scale = 5.0
    x = np.trunc(scale * pts[:, 0] + .5).astype(np.int64)  # C's (int)(v + .5): truncation toward zero
    y = np.trunc(scale * pts[:, 1] + .5).astype(np.int64)
    x, y = np.append(x, x[0]), np.append(y, y[0])
    # walk every edge one upsampled pixel at a time along its longer axis, from its lower end
    xs, xe, ys, ye = x[:-1], x[1:], y[:-1], y[1:]
    dx, dy = np.abs(xe - xs), np.abs(ys - ye)
    along_x = dx >= dy
    flip = (along_x & (xs > xe)) | (~along_x & (ys > ye))
    xs, xe, ys, ye = np.where(flip, xe, xs), np.where(flip, xs, xe), np.where(flip, ye, ys), np.where(flip, ys, ye)
    n = np.where(along_x, dx, dy)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(along_x, (ye - ys) / np.maximum(dx, 1), (xe - xs) / np.maximum(dy, 1))
    edge = np.repeat(np.arange(len(n)), n + 1)
    d = np.arange(len(edge)) - np.repeat(np.cumsum(n + 1) - (n + 1), n + 1)
    t = np.where(flip[edge], n[edge] - d, d)
    ax = along_x[edge]
    line = np.trunc(np.where(ax, ys[edge], xs[edge]) + slope[edge] * t + .5).astype(np.int64)
    u = np.where(ax, t + xs[edge], line)
    v = np.where(ax, line, t + ys[edge])
    # where the walk steps from one pixel column to the next: the boundary crossing of that column
    step = np.flatnonzero(u[1:] != u[:-1]) + 1
    xd = np.where(u[step] < u[step - 1], u[step], u[step] - 1).astype(np.float64)
    xd = (xd + .5) / scale - .5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = np.minimum(v[step], v[step - 1]).astype(np.float64)
    yd = np.ceil(np.clip((yd + .5) / scale - .5, 0, h))
    crossings = (xd[keep] * h + yd[keep]).astype(np.int64)
    # a pixel is inside after an odd number of crossings at or before it (two crossings at one pixel cancel)
    where, times = np.unique(crossings, return_counts=True)
    toggles = where[(times % 2 == 1) & (where < h * w)]
    return np.diff(np.concatenate([[0], toggles, [h * w]])).astype(np.int64)


def polygon_to_mask(xy, h: int, w: int) -> np.ndarray:
    """Rasterise one polygon [x1, y1, x2, y2, ...] into a uint8 mask [h, w] as COCO's rleFrPoly does."""
    return rle_decode({"size": [h, w], "counts": polygon_counts(xy, h, w)})


def to_rle(segmentation, h: int, w: int, where: str = "segmentation") -> dict:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as an RLE dict with its counts decoded
    (an int array), as pycocotools' annToRLE reads it (several polygons are merged into one mask)."""
    if isinstance(segmentation, list):
        if not segmentation or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                                       for p in segmentation):
            raise ConfigError(f"{where} must be polygons [[x1, y1, x2, y2, x3, y3, ...], ...] (at least 3 points "
                              f"each) or an RLE {{size, counts}}; got {str(segmentation)[:60]}")
        if len(segmentation) == 1:
            return {"size": [h, w], "counts": polygon_counts(segmentation[0], h, w)}
        mask = np.zeros((h, w), np.uint8)  # several polygons: the union of their masks
        for poly in segmentation:
            mask |= polygon_to_mask(poly, h, w)
        return rle_encode(mask, compress=False)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        c = segmentation["counts"]
        if isinstance(c, list | str | bytes):
            if list(segmentation["size"]) != [h, w]:
                raise ConfigError(f"{where}: an RLE of size {segmentation['size']} on an image of size [{h}, {w}] "
                                  "(height, width); encode the mask at the image's size")
            try:
                counts = rle_counts(segmentation)
            except (ValueError, TypeError, UnicodeError):
                counts = None
            if counts is None or counts.sum() != h * w or (counts < 0).any():
                total = "unreadable counts" if counts is None else f"counts covering {int(counts.sum())} pixels"
                raise ConfigError(f"{where}: an RLE with {total}, the image has {h} x {w} = {h * w}; the counts "
                                  "are truncated, damaged or belong to another image")
            return {"size": [h, w], "counts": counts}
    raise ConfigError(f"{where} must be polygons or an RLE {{'size': [h, w], 'counts': ...}}; got "
                      f"{str(segmentation)[:60]}")
