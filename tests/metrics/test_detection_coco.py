"""COCO evaluation (Notes: 002 §4.1 COCO mAP) equal to pycocotools' COCOeval, and COCO's RLE masks."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.metrics.detection import CocoAnnotations, COCOMeanAP, box_iou_xywh, coco_evaluate, evaluate_coco_files
from dlkit.metrics.detection.mask_rle import (
    polygon_to_mask,
    rle_area,
    rle_decode,
    rle_encode,
    rle_to_bbox,
    string_to_counts,
)
from dlkit.metrics.detection.synthetic import synthetic_coco

pycocotools = pytest.importorskip("pycocotools")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools.mask on numpy 2
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def reference(gt: dict, dets: list, iou_type: str = "bbox") -> COCOeval:
    """pycocotools on copies (loadRes writes into the detections)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


def ours(gt: dict, dets: list):
    def arrays(anns, is_det):
        return CocoAnnotations(
            np.array([a["image_id"] for a in anns]), np.array([a["category_id"] for a in anns]),
            np.array([a["bbox"] for a in anns], float).reshape(-1, 4),
            np.array([a["bbox"][2] * a["bbox"][3] if is_det else a["area"] for a in anns], float),
            np.array([bool(a.get("iscrowd", 0)) for a in anns]),
            np.array([a["score"] for a in anns], float) if is_det else None,
            np.array([a.get("id", i + 1) for i, a in enumerate(anns)]))

    return coco_evaluate(arrays(gt["annotations"], False), arrays(dets, True), [i["id"] for i in gt["images"]],
                         [c["id"] for c in gt["categories"]])


