"""Panoptic quality (PQ), the panoptic-segmentation metric (Notes: 002 §5.3; PQ itself is not in the notes, it is
the metric of Kirillov et al., "Panoptic Segmentation", as the COCO panoptic API computes it).

A panoptic segmentation of one image is a pair `(id_map, segments)`, COCO panoptic's format: `id_map` is an integer
map [H, W] giving each pixel the id of its segment (`void_id`, 0 by default, for unlabelled pixels) and `segments`
lists one dict per segment, `{"id": int, "category": int, "iscrowd": 0 or 1 (optional, default 0)}` (COCO's key
`"category_id"` is accepted too). Every pixel has exactly one label by construction; things have one segment per
instance, stuff one segment per category. Every non-void id of the map must be listed; a listed segment with no
pixel (e.g. cropped away) is ignored.

Matching, per image: a predicted and a ground-truth segment of the same category match when IoU > 0.5 (strictly;
with non-overlapping segments at most one pair per segment can pass it). For category c, over the data set,

    PQ_c = sum_{TP} IoU / (|TP| + |FP|/2 + |FN|/2) = SQ_c x RQ_c,
    SQ_c = sum_{TP} IoU / |TP|   (0 when |TP| = 0),     RQ_c = |TP| / (|TP| + |FP|/2 + |FN|/2)

with TP the matched pairs, FP the unmatched predictions, FN the unmatched ground-truth segments. PQ, SQ and RQ are
the means of PQ_c, SQ_c, RQ_c over the categories that appear (TP + FP + FN > 0), over all of them, the things
alone and the stuff alone (so the mean PQ is in general not mean SQ x mean RQ).

COCO's conventions: the IoU of a pair leaves out the predicted segment's pixels that are void in the ground truth;
a ground-truth crowd segment (`iscrowd` 1) is never matched and never a FN; an unmatched prediction is not a FP when
more than half of its pixels are void in the ground truth or lie in a crowd segment of its category (COCO keeps one
crowd region per category and image; here every crowd segment of the category counts). Thresholds are compared in
integers (2 x intersection > union), so an IoU of exactly 0.5 never matches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from .meter import Metric


def _category(seg: Mapping, where: str) -> int:
    if "category" in seg:
        return int(seg["category"])
    if "category_id" in seg:
        return int(seg["category_id"])
    raise ConfigError(f"{where}: every segment needs 'id' and 'category'; got keys {sorted(seg)} "
                      "(write each as {'id': 3, 'category': 7, 'iscrowd': 0})")


def _index_segments(id_map, segments: Sequence[Mapping], num_categories: int, void_id: int, where: str):
    """The map flattened to segment indices (void -> S), and the segments' categories [S] and crowd flags [S]."""
    id_map = torch.as_tensor(np.asarray(id_map) if isinstance(id_map, np.ndarray) else id_map)
    if id_map.dim() != 2 or id_map.is_floating_point() or id_map.is_complex():
        raise ConfigError(f"{where}: the segment-id map must be an integer map [H, W]; got shape "
                          f"{tuple(id_map.shape)}, dtype {id_map.dtype} (one image at a time, ids as .long())")
    if any(not isinstance(s, Mapping) or "id" not in s for s in segments):
        raise ConfigError(f"{where}: segments must be dicts with 'id' and 'category'; got {list(segments)[:3]!r}")
    dev = id_map.device
    ids = torch.tensor([int(s["id"]) for s in segments], dtype=torch.int64, device=dev)
    cats = torch.tensor([_category(s, where) for s in segments], dtype=torch.int64, device=dev)
    crowd = torch.tensor([bool(s.get("iscrowd", 0)) for s in segments], dtype=torch.bool, device=dev)
    if len(ids) != len(set(ids.tolist())) or (ids == void_id).any():
        raise ConfigError(f"{where}: segment ids must be unique and differ from void_id={void_id}; got ids "
                          f"{ids.tolist()}")
    if len(cats) and (cats.min() < 0 or cats.max() >= num_categories):
        raise ConfigError(f"{where}: categories must lie in 0..{num_categories - 1}; got {cats.tolist()} "
                          "(raise num_categories or renumber the categories)")
    flat = id_map.reshape(-1).long()
    order = torch.argsort(ids)
    pos = torch.searchsorted(ids[order], flat).clamp_max(max(len(ids) - 1, 0))
    idx = order[pos] if len(ids) else torch.zeros_like(flat)
    known = ids[idx] == flat if len(ids) else torch.zeros_like(flat, dtype=torch.bool)
    unknown = ~known & (flat != void_id)
    if unknown.any():
        raise ConfigError(f"{where}: the map holds segment id {int(flat[unknown][0])} that is not in the segment "
                          f"list (ids {ids.tolist()}); list every segment or set its pixels to void_id={void_id}")
    return torch.where(known, idx, torch.full_like(idx, len(ids))), cats, crowd


