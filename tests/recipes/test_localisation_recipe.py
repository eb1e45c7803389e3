"""The localisation-mnistdet recipe (Notes: 002 §4.3.1): one digit per canvas, scored by LocalisationAccuracy."""

import json

import pytest

from dlkit.errors import ConfigError
from dlkit.metrics.detection.localisation import LocalisationAccuracy
from dlkit.recipes import get_recipe, run_recipe


def test_smoke_run_scores_class_accuracy_and_iou_and_rebuilds_the_localiser(tmp_path, data_root):
    summary = run_recipe("localisation-mnistdet", smoke=True, out=tmp_path, data_dir=str(data_root))
    assert summary["metric"] == "test/loc_accuracy"
    finals = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    names = {f"test/{n}" for n in LocalisationAccuracy.names}
    assert names <= set(finals), sorted(finals)
    assert all(0 <= finals[n] <= 1 for n in names)
    spec = json.loads((tmp_path / "model.json").read_text())
    assert spec["name"] == "localiser_tiny" and spec["kwargs"]["box_weight"] == 10.0


def test_a_monitor_the_localisation_metric_never_reports_is_refused_before_training(tmp_path, data_root):
    recipe = get_recipe("localisation-mnistdet")
    assert recipe.defaults["monitor"] == "val/loc_accuracy" and recipe.defaults["scene"]["objects"] == [1, 1]
    with pytest.raises(ConfigError, match="does not log; it logs val/accuracy, val/loc_accuracy, val/mean_iou"):
        run_recipe("localisation-mnistdet", smoke=True, out=tmp_path, data_dir=str(data_root),
                   overrides={"monitor": "val/map_50", "early_stopping_patience": 2})