def assert_same(result, ref):
    assert np.abs(result.stats - np.asarray(ref.stats)).max() <= 1e-6, (result.stats, ref.stats)
    assert result.precision.shape == ref.eval["precision"].shape
    np.testing.assert_allclose(result.precision, ref.eval["precision"], atol=1e-6, rtol=0)  # per class, IoU, area
    np.testing.assert_allclose(result.recall, ref.eval["recall"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(result.scores, ref.eval["scores"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", range(12))
def test_bbox_equals_pycocotools_on_random_cases(seed):
    """Many images and classes, crowd regions, empty images, >100 detections in a cell, tied scores and IoUs."""
    gt, dets = synthetic_coco(seed, n_images=25 + 3 * seed, n_classes=1 + seed % 7, max_gt=4 + seed,
                              dets_per_gt=1 + seed % 4, false_positives=2 + 3 * (seed % 5),
                              crowd_rate=(0.0, 0.1, 0.35)[seed % 3], crowded_images=1 + seed % 2)
    assert any(a["iscrowd"] for a in gt["annotations"]) or seed % 3 == 0
    per_image = {}
    for d in dets:
        per_image[(d["image_id"], d["category_id"])] = per_image.get((d["image_id"], d["category_id"]), 0) + 1
    assert max(per_image.values()) > 100
    assert_same(ours(gt, dets), reference(gt, dets))


def test_bbox_edge_cases_equal_pycocotools():
    """A class with detections but no gt (-1 cells), one with gt but no detection (AP 0), a gt with id 0 (COCOeval
    counts its match as a false positive), an image with neither, exact duplicates (tied score and IoU)."""
    gt = {"images": [{"id": i, "width": 100, "height": 100} for i in (3, 1, 2)],
          "categories": [{"id": c, "name": str(c)} for c in (1, 2, 5)],
          "annotations": [
              {"id": 0, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 8, "image_id": 1, "category_id": 1, "bbox": [0, 0, 90, 90], "area": 8100, "iscrowd": 1},
              {"id": 9, "image_id": 3, "category_id": 2, "bbox": [5, 5, 40, 40], "area": 1600, "iscrowd": 0},
              {"id": 10, "image_id": 3, "category_id": 1, "bbox": [50, 50, 40, 40], "area": 5000, "iscrowd": 0}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [11, 10, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 10], "score": 0.5},
            {"image_id": 3, "category_id": 1, "bbox": [52, 50, 40, 40], "score": 0.7},
            {"image_id": 3, "category_id": 5, "bbox": [5, 5, 40, 40], "score": 0.8},
            {"image_id": 3, "category_id": 99, "bbox": [5, 5, 40, 40], "score": 0.8}]
    result, ref = ours(gt, dets), reference(gt, dets)
    assert_same(result, ref)
    assert (result.precision[:, :, 2] == -1).all() and (result.precision[:, :, 1, 0] == 0).all()


def test_perfect_detector_scores_one():
    """Notes: 002 §4.1: detections equal to the gt boxes give AP = AR = 1 (areas without any gt: -1)."""
    gt, _ = synthetic_coco(3, n_images=20, crowd_rate=0.0)
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.5}
            for a in gt["annotations"]]
    stats = ours(gt, dets).stats
    assert stats[0] == stats[1] == stats[8] == 1.0
    assert np.abs(stats - reference(gt, dets).stats).max() <= 1e-6


def test_box_iou_xywh_equals_pycocotools_and_torchvision():
    """Crowd pairs against pycocotools.mask.iou (|D n G| / |D|), the others also against torchvision.ops.box_iou."""
    from torchvision.ops import box_iou

    rng = np.random.default_rng(0)
    d = np.round(rng.uniform(0, 50, (40, 4)), 1)
    g = np.round(rng.uniform(0, 50, (40, 4)), 1)
    crowd = rng.random(40) < 0.5
    ref = np.diag(mask_utils.iou(d, g, crowd.astype(np.uint8)))  # rows dt, columns gt; crowd flags per gt
    ours = box_iou_xywh(d, g, crowd)
    np.testing.assert_allclose(ours, ref, atol=1e-12, rtol=0)
    assert (ours[crowd] > 0).any() and (ours == 0).any()

    def xyxy(b):
        return torch.from_numpy(np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1))

    tv = box_iou(xyxy(d), xyxy(g)).diagonal().numpy()
    np.testing.assert_allclose(box_iou_xywh(d, g, np.zeros(40, bool)), tv, atol=1e-12, rtol=0)
    # the notes' hand value: [0, 0, 2, 2] against [1, 1, 3, 3] (xyxy) has IoU 1/7
    hand = box_iou_xywh(np.array([[0., 0, 2, 2]]), np.array([[1., 1, 2, 2]]), np.array([False]))
    assert hand[0] == pytest.approx(1 / 7)


def test_rle_encode_decode_area_bbox_equal_pycocotools():
    rng = np.random.default_rng(1)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        ref = mask_utils.encode(np.asfortranarray(m))
        rle = rle_encode(m)
        assert rle["counts"] == ref["counts"].decode() and rle["size"] == list(ref["size"])
        assert (rle_decode(ref) == m).all() and rle_area(ref) == mask_utils.area(ref)
        np.testing.assert_array_equal(rle_to_bbox(ref), mask_utils.toBbox(ref))
        assert string_to_counts(rle["counts"]).sum() == h * w


def test_polygon_rasterisation_equals_pycocotools():
    rng = np.random.default_rng(2)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(5, 60, 2))
        k = int(rng.integers(3, 9))
        poly = rng.uniform(-2, [w + 2, h + 2] * k).round(int(rng.integers(0, 3))).tolist()
        ref = mask_utils.decode(mask_utils.frPyObjects([poly], h, w)[0])
        np.testing.assert_array_equal(polygon_to_mask(poly, h, w), ref)


def test_to_rle_refuses_masks_of_another_size():
    from dlkit.metrics.detection.mask_rle import to_rle

    rle = rle_encode(np.ones((4, 5), np.uint8))
    np.testing.assert_array_equal(rle_decode(to_rle(rle, 4, 5)), np.ones((4, 5)))
    with pytest.raises(ConfigError, match="size"):
        to_rle(rle, 5, 4)
    with pytest.raises(ConfigError, match="pixels"):
        to_rle({"size": [4, 5], "counts": [3, 4]}, 4, 5)
    with pytest.raises(ConfigError, match="polygons"):
        to_rle([[1, 2, 3]], 4, 5)
    triangle = [[0, 0, 4, 0, 4, 3]]
    ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(triangle, 4, 5)))
    np.testing.assert_array_equal(rle_decode(to_rle(triangle, 4, 5)), ref)


def _polygon(box, rng):
    x, y, w, h = box
    ang = np.linspace(0, 2 * np.pi, 8, endpoint=False) + rng.uniform(-0.3, 0.3, 8)  # near the box's ellipse
    return np.stack([x + w / 2 * (1 + np.cos(ang)), y + h / 2 * (1 + np.sin(ang))], 1).round(2).reshape(-1).tolist()


