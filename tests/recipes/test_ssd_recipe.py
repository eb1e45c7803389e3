"""The ssd-shapes recipe (Notes: 002 §4.3.3-4.3.4): its declaration, and a short run that reports COCO mAP and
mAP@0.5 and whose model.json rebuilds the trained SSD."""

import torch

from dlkit import load_run
from dlkit.models.detection.ssd import SSD
from dlkit.recipes import get_recipe, run_recipe


def test_declaration():
    recipe = get_recipe("ssd-shapes")
    assert recipe.metric == "test/map_50" and recipe.task == "detection" and 0 < recipe.threshold < 1
    assert recipe.defaults["data"] == "shapes" and recipe.defaults["model"] == "ssd_tiny"


def test_smoke_run_reports_map_and_rebuilds_the_trained_network(tmp_path):
    summary = run_recipe("ssd-shapes", smoke=True, out=tmp_path)
    assert summary["steps"] > 0 and 0 <= summary["metrics"]["test/map"] <= summary["metrics"]["test/map_50"] <= 1
    run = load_run(tmp_path)
    assert isinstance(run.model, SSD) and run.model.num_classes == 5
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = run.model.eval()(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}
