"""The detr-shapes recipe (Notes: 002 §4.3.6): its declaration, and a short run that reports COCO mAP, draws the
decoder attention figure and whose model.json rebuilds the trained DETR."""

import torch

from dlkit import load_run
from dlkit.models.detection.detr import DETR
from dlkit.recipes import get_recipe, run_recipe


def test_declaration():
    recipe = get_recipe("detr-shapes")
    assert recipe.metric == "test/map_50" and recipe.task == "detection" and 0 < recipe.threshold < 1
    assert recipe.defaults["data"] == "shapes" and recipe.defaults["model"] == "detr_tiny"
    assert recipe.defaults["grad_clip_norm"] == 0.1 and "slowly" in recipe.description


def test_smoke_run_reports_map_draws_the_attention_and_rebuilds_the_trained_network(tmp_path):
    summary = run_recipe("detr-shapes", smoke=True, out=tmp_path)
    assert summary["steps"] > 0 and 0 <= summary["metrics"]["test/map"] <= summary["metrics"]["test/map_50"] <= 1
    assert (tmp_path / "figures" / "detr_attention.png").is_file()
    run = load_run(tmp_path)
    assert isinstance(run.model, DETR) and run.model.num_classes == 5
    with torch.no_grad():
        out = run.model.eval()(torch.rand(2, 3, 64, 64))
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}
