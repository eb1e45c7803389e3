"""The Mask R-CNN recipe (Notes: 002 §5.2.1) in smoke mode: it trains with the scenes' instance masks and scores the
pasted masks by COCO mask AP."""

import json

from dlkit.metrics.detection.coco_map import COCOMeanAP
from dlkit.recipes import run_recipe


def test_maskrcnn_shapes_scores_masks(tmp_path, monkeypatch):
    kinds = []
    init = COCOMeanAP.__init__
    monkeypatch.setattr(COCOMeanAP, "__init__", lambda self, *a, **k: kinds.append((a, k)) or init(self, *a, **k))
    summary = run_recipe("maskrcnn-shapes", smoke=True, out=tmp_path)
    assert summary["steps"] > 0 and kinds and all(k == {"iou_type": "segm"} for _, k in kinds)
    finals = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    assert 0 <= finals["test/map_50"] <= 1
    spec = json.loads((tmp_path / "model.json").read_text())
    assert spec["name"] == "maskrcnn_tiny" and len(spec["class_names"]) == spec["kwargs"]["num_classes"] == 5
    assert (tmp_path / "figures" / "masks.png").stat().st_size > 5000  # the instance masks in the report
