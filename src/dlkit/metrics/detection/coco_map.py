"""COCO mAP as a streaming metric for `DetectionTask(metric=COCOMeanAP)` (Notes: 002 §4.1 COCO mAP).

`update(preds, targets)` takes one batch in the detection contract (dlkit.tasks.detection): preds per image
{boxes [N, 4] xyxy, scores [N], labels [N]}, targets {boxes [M, 4] xyxy, labels [M]} and optionally `iscrowd`
[M] and `area` [M] (default: the box area), and for `iou_type="segm"` `masks` (preds [N, (1,) H, W]
probabilities or 0/1, cut at 0.5; targets [M, H, W]). Unlike a sum, AP is not additive over images, so the
metric keeps one record per image and, under DDP inside `ranks_synced()`, gathers every rank's records
(`torch.distributed.all_gather_object`) before one COCO evaluation. The classes are those of the ground truth;
the images are numbered in update order (rank by rank under DDP), which is the order COCOeval's image ids give:
it breaks ties between equal scores of different images.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.distributed as dist

from ...errors import ConfigError
from .. import meter
from ..meter import Metric
from .coco_eval import CocoAnnotations, coco_evaluate
from .voc_ap import _xywh

KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100",
        "mar_small", "mar_medium", "mar_large")




def _np(x, dtype) -> np.ndarray:
    return torch.as_tensor(x).detach().cpu().numpy().astype(dtype).reshape(-1)


class COCOMeanAP(Metric):
    """COCO evaluation of a detector's outputs, equal to pycocotools' COCOeval on the same boxes.

    Notes: 002 §4.1. `compute()` -> {map (AP@[.50:.95]), map_50, map_75, map_small, map_medium, map_large,
    mar_1, mar_10, mar_100, mar_small, mar_medium, mar_large}; -1 where undefined, as COCOeval.
    """

    names = KEYS

    def __init__(self, iou_type: str = "bbox"):
        if iou_type not in ("bbox", "segm"):
            raise ConfigError(f"COCOMeanAP iou_type must be 'bbox' or 'segm'; got {iou_type!r}")
        super().__init__()
        self.iou_type = iou_type
        self.records: list[dict] = []

    def reset(self) -> None:
        super().reset()
        self.records = []

    @torch.no_grad()
    def update(self, preds: list[Mapping], targets: list[Mapping]) -> None:
        if not isinstance(preds, list | tuple) or not isinstance(targets, list | tuple) or len(preds) != len(targets):
            sizes = (f" of lengths {len(preds)} and {len(targets)}"
                     if hasattr(preds, "__len__") and hasattr(targets, "__len__") else "")
            raise ConfigError(f"COCOMeanAP.update expects a list of detection dicts and a list of target dicts, one "
                              f"per image; got {type(preds).__name__} and {type(targets).__name__}{sizes}")
        for p, t in zip(preds, targets):
            for name, d, need in (("prediction", p, ("boxes", "scores", "labels")), ("target", t, ("boxes", "labels"))):
                missing = [k for k in need if not isinstance(d, Mapping) or k not in d]
                if missing or (self.iou_type == "segm" and "masks" not in d):
                    raise ConfigError(f"each {name} dict needs {', '.join(need)}"
                                      f"{' and masks' if self.iou_type == 'segm' else ''}; missing "
                                      f"{missing or ['masks']}")
            rec = {"dt_box": _xywh(p["boxes"]), "dt_score": _np(p["scores"], np.float64),
                   "dt_label": _np(p["labels"], np.int64), "gt_box": _xywh(t["boxes"]),
                   "gt_label": _np(t["labels"], np.int64)}
            if not len(rec["dt_box"]) == len(rec["dt_score"]) == len(rec["dt_label"]):
                raise ConfigError(f"detections must be boxes [N, 4], scores [N], labels [N]; got "
                                  f"{len(rec['dt_box'])} boxes, {len(rec['dt_score'])} scores, "
                                  f"{len(rec['dt_label'])} labels")
            if len(rec["gt_box"]) != len(rec["gt_label"]):
                raise ConfigError(f"targets must be boxes [M, 4] and labels [M]; got {len(rec['gt_box'])} boxes "
                                  f"and {len(rec['gt_label'])} labels")
            m = len(rec["gt_box"])
            rec["gt_crowd"] = _np(t["iscrowd"], bool) if "iscrowd" in t else np.zeros(m, bool)
            rec["gt_area"] = (_np(t["area"], np.float64) if "area" in t
                              else rec["gt_box"][:, 2] * rec["gt_box"][:, 3])
            rec["dt_area"] = rec["dt_box"][:, 2] * rec["dt_box"][:, 3]
            if self.iou_type == "segm":
                from .mask_rle import rle_area, rle_encode

                dm = torch.as_tensor(p["masks"]).detach().cpu()
                dm = (dm.reshape(len(rec["dt_box"]), *dm.shape[-2:]) >= 0.5).numpy()
                gm = torch.as_tensor(t["masks"]).detach().cpu().reshape(m, *dm.shape[-2:]).numpy() > 0
                rec["dt_mask"] = [rle_encode(x, compress=False) for x in dm]
                rec["gt_mask"] = [rle_encode(x, compress=False) for x in gm]
                rec["dt_area"] = np.asarray([rle_area(r) for r in rec["dt_mask"]], dtype=np.float64)
                if "area" not in t:
                    rec["gt_area"] = np.asarray([rle_area(r) for r in rec["gt_mask"]], dtype=np.float64)
            self.records.append(rec)

    def _all_records(self) -> list[dict]:
        if meter._SYNC and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.records)
            return [r for part in gathered for r in part]
        return self.records

    def compute(self) -> dict[str, float]:
        records = self._all_records()
        if not records:
            raise ConfigError("COCOMeanAP.compute() before any update: no image to score (is the data empty?)")
        ids = [np.full(len(r["gt_label"]), i) for i, r in enumerate(records)]
        dids = [np.full(len(r["dt_label"]), i) for i, r in enumerate(records)]

        def cat(key):
            return np.concatenate([r[key] for r in records])

        gt = CocoAnnotations(np.concatenate(ids), cat("gt_label"), cat("gt_box").reshape(-1, 4), cat("gt_area"),
                             cat("gt_crowd"), None, None,
                             [m for r in records for m in r["gt_mask"]] if self.iou_type == "segm" else None)
        dt = CocoAnnotations(np.concatenate(dids), cat("dt_label"), cat("dt_box").reshape(-1, 4), cat("dt_area"),
                             np.zeros(len(np.concatenate(dids)), bool), cat("dt_score"), None,
                             [m for r in records for m in r["dt_mask"]] if self.iou_type == "segm" else None)
        result = coco_evaluate(gt, dt, list(range(len(records))), np.unique(gt.category_id).tolist(), self.iou_type)
        return dict(zip(KEYS, (float(v) for v in result.stats)))

    def __repr__(self) -> str:
        return f"COCOMeanAP(iou_type={self.iou_type!r}, images={len(self.records)})"
