"""The Faster R-CNN recipes (Notes: 002 §4.3.2-4.3.3): the report shows the region proposals beside the final
boxes, fpn-mnistdet reports the AP of small objects, faster-rcnn-raccoon fine-tunes the ImageNet Lite0."""

import json

from dlkit.nn.frozen_batchnorm import FrozenBatchNorm2d
from dlkit.recipes import detection, run_recipe


def test_fpn_mnistdet_reports_small_object_ap_and_draws_the_proposals(tmp_path, data_root):
    run_recipe("fpn-mnistdet", smoke=True, out=tmp_path, data_dir=str(data_root))
    finals = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    assert 0 <= finals["test/map_small"] <= 1  # every digit of these scenes is small (area < 32^2)
    assert {"proposals.png", "detections.png"} <= {p.name for p in (tmp_path / "figures").iterdir()}
    assert 'alt="proposals"' in (tmp_path / "report.html").read_text()


def test_faster_rcnn_raccoon_fine_tunes_the_imagenet_backbone_with_frozen_batch_norms(tmp_path, data_root,
                                                                                    monkeypatch):
    built = []
    make = detection.pretrained_detector
    monkeypatch.setattr(detection, "pretrained_detector", lambda *a: built.append(make(*a)) or built[-1])
    run_recipe("faster-rcnn-raccoon", smoke=True, out=tmp_path, data_dir=str(data_root))
    (model, kwargs), = built
    assert kwargs["frozen_bn"] and kwargs["num_classes"] == 1
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.modules())
    spec = json.loads((tmp_path / "model.json").read_text())
    assert spec["name"] == "fasterrcnn_lite0" and spec["class_names"] == ["raccoon"]
