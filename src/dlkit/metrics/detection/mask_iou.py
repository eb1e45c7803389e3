"""Mask IoU for COCO's `segm` evaluation (Notes: 002 §4.1 IoU, on pixels instead of boxes).

IoU = |D n G| / |D u G| counted in pixels, |D u G| = |D| + |G| - |D n G|; for a crowd ground truth |D n G| / |D|
(as for boxes). The masks stay run-length encoded: the 1-runs of a mask are pixel intervals [start, end) in
column-major order, and |D n G| = sum over D's runs of C_G(end) - C_G(start), where C_G(x) counts G's pixels
before x. All pairs are computed at once: pair p's pixels are shifted by the sizes of the pairs before it, so
one sorted array of G runs serves every pair.
"""

from __future__ import annotations

import numpy as np

from .mask_rle import rle_counts

_CHUNK = 4_000_000  # runs per batch of pairs (bounds the memory)


def _runs(masks: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the distinct masks of the list: (index of each list entry's mask, first run of each mask, run count of
    each mask, run starts, run lengths, pixels h w of each mask); runs of all masks concatenated."""
    key_of, first, count, starts, lens, sizes, which = {}, [], [], [], [], [], []
    n_runs = 0
    for m in masks:
        k = id(m)
        if k not in key_of:
            key_of[k] = len(first)
            c = rle_counts(m)
            ends = np.cumsum(c)
            s, e = ends[0::2][:len(c) // 2], ends[1::2]
            keep = e > s
            first.append(n_runs)
            count.append(int(keep.sum()))
            starts.append(s[keep])
            lens.append((e - s)[keep])
            sizes.append(int(m["size"][0]) * int(m["size"][1]))
            n_runs += count[-1]
        which.append(key_of[k])
    cat = np.concatenate if starts else (lambda _: np.zeros(0, np.int64))
    return (np.asarray(which, np.int64), np.asarray(first, np.int64), np.asarray(count, np.int64),
            cat(starts).astype(np.int64), cat(lens).astype(np.int64), np.asarray(sizes, np.int64))


def _gather(first: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the runs of each selected mask (concatenated) and the selection each run belongs to."""
    total = int(count.sum())
    owner = np.repeat(np.arange(len(count)), count)
    offs = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    return np.repeat(first, count) + offs, owner


def _covered(x: np.ndarray, starts: np.ndarray, lens: np.ndarray, before: np.ndarray) -> np.ndarray:
    """C(x): pixels of the runs (sorted `starts`, `lens`, `before` = pixels in earlier runs) that lie before x."""
    k = np.searchsorted(starts, x, side="right") - 1
    kk = np.maximum(k, 0)
    return np.where(k >= 0, before[kk] + np.clip(x - starts[kk], 0, lens[kk]), 0)


def paired_mask_iou(dt: list[dict], gt: list[dict], crowd: np.ndarray) -> np.ndarray:
    """IoU of each pair (dt[i], gt[i]) of RLE masks; float64 [N] (0 for masks of different sizes)."""
    n = len(dt)
    out = np.zeros(n)
    if n == 0:
        return out
    d_which, d_first, d_count, d_starts, d_lens, d_size = _runs(dt)
    g_which, g_first, g_count, g_starts, g_lens, g_size = _runs(gt)
    d_area = np.add.reduceat(d_lens, d_first) * (d_count > 0) if len(d_lens) else np.zeros(len(d_first), np.int64)
    g_area = np.add.reduceat(g_lens, g_first) * (g_count > 0) if len(g_lens) else np.zeros(len(g_first), np.int64)
    da, ga = d_area[d_which], g_area[g_which]
    same = d_size[d_which] == g_size[g_which]
    pairs = np.flatnonzero(same & (da > 0) & (ga > 0))
    inter = np.zeros(n)
    load = d_count[d_which[pairs]] + g_count[g_which[pairs]]
    batch = (np.cumsum(load) - load) // _CHUNK  # pairs batched by their number of runs
    for b in np.unique(batch):
        chunk = pairs[batch == b]
        shift = np.cumsum(d_size[d_which[chunk]]) - d_size[d_which[chunk]]  # pixel offset of each pair
        gi, g_owner = _gather(g_first[g_which[chunk]], g_count[g_which[chunk]])
        gs = g_starts[gi] + shift[g_owner]
        gl = g_lens[gi]
        before = np.concatenate([[0], np.cumsum(gl)])  # G pixels before each G run (all pairs)
        di, d_owner = _gather(d_first[d_which[chunk]], d_count[d_which[chunk]])
        ds = d_starts[di] + shift[d_owner]
        per_run = _covered(ds + d_lens[di], gs, gl, before) - _covered(ds, gs, gl, before)
        inter[chunk] = np.bincount(d_owner, weights=per_run, minlength=len(chunk))
    union = np.where(crowd, da, da + ga - inter)
    np.divide(inter, union, out=out, where=inter > 0)
    return out
