"""Reading COCO ground-truth and result (detection) files for evaluation, with one-line errors naming the field.

Ground truth: the COCO dict read by `dlkit.data.coco` (`images`, `annotations`, `categories`); an annotation needs
image_id (listed in `images`), category_id and bbox [x, y, w, h] (or a segmentation for `segm`); `area` defaults
to w h (to the mask's area for `segm`), `iscrowd` to 0, `id` to its position + 1.
Results: a non-empty list of {image_id, category_id, score, bbox} (or `segmentation` for `segm`: an RLE as
pycocotools wants it; polygons and uncompressed RLEs are also read), as
pycocotools' `loadRes` reads them: every image_id must be one of the ground truth's images. A detection's area
is w h, as loadRes sets it; for `segm` the mask's pixel count, unless the first result has a `bbox`: then loadRes
takes them all for box results and the area is w h again (kept, so the numbers equal pycocotools').
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ...data.coco import _load_json
from ...data.files import read_text
from ...errors import ConfigError, DataError
from .coco_eval import CocoAnnotations

_MISSING = object()


def _bad(path, what: str) -> ConfigError:
    return ConfigError(f"{path}: {' '.join(what.split())}")


def _field(entries: list, key: str, path, where: str, default=_MISSING) -> list:
    """entries[i][key] for every i (default where absent, if given); the first entry without it is named."""
    try:
        if default is _MISSING:
            return [e[key] for e in entries]
        return [e.get(key, default) for e in entries]
    except (KeyError, TypeError, AttributeError):
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                raise _bad(path, f"{where}[{i}] must be a JSON object; got {type(e).__name__} {str(e)[:60]}") from None
            if key not in e and default is _MISSING:
                hint = " (boxes are [x, y, w, h]; masks are evaluated with iou_type 'segm')" if key == "bbox" else ""
                raise _bad(path, f"{where}[{i}] has no '{key}' field (keys: {sorted(e)[:8]}){hint}") from None
        raise


def _numbers(values: list, path, where: str, key: str, shape: tuple = ()) -> np.ndarray:
    """values as float64 of shape [N, *shape]; the first entry that is not that many numbers is named."""
    try:
        out = np.asarray(values, dtype=np.float64)
        if out.shape == (len(values), *shape) and np.isfinite(out).all():
            return out.reshape(len(values), *shape)
    except (ValueError, TypeError):
        pass
    want = f"{shape[0]} numbers" if shape else "a number"
    for i, v in enumerate(values):
        try:
            a = np.asarray(v, dtype=np.float64)
            ok = a.shape == shape and np.isfinite(a).all() and not isinstance(v, bool | str)
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise _bad(path, f"{where}[{i}].{key} must be {want}{' [x, y, w, h]' if key == 'bbox' else ''}; got "
                             f"{str(v)[:60]}")
    raise _bad(path, f"{where}: field '{key}' must be {want} in every entry")


def _list(data: dict, key: str, path) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        got = type(value).__name__ if key in data else "nothing"
        hint = " (a COCO ground truth lists its classes: [{'id': 1, 'name': ...}, ...])" if key == "categories" else ""
        raise _bad(path, f"field '{key}' must be a list; got {got}{hint}")
    return value


def _ids(values: list, path, where: str, key: str) -> np.ndarray:
    for i, v in enumerate(values):
        if not isinstance(v, int) or isinstance(v, bool):
            raise _bad(path, f"{where}[{i}].{key} must be an integer id; got {str(v)[:40]}")
    return np.asarray(values, dtype=np.int64)


def load_coco_ground_truth(json_path: str | os.PathLike, iou_type: str = "bbox") -> tuple[CocoAnnotations, dict]:
    """(ground-truth annotations, {image id: (height, width)}) of a COCO file; category ids in `.categories`.

    Returns the annotations and a dict with `image_sizes` and `category_ids` (all of the file's categories).
    """
    path = Path(json_path)
    data = _load_json(path, "pass a COCO ground-truth file (images, annotations, categories)")
    images = _list(data, "images", path)
    anns = _list(data, "annotations", path)
    cats = _list(data, "categories", path)
    img_ids = _ids(_field(images, "id", path, "images"), path, "images", "id")
    cat_ids = _ids(_field(cats, "id", path, "categories"), path, "categories", "id")
    sizes = {}
    if iou_type == "segm":
        hs, ws = _field(images, "height", path, "images"), _field(images, "width", path, "images")
        sizes = {int(i): (int(h), int(w)) for i, h, w in zip(img_ids, hs, ws)}
    image_id = _ids(_field(anns, "image_id", path, "annotations"), path, "annotations", "image_id")
    unknown = np.flatnonzero(~np.isin(image_id, img_ids))
    if len(unknown):
        i = int(unknown[0])
        raise _bad(path, f"annotations[{i}].image_id {image_id[i]} is not in 'images' (add the image or drop the "
                         "annotation)")
    category_id = _ids(_field(anns, "category_id", path, "annotations"), path, "annotations", "category_id")
    masks = None
    if iou_type == "segm":
        from .mask_rle import to_rle

        segs = _field(anns, "segmentation", path, "annotations")
        masks = [to_rle(s, *sizes[int(i)], where=f"{path}: annotations[{n}].segmentation")
                 for n, (s, i) in enumerate(zip(segs, image_id))]
    if iou_type == "bbox":
        bbox = _numbers(_field(anns, "bbox", path, "annotations"), path, "annotations", "bbox", (4,))
    else:  # segm compares masks; boxes are not used
        bbox = np.zeros((len(anns), 4))
    if iou_type == "segm":
        from .mask_rle import rle_area

        default_area = [float(rle_area(m)) for m in masks]
    else:
        default_area = (bbox[:, 2] * bbox[:, 3]).tolist()
    area = _numbers([a.get("area", d) if isinstance(a, dict) else d for a, d in zip(anns, default_area)], path,
                    "annotations", "area")
    iscrowd = np.asarray(_field(anns, "iscrowd", path, "annotations", 0), dtype=bool)
    ann_id = np.asarray([a.get("id", i + 1) for i, a in enumerate(anns)])
    gt = CocoAnnotations(image_id, category_id, bbox, area, iscrowd, None, ann_id, masks)
    return gt, {"image_ids": img_ids.tolist(), "category_ids": cat_ids.tolist(), "image_sizes": sizes}


def load_coco_results(source, image_ids: list, iou_type: str = "bbox",
                      image_sizes: dict | None = None) -> CocoAnnotations:
    """Detections from a COCO result file (or an already loaded list): image_id, category_id, score and bbox
    (`segm`: an RLE `segmentation`). Every image_id must be a ground-truth image, as pycocotools' loadRes asserts."""
    path = source if isinstance(source, str | os.PathLike) else "results"
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: results file not found (pass a COCO results JSON list)")
        try:
            dets = json.loads(read_text(path, "write the results file again"))
        except json.JSONDecodeError as e:
            raise _bad(path, f"not valid JSON ({e}); a COCO results file is a list of "
                             "{image_id, category_id, bbox, score} objects") from None
        except DataError:
            raise
    else:
        dets = source
    if not isinstance(dets, list):
        raise _bad(path, f"a COCO results file is a JSON list of detections; got a {type(dets).__name__}"
                         f"{' with keys ' + str(sorted(dets)[:6]) if isinstance(dets, dict) else ''}")
    if not dets:
        raise _bad(path, "the results list is empty: there is no detection to evaluate (pycocotools refuses it too)")
    where = "results"
    image_id = _ids(_field(dets, "image_id", path, where), path, where, "image_id")
    unknown = np.flatnonzero(~np.isin(image_id, np.asarray(image_ids)))
    if len(unknown):
        i = int(unknown[0])
        raise _bad(path, f"{where}[{i}].image_id {image_id[i]} is not an image of the ground truth "
                         f"({len(unknown)} detection(s) name unknown images): evaluate against the matching file")
    category_id = _ids(_field(dets, "category_id", path, where), path, where, "category_id")
    score = _numbers(_field(dets, "score", path, where), path, where, "score")
    masks = None
    if iou_type == "segm":
        from .mask_rle import rle_area, to_rle

        segs = _field(dets, "segmentation", path, where)
        masks = [to_rle(s, *image_sizes[int(i)], where=f"{path}: {where}[{n}].segmentation")
                 for n, (s, i) in enumerate(zip(segs, image_id))]
        if isinstance(dets[0], dict) and dets[0].get("bbox", []) != []:
            # pycocotools' loadRes reads results whose first entry has a box as box results: area = w h
            bbox = _numbers(_field(dets, "bbox", path, where), path, where, "bbox", (4,))
            area = bbox[:, 2] * bbox[:, 3]
        else:
            area = np.asarray([rle_area(m) for m in masks], dtype=np.float64)
            bbox = np.zeros((len(dets), 4))  # segm compares masks; boxes are not used
    else:
        bbox = _numbers(_field(dets, "bbox", path, where), path, where, "bbox", (4,))
        area = bbox[:, 2] * bbox[:, 3]
    return CocoAnnotations(image_id, category_id, bbox, area, np.zeros(len(dets), bool), score,
                           np.arange(1, len(dets) + 1), masks)


def evaluate_coco_files(gt_path: str | os.PathLike, results, iou_type: str = "bbox"):
    """COCO evaluation of a results file (or list) against a ground-truth file: a `CocoEvalResult` whose
    `stats` equal pycocotools' COCOeval(...).stats after evaluate/accumulate/summarize. Notes: 002 §4.1."""
    from .coco_eval import coco_evaluate

    if iou_type not in ("bbox", "segm"):
        raise ConfigError(f"iou_type must be 'bbox' or 'segm'; got {iou_type!r}")
    gt, info = load_coco_ground_truth(gt_path, iou_type)
    dt = load_coco_results(results, info["image_ids"], iou_type, info["image_sizes"])
    return coco_evaluate(gt, dt, info["image_ids"], info["category_ids"], iou_type)
