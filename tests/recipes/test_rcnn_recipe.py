"""The rcnn-shapes recipe (Notes: 002 §4.3.2): its declaration, and a short run that reports COCO mAP and mAP@0.5
and whose model.json rebuilds the trained R-CNN."""

import torch

from dlkit import load_run
from dlkit.models.detection.rcnn import RCNN
from dlkit.recipes import get_recipe, run_recipe


def test_declaration():
    recipe = get_recipe("rcnn-shapes")
    assert recipe.metric == "test/map_50" and recipe.task == "detection" and 0 < recipe.threshold < 1
    assert recipe.defaults["data"] == "shapes" and recipe.defaults["model"] == "rcnn_tiny"


def test_smoke_run_reports_map_and_rebuilds_the_trained_network(tmp_path):
    summary = run_recipe("rcnn-shapes", smoke=True, out=tmp_path)
    assert summary["steps"] > 0 and 0 <= summary["metrics"]["test/map"] <= summary["metrics"]["test/map_50"] <= 1
    run = load_run(tmp_path)
    assert isinstance(run.model, RCNN) and run.model.num_classes == 5
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = run.model.eval()(images)
        proposals = run.model.proposals(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}
    assert len(proposals) == 2 and proposals[0].shape[1] == 4