def panoptic_statistics(pred, target, num_categories: int, void_id: int = 0) -> dict[str, Tensor]:
    """Per-category TP, FP, FN (int64 [C]) and the summed IoU of the TPs (float64 [C]) of one image.

    `pred` and `target` are `(id_map [H, W], segments)` pairs (module docstring). Notes: 002 §5.3.
    """
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ConfigError(f"panoptic_statistics: {name} must be a pair (id_map [H, W], segments list); got "
                              f"{type(x).__name__}")
    p_idx, p_cat, _ = _index_segments(pred[0], pred[1], num_categories, void_id, "pred")
    g_idx, g_cat, g_crowd = _index_segments(target[0], target[1], num_categories, void_id, "target")
    if p_idx.numel() != g_idx.numel() or tuple(torch.as_tensor(pred[0]).shape) != tuple(
            torch.as_tensor(target[0]).shape):
        raise ConfigError(f"panoptic_statistics: pred and target maps must have one shape; got "
                          f"{tuple(torch.as_tensor(pred[0]).shape)} and {tuple(torch.as_tensor(target[0]).shape)}")
    n_p, n_g = len(p_cat), len(g_cat)
    # inter[g, p]: pixels of GT segment g (row n_g: GT void) in predicted segment p (column n_p: predicted void)
    inter = torch.bincount(g_idx * (n_p + 1) + p_idx, minlength=(n_g + 1) * (n_p + 1)).view(n_g + 1, n_p + 1)
    area_g, area_p = inter.sum(1)[:n_g], inter.sum(0)[:n_p]
    void_p = inter[n_g, :n_p]
    inter = inter[:n_g, :n_p]
    union = area_g[:, None] + area_p[None, :] - inter - void_p[None, :]
    same = g_cat[:, None] == p_cat[None, :]
    match = same & ~g_crowd[:, None] & (2 * inter > union)
    g_present, p_present = area_g > 0, area_p > 0

    tp = torch.zeros(num_categories, dtype=torch.int64, device=inter.device)
    fp, fn = torch.zeros_like(tp), torch.zeros_like(tp)
    iou = torch.zeros(num_categories, dtype=torch.float64, device=inter.device)
    gi, pi = match.nonzero(as_tuple=True)
    tp.index_add_(0, g_cat[gi], torch.ones_like(gi))
    iou.index_add_(0, g_cat[gi], inter[gi, pi].double() / union[gi, pi].double())
    fn_mask = g_present & ~match.any(1) & ~g_crowd
    fn.index_add_(0, g_cat[fn_mask], torch.ones_like(g_cat[fn_mask]))
    ignored = void_p + (inter * (same & g_crowd[:, None])).sum(0)
    fp_mask = p_present & ~match.any(0) & ~(2 * ignored > area_p)
    fp.index_add_(0, p_cat[fp_mask], torch.ones_like(p_cat[fp_mask]))
    return {"tp": tp, "fp": fp, "fn": fn, "iou": iou}


