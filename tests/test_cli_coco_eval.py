"""`dlkit coco-eval GT.json DETECTIONS.json`: pycocotools' summary, character for character; one-line errors."""

import contextlib
import io
import json

import numpy as np
import pytest

from dlkit.cli import main
from dlkit.metrics.detection.synthetic import synthetic_coco

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def files(tmp_path):
    gt, dets = synthetic_coco(11, n_images=20, n_classes=4)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    return tmp_path, gt, dets


def test_coco_eval_prints_pycocotools_summary_and_writes_json(capsys, files):
    tmp, _, _ = files
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        coco = COCO(str(tmp / "gt.json"))
        e = COCOeval(coco, coco.loadRes(str(tmp / "dets.json")), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    ref_lines = [line for line in printed.getvalue().splitlines() if line.startswith(" Average")]
    code, out, err = run(capsys, "coco-eval", tmp / "gt.json", tmp / "dets.json", "--json", tmp / "out.json")
    assert code == 0 and err == ""
    assert out.splitlines() == ref_lines and len(ref_lines) == 12
    written = json.loads((tmp / "out.json").read_text())
    assert written["iou_type"] == "bbox"
    np.testing.assert_allclose([written[k] for k in ("map", "map_50", "map_75", "map_small", "map_medium",
                                                     "map_large", "mar_1", "mar_10", "mar_100", "mar_small",
                                                     "mar_medium", "mar_large")], e.stats, atol=1e-6, rtol=0)


def _write(tmp, name, content):
    path = tmp / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _bad_cases(gt, dets):
    first = gt["annotations"][0]
    yield "gt", "{not json", "not valid JSON"
    yield "gt", {k: v for k, v in gt.items() if k != "annotations"}, "annotations"
    yield "gt", {k: v for k, v in gt.items() if k != "images"}, "images"
    yield "gt", {k: v for k, v in gt.items() if k != "categories"}, "categories"
    yield "gt", {**gt, "annotations": [{k: v for k, v in first.items() if k != "bbox"}]}, "bbox"
    yield "gt", {**gt, "annotations": [{**first, "bbox": "10 10 5 5"}]}, "annotations[0].bbox"
    yield "gt", {**gt, "annotations": [{**first, "bbox": [1, 2, 3]}]}, "annotations[0].bbox"
    yield "gt", {**gt, "annotations": [{**first, "image_id": 10 ** 9}]}, "annotations[0].image_id"
    yield "gt", {**gt, "annotations": [{**first, "category_id": "cat"}]}, "annotations[0].category_id"
    yield "dets", "[{", "not valid JSON"
    yield "dets", [], "empty"
    yield "dets", {"annotations": dets}, "JSON list"
    yield "dets", [*dets[:3], {**dets[0], "image_id": 10 ** 9}], "results[3].image_id"
    yield "dets", [{k: v for k, v in dets[0].items() if k != "score"}], "results[0] has no 'score'"
    yield "dets", [{**dets[0], "score": None}], "results[0].score"
    yield "dets", [{**dets[0], "bbox": [1, 2, "w", 4]}], "results[0].bbox"
    yield "dets", [1, 2], "results[0] must be a JSON object"


def test_coco_eval_malformed_files_get_one_line_naming_file_and_field(capsys, files):
    tmp, gt, dets = files
    for which, content, field in _bad_cases(gt, dets):
        gt_path, dt_path = tmp / "gt.json", tmp / "dets.json"
        if which == "gt":
            gt_path = _write(tmp, "bad_gt.json", content)
        else:
            dt_path = _write(tmp, "bad_dets.json", content)
        code, out, err = run(capsys, "coco-eval", gt_path, dt_path)
        bad = gt_path if which == "gt" else dt_path
        assert code == 2 and out == "", (field, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert str(bad) in err and field in err, (field, err)


def test_coco_eval_missing_file_and_bad_option(capsys, files):
    tmp, _, _ = files
    code, _, err = run(capsys, "coco-eval", tmp / "nope.json", tmp / "dets.json")
    assert code == 2 and "nope.json" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "coco-eval", tmp / "gt.json", tmp / "nope.json")
    assert code == 2 and "nope.json" in err and "not found" in err
    with pytest.raises(SystemExit) as exc:
        main(["coco-eval", str(tmp / "gt.json"), str(tmp / "dets.json"), "--iou-type", "keypoints"])
    assert exc.value.code == 2 and "--iou-type" in capsys.readouterr().err