@pytest.mark.parametrize("seed", range(2))
def test_segm_equals_pycocotools(seed, tmp_path):
    """Polygons and uncompressed-RLE crowd regions in the gt, compressed RLEs as results."""
    rng = np.random.default_rng(seed)
    gt, dets = synthetic_coco(seed, n_images=10, n_classes=3, false_positives=4, crowded_images=0)
    size = {i["id"]: (i["height"], i["width"]) for i in gt["images"]}
    for a in gt["annotations"]:
        poly = _polygon(a["bbox"], rng)
        rle = mask_utils.frPyObjects([poly], *size[a["image_id"]])[0]
        if a["iscrowd"]:
            m = mask_utils.decode(rle).reshape(-1, order="F")
            edges = np.concatenate([[0], np.flatnonzero(m[1:] != m[:-1]) + 1, [len(m)]])
            counts = ([0] if m[0] else []) + np.diff(edges).tolist()
            a["segmentation"] = {"size": list(rle["size"]), "counts": counts}
        else:
            a["segmentation"] = [poly]
        a["area"] = float(mask_utils.area(rle))
    for d in dets:
        rle = mask_utils.frPyObjects([_polygon(d["bbox"], rng)], *size[d["image_id"]])[0]
        d["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"].decode()}
        if seed == 0:  # results with boxes: loadRes takes the box area w h as a detection's area (kept)
            del d["bbox"]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    result = evaluate_coco_files(tmp_path / "gt.json", tmp_path / "dt.json", "segm")
    ref = reference(gt, dets, "segm")
    assert_same(result, ref)
    assert ref.stats[1] > 0.3  # the masks overlap enough to be matched
    from dlkit.cli import main

    assert main(["coco-eval", str(tmp_path / "gt.json"), str(tmp_path / "dt.json"), "--iou-type", "segm",
                 "--json", str(tmp_path / "out.json")]) == 0
    np.testing.assert_allclose(list(json.loads((tmp_path / "out.json").read_text()).values())[1:], ref.stats,
                               atol=1e-6, rtol=0)


def _tensor_batches(gt: dict, dets: list):
    """The same boxes in the detection contract: per image xyxy tensors (float64, so no rounding), images in id
    order (COCOeval ranks tied scores of different images by image id; the metric by update order)."""
    preds, targets = [], []
    for img in sorted(gt["images"], key=lambda i: i["id"]):
        g = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        d = [a for a in dets if a["image_id"] == img["id"]]

        def xyxy(anns):
            b = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
            return torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1)

        preds.append({"boxes": xyxy(d), "scores": torch.tensor([a["score"] for a in d], dtype=torch.float64),
                      "labels": torch.tensor([a["category_id"] for a in d], dtype=torch.int64)})
        targets.append({"boxes": xyxy(g), "labels": torch.tensor([a["category_id"] for a in g], dtype=torch.int64),
                        "iscrowd": torch.tensor([a["iscrowd"] for a in g]),
                        "area": torch.tensor([a["area"] for a in g], dtype=torch.float64)})
    return preds, targets


def _only_gt_classes(gt, dets):
    """COCOMeanAP scores the classes of its targets: pycocotools with the categories that have a gt box."""
    present = {a["category_id"] for a in gt["annotations"]}
    return {**gt, "categories": [c for c in gt["categories"] if c["id"] in present]}


def test_coco_mean_ap_metric_equals_pycocotools_over_batches():
    gt, dets = synthetic_coco(5, n_images=30, n_classes=5)
    preds, targets = _tensor_batches(gt, dets)
    metric = COCOMeanAP()
    for i in range(0, len(preds), 7):  # batches of 7 images
        metric.update(preds[i:i + 7], targets[i:i + 7])
    out = metric.compute()
    ref = reference(_only_gt_classes(gt, dets), dets).stats
    assert set(out) >= {"map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10",
                        "mar_100"}
    np.testing.assert_allclose(list(out.values()), ref, atol=1e-6, rtol=0)
    metric.reset()
    with pytest.raises(ConfigError, match="before any update"):
        metric.compute()


def test_coco_mean_ap_gathers_records_across_ranks(monkeypatch):
    """Under DDP each rank holds its images' records; compute() all-gathers them (AP does not add up)."""
    import torch.distributed as dist

    from dlkit.metrics.meter import ranks_synced

    gt, dets = synthetic_coco(6, n_images=16, n_classes=3)
    preds, targets = _tensor_batches(gt, dets)
    ranks = [COCOMeanAP(), COCOMeanAP()]
    ranks[0].update(preds[:9], targets[:9])
    ranks[1].update(preds[9:], targets[9:])
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [
        ranks[0].records, ranks[1].records]))
    with ranks_synced():
        gathered = ranks[1].compute()
    alone = ranks[1].compute()  # outside ranks_synced: this rank's images only
    ref = reference(_only_gt_classes(gt, dets), dets).stats
    np.testing.assert_allclose(list(gathered.values()), ref, atol=1e-6, rtol=0)
    assert alone["map"] != pytest.approx(gathered["map"])