def _is_pair(x) -> bool:
    return isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[0], (Tensor, np.ndarray))


class PanopticQuality(Metric):
    """Streaming PQ / SQ / RQ over a data set, overall, over things and over stuff. Notes: 002 §5.3.

    `update(preds, targets)` takes one `(id_map, segments)` pair each or lists of them (a batch); the states are
    per-category sums (TP, FP, FN, summed IoU), so `compute` sums them over DDP ranks. `thing_categories` lists the
    category indices that are things; the other categories of 0..num_categories-1 are stuff.
    """

    def __init__(self, num_categories: int, thing_categories: Sequence[int] = (), void_id: int = 0):
        if not isinstance(num_categories, int) or num_categories < 1:
            raise ConfigError(f"PanopticQuality: num_categories must be a positive int; got {num_categories!r}")
        things = sorted({int(c) for c in thing_categories})
        if things and (things[0] < 0 or things[-1] >= num_categories):
            raise ConfigError(f"PanopticQuality: thing_categories must lie in 0..{num_categories - 1}; got {things}")
        super().__init__()
        self.num_categories, self.void_id = num_categories, void_id
        self.is_thing = torch.zeros(num_categories, dtype=torch.bool)
        self.is_thing[things] = True
        for name in ("tp", "fp", "fn", "images"):
            self.add_state(name, torch.zeros(() if name == "images" else num_categories, dtype=torch.int64))
        self.add_state("iou", torch.zeros(num_categories, dtype=torch.float64))

    @torch.no_grad()
    def update(self, preds, targets) -> None:
        """Add one image's `(id_map, segments)` prediction and ground truth, or lists of them."""
        if _is_pair(preds) and _is_pair(targets):
            preds, targets = [preds], [targets]
        if len(preds) != len(targets):
            raise ConfigError(f"PanopticQuality.update needs one prediction per ground truth; got {len(preds)} "
                              f"predictions and {len(targets)} ground truths")
        for p, t in zip(preds, targets):
            stats = panoptic_statistics(p, t, self.num_categories, self.void_id)
            for name, value in stats.items():
                setattr(self, name, getattr(self, name).to(value.device) + value)
            self.images = self.images.to(self.tp.device) + 1

    def compute(self) -> dict:
        """pq, sq, rq (and _things, _stuff), the number of categories averaged (n, n_things, n_stuff) and
        per-category lists pq_per_class, sq_per_class, rq_per_class (NaN for a category that never appears)."""
        if self.synced("images").item() == 0:
            raise ConfigError("PanopticQuality.compute() before any update: no image to score")
        tp, fp, fn = (self.synced(n).cpu().double() for n in ("tp", "fp", "fn"))
        iou = self.synced("iou").cpu()
        present = (tp + fp + fn) > 0
        den = (tp + 0.5 * fp + 0.5 * fn).clamp_min(1e-300)
        nan = torch.full_like(tp, float("nan"))
        per = {"pq": torch.where(present, iou / den, nan),
               "sq": torch.where(present, torch.where(tp > 0, iou / tp.clamp_min(1), 0.0), nan),
               "rq": torch.where(present, tp / den, nan)}
        out: dict = {}
        for suffix, group in (("", torch.ones_like(present)), ("_things", self.is_thing), ("_stuff", ~self.is_thing)):
            keep = present & group
            for key, values in per.items():
                out[key + suffix] = values[keep].mean().item() if keep.any() else float("nan")
            out["n" + suffix] = int(keep.sum())
        for key, values in per.items():
            out[f"{key}_per_class"] = values.tolist()
        return out

    def __repr__(self) -> str:
        things = self.is_thing.nonzero().view(-1).tolist()
        return f"PanopticQuality(num_categories={self.num_categories}, things={things}, images={int(self.images)})"
