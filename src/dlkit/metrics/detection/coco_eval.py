"""COCO detection evaluation: mAP@[.50:.95], AP50, AP75, AP small/medium/large, AR@{1,10,100} (Notes: 002 §4.1).

The numbers equal `pycocotools.cocoeval.COCOeval` (tested to 1e-6): the same matching, interpolation and summary,
computed on flat arrays instead of per-image Python loops.

- IoU thresholds t = 0.50, 0.55, ..., 0.95 (`np.linspace` as COCOeval), a detection matches a ground truth (gt)
  of its class and image with IoU >= t (the notes write `>`; COCO uses `>=`); a crowd gt has IoU = |D n G| / |D|.
- Per image and class the detections are taken by decreasing score (stable: ties keep file order), at most
  max_det = 100; each one takes the still-free gt of highest IoU (the last in file order on ties), a gt that is
  not ignored before an ignored one (crowd, or area outside the range); a crowd gt stays free, any other is
  used once. A detection matched to an ignored gt, or unmatched with its area outside the range, is ignored.
- Per class, area range and max_det the detections of all images are ranked by score, TP/FP are summed along
  the ranking: recall = TP / #gt not ignored, precision = TP / (TP + FP); the precision envelope
  p(r) = max_{r' >= r} p(r') is read at the 101 recalls 0, 0.01, ..., 1 (0 where that recall is never reached).
  AP = mean over them; a class without a non-ignored gt has precision -1 and is left out of the means.
- Areas: all [0, 1e10], small [0, 32^2], medium [32^2, 96^2], large [96^2, 1e10] (gt: its `area` field,
  detection: w h or the mask's pixel count).

COCOeval quirks kept on purpose: a gt whose annotation id is 0 counts its matched detection as a false positive
(COCOeval tests "matched" by the gt id being non-zero); an empty (image, class) cell contributes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import ConfigError

IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
               "large": (96.0 ** 2, 1e10)}
STAT_NAMES = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
              "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


@dataclass
class CocoAnnotations:
    """Flat annotations (ground truth or detections) of a COCO evaluation, one row per box, in file order.

    image_id, category_id: [N] ids; bbox: float64 [N, 4] as COCO's (x, y, w, h); area: float64 [N];
    iscrowd: bool [N]; score: float64 [N] (detections; None for ground truth); ann_id: [N] annotation ids;
    masks: None, or a list of N RLE dicts {"size": [h, w], "counts": str} for `iou_type="segm"`.
    """

    image_id: np.ndarray
    category_id: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    score: np.ndarray | None = None
    ann_id: np.ndarray | None = None
    masks: list | None = None

    def __len__(self) -> int:
        return len(self.image_id)


@dataclass
class CocoEvalResult:
    """precision [T, R, K, A, M], recall [T, K, A, M], scores [T, R, K, A, M] laid out as COCOeval.eval
    (T IoU thresholds, R = 101 recalls, K classes in `category_ids` order, A areas all/small/medium/large,
    M max_dets 1/10/100; -1 where undefined) and the 12 summary numbers `stats` (COCOeval.stats)."""

    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    category_ids: list
    stats: np.ndarray = field(default=None)

    def as_dict(self) -> dict[str, float]:
        """The 12 summary numbers by name: map, map_50, map_75, map_small/medium/large, mar_1/10/100, mar_small/..."""
        return {name: float(v) for name, v in zip(STAT_NAMES, self.stats)}

    def summary_lines(self) -> list[str]:
        """The 12 lines of COCOeval.summarize(), character for character."""
        lines = []
        for ap, thr, area, max_det, value in _summary_rows(self.stats):
            title, kind = ("Average Precision", "(AP)") if ap else ("Average Recall", "(AR)")
            iou = (f"{IOU_THRESHOLDS[0]:0.2f}:{IOU_THRESHOLDS[-1]:0.2f}" if thr is None else f"{thr:0.2f}")
            lines.append(f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_det:>3d} ] = "
                         f"{value:0.3f}")
        return lines


_ROWS = ((1, None, "all", 100), (1, .5, "all", 100), (1, .75, "all", 100), (1, None, "small", 100),
         (1, None, "medium", 100), (1, None, "large", 100), (0, None, "all", 1), (0, None, "all", 10),
         (0, None, "all", 100), (0, None, "small", 100), (0, None, "medium", 100), (0, None, "large", 100))


def _summary_rows(stats):
    return [(*row, v) for row, v in zip(_ROWS, stats)]


def summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """The 12 COCOeval.summarize() numbers: the mean of the defined (> -1) cells of each slice, -1 if none."""
    areas = list(AREA_RANGES)
    stats = np.zeros(12)
    for i, (ap, thr, area, max_det) in enumerate(_ROWS):
        s = precision if ap else recall
        if thr is not None:
            s = s[np.where(thr == IOU_THRESHOLDS)[0]]
        a, m = areas.index(area), MAX_DETS.index(max_det)
        s = s[..., a, m]
        stats[i] = np.mean(s[s > -1]) if np.any(s > -1) else -1.0
    return stats


def box_iou_xywh(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Element-wise IoU of paired boxes dt [N, 4] and gt [N, 4] in (x, y, w, h): |D n G| / (|D| + |G| - |D n G|),
    or |D n G| / |D| where `crowd` [N] (a crowd region covers many objects; a detection inside it is no error).

    Notes: 002 §4.1 (IoU; the notes' denominator `- |A u B|` is a typo for `- |A n B|`), COCO's crowd rule.
    Areas are w h (continuous coordinates, no +1); disjoint or touching boxes give 0.
    """
    w = np.minimum(dt[:, 0] + dt[:, 2], gt[:, 0] + gt[:, 2]) - np.maximum(dt[:, 0], gt[:, 0])
    h = np.minimum(dt[:, 1] + dt[:, 3], gt[:, 1] + gt[:, 3]) - np.maximum(dt[:, 1], gt[:, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    da, ga = dt[:, 2] * dt[:, 3], gt[:, 2] * gt[:, 3]
    union = np.where(crowd, da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def _index(ids: np.ndarray, universe: list) -> np.ndarray:
    """Position of each id in the sorted list `universe`, -1 where absent."""
    lookup = {v: i for i, v in enumerate(universe)}
    return np.fromiter((lookup.get(v, -1) for v in ids.tolist()), dtype=np.int64, count=len(ids))


def _group_starts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted keys: the start of each run and each row's position within its run."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    new = np.ones(n, bool)
    new[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(new)
    run = np.cumsum(new) - 1
    return starts, np.arange(n) - starts[run]


def coco_evaluate(gt: CocoAnnotations, dt: CocoAnnotations, image_ids: list, category_ids: list,
                  iou_type: str = "bbox") -> CocoEvalResult:
    """COCO evaluation of detections `dt` against ground truth `gt` on `image_ids` and `category_ids` (as
    COCOeval: images and classes of the gt file). Returns precision/recall arrays and the 12 summary numbers.

    Notes: 002 §4.1 (TP/FP criterion, precision, recall, PR curve, AP, mAP, COCO mAP); see the module docstring.
    """
    if iou_type not in ("bbox", "segm"):
        raise ConfigError(f"iou_type must be 'bbox' or 'segm'; got {iou_type!r}")
    image_ids, category_ids = sorted(set(image_ids)), sorted(set(category_ids))
    T, R, K, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(category_ids), len(AREA_RANGES), len(MAX_DETS)
    areas = np.array(list(AREA_RANGES.values()))  # [A, 2]
    n_img = max(len(image_ids), 1)

    # ground truth of the evaluated images and classes, grouped by (class, image), file order inside a group
    gi, gc = _index(gt.image_id, image_ids), _index(gt.category_id, category_ids)
    keep = np.flatnonzero((gi >= 0) & (gc >= 0))
    g_cell = gc[keep] * n_img + gi[keep]
    order = np.argsort(g_cell, kind="stable")
    g_rows, g_cell = keep[order], g_cell[order]
    g_crowd = gt.iscrowd[g_rows].astype(bool)
    g_area = gt.area[g_rows]
    g_ig = g_crowd[None, :] | (g_area[None, :] < areas[:, :1]) | (g_area[None, :] > areas[:, 1:])  # [A, G]
    g_zero_id = (gt.ann_id[g_rows] == 0) if gt.ann_id is not None else np.zeros(len(g_rows), bool)
    cells, g_start, g_count = np.unique(g_cell, return_index=True, return_counts=True)

    # detections: per (class, image) by decreasing score (stable), the first max_det kept
    di, dc = _index(dt.image_id, image_ids), _index(dt.category_id, category_ids)
    keep = np.flatnonzero((di >= 0) & (dc >= 0))
    d_cell = dc[keep] * n_img + di[keep]
    score = dt.score[keep]
    order = np.lexsort((-score, d_cell))
    d_rows, d_cell, score = keep[order], d_cell[order], score[order]
    _, rank = _group_starts(d_cell)
    top = rank < MAX_DETS[-1]
    d_rows, d_cell, score, rank = d_rows[top], d_cell[top], score[top], rank[top]
    d_area = dt.area[d_rows]
    d_out = (d_area[None, :] < areas[:, :1]) | (d_area[None, :] > areas[:, 1:])  # [A, D]
    n_det = len(d_rows)

    # IoU of every (detection, gt) pair of one cell, flat
    pos = np.searchsorted(cells, d_cell)
    pos = np.minimum(pos, max(len(cells) - 1, 0))
    has_gt = cells[pos] == d_cell if len(cells) else np.zeros(n_det, bool)
    d_with = np.flatnonzero(has_gt)
    cell_of = pos[d_with]
    reps = g_count[cell_of]
    pair_d = np.repeat(d_with, reps)
    offs = np.arange(len(pair_d)) - np.repeat(np.cumsum(reps) - reps, reps)
    pair_g = g_start[np.repeat(cell_of, reps)] + offs  # index into the grouped gt rows
    if iou_type == "bbox":
        iou = box_iou_xywh(dt.bbox[d_rows[pair_d]], gt.bbox[g_rows[pair_g]], g_crowd[pair_g])
    else:
        from .mask_iou import paired_mask_iou

        iou = paired_mask_iou([dt.masks[i] for i in d_rows[pair_d]], [gt.masks[i] for i in g_rows[pair_g]],
                              g_crowd[pair_g])

    # greedy matching per (area, IoU threshold) lane: matched gt per detection, -1 if none
    match = _greedy_match(iou, pair_d, pair_g, offs, cell_of, d_with, g_start, g_count, g_crowd, g_ig, n_det)
    lane_ig = g_ig[:, None, :]  # [A, 1, G]
    matched = match >= 0  # [A, T, D]
    safe = np.where(matched, match, 0)
    d_ig = matched & np.take_along_axis(np.broadcast_to(lane_ig, (A, T, len(g_rows))), safe, axis=2) \
        if len(g_rows) else np.zeros_like(matched)
    counted = matched & ~g_zero_id[safe] if len(g_rows) else matched
    d_ig = d_ig | (~counted & d_out[:, None, :])
    tps = counted & ~d_ig
    fps = ~counted & ~d_ig

    # accumulate: per class, detections of all images ranked by score (stable: image order, then rank)
    d_class, d_img = d_cell // n_img, d_cell % n_img
    order = np.lexsort((rank, d_img, -score, d_class))
    tps, fps, rank, d_class, score = tps[:, :, order], fps[:, :, order], rank[order], d_class[order], score[order]
    cls_start = np.searchsorted(d_class, np.arange(K + 1))
    npig = np.zeros((K, A), np.int64)
    g_class = g_cell // n_img
    for a in range(A):
        npig[:, a] = np.bincount(g_class[~g_ig[a]], minlength=K)[:K]
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    scores = -np.ones((T, R, K, A, M))
    for k in range(K):
        s, e = cls_start[k], cls_start[k + 1]
        for m, max_det in enumerate(MAX_DETS):
            sel = np.arange(s, e)[rank[s:e] < max_det]
            sc = score[sel]
            for a in range(A):
                if npig[k, a] == 0:
                    continue
                tp = np.cumsum(tps[a][:, sel], axis=1).astype(float)
                fp = np.cumsum(fps[a][:, sel], axis=1).astype(float)
                nd = len(sel)
                rc = tp / npig[k, a]
                pr = tp / (fp + tp + np.spacing(1))
                recall[:, k, a, m] = rc[:, -1] if nd else 0
                if not nd:
                    precision[:, :, k, a, m] = 0
                    scores[:, :, k, a, m] = 0
                    continue
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                for t in range(T):
                    idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                    ok = idx < nd
                    idx = np.minimum(idx, nd - 1)
                    precision[t, :, k, a, m] = np.where(ok, pr[t, idx], 0.0)
                    scores[t, :, k, a, m] = np.where(ok, sc[idx], 0.0)
    return CocoEvalResult(precision, recall, scores, category_ids, summarize(precision, recall))


def _greedy_match(iou, pair_d, pair_g, offs, cell_of, d_with, g_start, g_count, g_crowd, g_ig, n_det):
    """Matched gt row (index into the grouped gt) per area lane, IoU threshold and detection: int [A, T, D], -1
    for none. Detections are in (cell, score) order already; all cells advance one detection per step."""
    A, T = g_ig.shape[0], len(IOU_THRESHOLDS)
    match = np.full((A, T, n_det), -1, np.int64)
    if len(iou) == 0:
        return match
    lo = min(IOU_THRESHOLDS[0], 1 - 1e-10)
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    # a detection whose best IoU is below the lowest threshold matches nothing in any lane: skip it
    best = np.full(n_det, -1.0)
    np.maximum.at(best, pair_d, iou)
    cand = best[d_with] >= lo
    cand_d, cand_cell = d_with[cand], cell_of[cand]
    if len(cand_d) == 0:
        return match
    # step of each candidate within its cell (they are in score order), cells bucketed by their gt count
    _, step = _group_starts(cand_cell)
    first_pair = np.zeros(n_det, np.int64)  # where a detection's IoU row starts in the flat pair arrays
    starts, _ = _group_starts(pair_d)
    first_pair[pair_d[starts]] = starts
    cells_u, cell_inv = np.unique(cand_cell, return_inverse=True)
    n_steps = np.bincount(cell_inv)
    width = 1 << np.ceil(np.log2(np.maximum(g_count[cells_u], 1))).astype(int)
    for w in np.unique(width):
        bucket = np.flatnonzero(width == w)
        bucket = bucket[np.argsort(-n_steps[bucket], kind="stable")]  # longest first: active cells are a prefix
        P, S = len(bucket), int(n_steps[bucket[0]])
        slot = np.full(len(cells_u), -1)
        slot[bucket] = np.arange(P)
        in_b = np.flatnonzero(slot[cell_inv] >= 0)
        p_of, s_of = slot[cell_inv[in_b]], step[in_b]
        cnt = g_count[cells_u[bucket]]
        gs = g_start[cells_u[bucket]]
        # per-bucket tensors: IoU [P, S, w], ignore [P, A, w], crowd [P, w], free [P, A, T, w]
        ious = np.full((P, S, w), -1.0)
        dets = np.full((P, S), -1)
        dets[p_of, s_of] = cand_d[in_b]
        col = np.arange(w)
        valid = col[None, :] < cnt[:, None]  # [P, w]
        grow = np.where(valid, gs[:, None] + col[None, :], 0)  # gt row of each column
        d_sel = cand_d[in_b]
        n_g = cnt[p_of]
        flat_src = np.repeat(first_pair[d_sel], n_g) + (np.arange(n_g.sum()) - np.repeat(np.cumsum(n_g) - n_g, n_g))
        pp, ss = np.repeat(p_of, n_g), np.repeat(s_of, n_g)
        cc = offs[flat_src]
        ious[pp, ss, cc] = iou[flat_src]
        ig = np.where(valid[:, None, :], g_ig[:, grow].transpose(1, 0, 2), True)  # [P, A, w]
        crowd = np.where(valid, g_crowd[grow], False)
        free = np.broadcast_to(valid[:, None, None, :], (P, A, T, w)).copy()
        steps_b = n_steps[bucket]
        thr_b = thr[None, None, :, None]
        for s in range(S):
            n = int(np.count_nonzero(steps_b > s))  # cells with a detection at this step (a prefix)
            x = ious[:n, s][:, None, None, :]  # [n, 1, 1, w]
            ok = free[:n] & (x >= thr_b)
            igb = ig[:n, :, None, :]
            regular = ok & ~igb
            use = np.where(regular.any(-1, keepdims=True), regular, ok & igb)
            vals = np.where(use, x, -np.inf)
            m = w - 1 - np.argmax(vals[..., ::-1], axis=-1)  # last column of the highest IoU
            hit = use.any(-1)  # [n, A, T]
            d_idx = dets[:n, s]
            rows = np.arange(n)[:, None, None]
            grow_m = grow[rows, m]
            match[:, :, d_idx] = np.where(hit, grow_m, -1).transpose(1, 2, 0)
            used = hit & ~crowd[rows, m]
            pi, ai, ti = np.nonzero(used)
            free[pi, ai, ti, m[pi, ai, ti]] = False
    return match