def test_coco_mean_ap_through_detection_task():
    from types import SimpleNamespace

    from dlkit.tasks.detection import DetectionTask

    gt, dets = synthetic_coco(7, n_images=12, n_classes=3)
    preds, targets = _tensor_batches(gt, dets)

    class Replay(torch.nn.Module):
        """Returns the stored detections of the images it is given (their index is the image's value)."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, images, targets=None):
            return [preds[int(i)] for i in images[:, 0, 0, 0]]

    images = torch.arange(len(preds), dtype=torch.float32).reshape(-1, 1, 1, 1)
    data = [(images[i:i + 4], targets[i:i + 4]) for i in range(0, len(preds), 4)]
    task = DetectionTask(Replay(), SimpleNamespace(), metric=COCOMeanAP)
    out = task.evaluate(Replay(), data)
    np.testing.assert_allclose(out["map"], reference(_only_gt_classes(gt, dets), dets).stats[0], atol=1e-6)


def test_coco_mean_ap_refuses_bad_input():
    metric = COCOMeanAP()
    with pytest.raises(ConfigError, match="missing"):
        metric.update([{"boxes": torch.zeros(0, 4)}], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}])
    with pytest.raises(ConfigError, match="one per image|lengths"):
        metric.update([], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}])
    with pytest.raises(ConfigError, match="iou_type"):
        COCOMeanAP(iou_type="keypoints")


def test_coco_mean_ap_segm_equals_pycocotools():
    """Masks in the detection contract (probabilities cut at 0.5) scored as pycocotools' segm evaluation."""
    rng = np.random.default_rng(8)
    h, w = 30, 40
    yy, xx = np.mgrid[:h, :w]
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    dets, preds, targets = [], [], []

    def blob(near=None):
        p = rng.uniform([5, 5, 2, 2], [35, 25, 10, 8]) if near is None else near + rng.normal(0, 0.7, 4)
        return ((xx - p[0]) / p[2]) ** 2 + ((yy - p[1]) / p[3]) ** 2, p

    for img in range(1, 9):
        gt["images"].append({"id": img, "height": h, "width": w})
        g_masks, g_labels, shapes = [], [], []
        for _ in range(int(rng.integers(0, 4))):
            dist, params = blob()
            m = (dist <= 1).astype(np.uint8)
            shapes.append((params, None))
            label = int(rng.integers(1, 3))
            rle = mask_utils.encode(np.asfortranarray(m))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": img, "category_id": label,
                                      "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                                      "area": float(m.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0})
            g_masks.append(m)
            g_labels.append(label)
            shapes[-1] = (params, label)
        d_probs, d_labels, d_scores = [], [], []
        for _ in range(int(rng.integers(0, 6))):
            near, label = shapes[int(rng.integers(len(shapes)))] if shapes and rng.random() < 0.7 else (None, None)
            prob = np.clip(1.5 - blob(near)[0], 0, 1)
            label, score = label or int(rng.integers(1, 3)), float(rng.random())
            rle = mask_utils.encode(np.asfortranarray((prob >= 0.5).astype(np.uint8)))
            dets.append({"image_id": img, "category_id": label, "score": score,
                         "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}})
            d_probs.append(prob)
            d_labels.append(label)
            d_scores.append(score)
        preds.append({"boxes": torch.zeros(len(d_probs), 4), "scores": torch.tensor(d_scores),
                      "labels": torch.tensor(d_labels, dtype=torch.int64),
                      "masks": torch.tensor(np.array(d_probs).reshape(-1, 1, h, w))})
        targets.append({"boxes": torch.zeros(len(g_masks), 4), "labels": torch.tensor(g_labels, dtype=torch.int64),
                        "masks": torch.tensor(np.array(g_masks).reshape(-1, h, w))})
    metric = COCOMeanAP(iou_type="segm")
    metric.update(preds[:4], targets[:4])
    metric.update(preds[4:], targets[4:])
    ref = reference(_only_gt_classes(gt, dets), dets, "segm").stats
    assert ref[1] > 0
    np.testing.assert_allclose(list(metric.compute().values()), ref, atol=1e-6, rtol=0)
