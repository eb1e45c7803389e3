"""The Panoptic FPN recipe (Notes: 002 §5.3.1) in smoke mode, its panoptic ground truth by hand and the shapes
scenes' semantic maps against their instance masks."""

import json

import pytest
import torch

from dlkit.data.detection_scenes import shapes_scenes
from dlkit.errors import ConfigError
from dlkit.metrics.panoptic import PanopticQuality
from dlkit.recipes import run_recipe
from dlkit.tasks.panoptic import MergedPanopticQuality, panoptic_ground_truth


def test_shapes_scenes_semantic_map_is_background_one_objects_zero():
    scene = dict(seed=3, height=64, width=64, sizes=(8, 32))
    plain, panoptic = shapes_scenes(2, **scene), shapes_scenes(2, semantic=True, **scene)
    image, target = panoptic[1]
    assert "semantic" not in plain[1][1] and torch.equal(plain[1][0], image)
    sem = target["semantic"]
    assert sem.dtype == torch.int64 and sem.shape == (64, 64)
    assert torch.equal(sem, (target["masks"].sum(0) == 0).long())


def test_panoptic_ground_truth_by_hand():
    masks = torch.zeros(2, 4, 4, dtype=torch.uint8)
    masks[0, :2, :2] = 1
    masks[1, 2:, 2:] = 1
    semantic = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 255], [1, 1, 0, 0], [1, 0, 0, 0]])
    id_map, segments = panoptic_ground_truth({"labels": torch.tensor([2, 5]), "masks": masks,
                                              "semantic": semantic}, num_things=5)
    assert id_map.tolist() == [[1, 1, 3, 3], [1, 1, 3, 0], [3, 3, 2, 2], [3, 0, 2, 2]]
    assert segments == [{"id": 1, "category": 2, "iscrowd": 0}, {"id": 2, "category": 5, "iscrowd": 0},
                        {"id": 3, "category": 6, "iscrowd": 0}]


def test_merged_metric_of_a_perfect_prediction_is_one():
    masks = torch.zeros(1, 8, 8, dtype=torch.uint8)
    masks[0, 1:5, 2:6] = 1
    target = {"labels": torch.tensor([1]), "masks": masks, "semantic": 1 - masks[0].long()}
    logits = torch.stack([masks[0].float(), 1 - masks[0].float()])  # things where the object is, stuff elsewhere
    pred = {"masks": masks[:, None].float(), "scores": torch.tensor([0.9]), "labels": torch.tensor([1]),
            "semantic": logits}
    metric = MergedPanopticQuality(num_things=2, num_stuff=1, stuff_area_threshold=1)
    metric.update([pred], [target])
    out = metric.compute()
    assert out["pq"] == out["pq_things"] == out["pq_stuff"] == 1.0 and out["n"] == 2
    reference = PanopticQuality(4, thing_categories=[1, 2])
    reference.update(panoptic_ground_truth(target, 2), panoptic_ground_truth(target, 2))
    assert reference.compute()["pq"] == 1.0


def test_panoptic_fpn_shapes_smoke(tmp_path):
    summary = run_recipe("panoptic-fpn-shapes", smoke=True, out=tmp_path)
    assert summary["steps"] > 0
    finals = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    assert 0 <= finals["test/pq"] <= 1
    spec = json.loads((tmp_path / "model.json").read_text())
    assert spec["name"] == "panoptic_fpn_tiny" and spec["kwargs"]["num_classes"] == 5
    for name in ("panoptic.png", "masks.png"):  # panoptic maps and instance masks in the report
        assert (tmp_path / "figures" / name).stat().st_size > 5000


def test_recipe_refuses_scenes_without_semantic_maps(tmp_path):
    with pytest.raises(ConfigError, match="semantic"):
        run_recipe("panoptic-fpn-shapes", smoke=True, out=tmp_path, overrides={"scene": {}})
