"""The MaskFormer recipe (Notes: 002 §5.3) in smoke mode, its target conversion and its panoptic metric by hand."""

import json

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.recipes import run_recipe
from dlkit.runs import load_run
from dlkit.tasks.panoptic import MaskFormerPanopticQuality, mask_classification_targets


def _target():
    masks = torch.zeros(3, 4, 4, dtype=torch.uint8)
    masks[0, :2, :2] = 1
    masks[1, 2:, 2:] = 1
    masks[2, 0, 0] = 1  # covered by the first object: an empty segment, dropped
    semantic = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 255], [1, 1, 0, 0], [1, 0, 0, 0]])
    return {"labels": torch.tensor([2, 5, 3]), "masks": masks, "semantic": semantic}


def test_mask_classification_targets_by_hand():
    out = mask_classification_targets(_target(), num_things=5)
    assert out["labels"].tolist() == [2, 5, 6] and out["masks"].dtype == torch.bool
    assert out["masks"].int().tolist() == [
        [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]],
        [[0, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]]]  # the background; 255 stays in no mask


def test_mask_classification_targets_without_objects_is_the_background():
    target = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 2, 2, dtype=torch.uint8),
              "semantic": torch.ones(2, 2, dtype=torch.int64)}
    out = mask_classification_targets(target, num_things=5)
    assert out["labels"].tolist() == [6] and out["masks"].tolist() == [[[True, True], [True, True]]]


def test_metric_shifts_class_indices_by_hand():
    # the ground truth's segments: 1 (category 2), 2 (category 5), 3 (the stuff, category 6); void 2 pixels
    id_map = torch.tensor([[1, 1, 3, 3], [1, 1, 3, 0], [3, 3, 2, 2], [3, 0, 2, 2]])
    perfect = MaskFormerPanopticQuality(num_things=5, num_stuff=1)
    perfect.update([(id_map, [{"id": 1, "category": 1}, {"id": 2, "category": 4}, {"id": 3, "category": 5}])],
                   [_target()])
    out = perfect.compute()
    assert out["pq"] == out["pq_things"] == out["pq_stuff"] == 1.0 and out["n"] == 3
    # segment 2 predicted as class index 3 (category 4): category 2 and 6 PQ 1, category 4 a FP, 5 a FN (PQ 0)
    metric = MaskFormerPanopticQuality(num_things=5, num_stuff=1)
    metric.update([(id_map, [{"id": 1, "category": 1}, {"id": 2, "category": 3}, {"id": 3, "category": 5}])],
                  [_target()])
    out = metric.compute()
    assert out["pq"] == pytest.approx(0.5) and out["pq_things"] == pytest.approx(1 / 3)
    assert out["pq_stuff"] == 1.0 and (out["n"], out["n_things"], out["n_stuff"]) == (4, 3, 1)
    assert set(out) == set(MaskFormerPanopticQuality.names)


@pytest.mark.parametrize("name, model", [("maskformer-shapes", "maskformer_tiny"),
                                         ("mask2former-shapes", "mask2former_tiny")])
def test_shapes_smoke(tmp_path, name, model):
    summary = run_recipe(name, smoke=True, out=tmp_path)
    assert summary["steps"] > 0
    finals = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    assert 0 <= finals["test/pq"] <= 1
    spec = json.loads((tmp_path / "model.json").read_text())
    assert spec["name"] == model and spec["kwargs"]["num_classes"] == 6
    run = load_run(tmp_path)  # the run folder rebuilds its model: one name per class, the background last
    assert len(run.class_names) == 6 and run.class_names[-1] == "background"
    assert (tmp_path / "figures" / "panoptic.png").stat().st_size > 5000  # panoptic maps in the report


def test_recipe_refuses_scenes_without_semantic_maps(tmp_path):
    with pytest.raises(ConfigError, match="semantic"):
        run_recipe("maskformer-shapes", smoke=True, out=tmp_path, overrides={"scene": {}})


def test_recipe_refuses_a_threshold_outside_the_unit_interval(tmp_path):
    with pytest.raises(ConfigError, match="score_threshold"):
        run_recipe("maskformer-shapes", smoke=True, out=tmp_path, overrides={"score_threshold": 1.5})
