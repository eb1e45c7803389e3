"""The centernet-mnistdet recipe (Notes: 002 §4.3.5): its declaration, its model on the digit scenes, and a short run
that reports COCO mAP and mAP@0.5."""

from types import SimpleNamespace

from dlkit.models.detection.centernet import CenterNet
from dlkit.recipes import get_recipe, run_recipe
from dlkit.recipes.detection import build_detection


def test_declaration():
    recipe = get_recipe("centernet-mnistdet")
    assert recipe.metric == "test/map_50" and recipe.task == "detection" and 0 < recipe.threshold < 1
    assert recipe.defaults["data"] == "mnist" and recipe.defaults["model"] == "centernet_tiny"
    assert recipe.datasets == ("mnist",)


def test_builds_a_one_channel_ten_class_centernet(data_root):
    recipe = get_recipe("centernet-mnistdet")
    cfg = SimpleNamespace(**{**recipe.defaults, "data_dir": str(data_root), "seed": 0, "n_train": 4, "n_val": 2,
                             "n_test": 2, "image_size": 64})
    setup = build_detection(cfg, SimpleNamespace(rank=0, world_size=1))
    model = setup.task.model
    assert isinstance(model, CenterNet) and model.in_chans == 1 and model.num_classes == 10
    images, targets = next(iter(setup.train))
    assert set(model.train()(images, targets)) == {"loss_heatmap", "loss_size", "loss_offset"}


def test_short_run_reports_map_and_map_50(data_root, tmp_path):
    summary = run_recipe("centernet-mnistdet", smoke=True, out=tmp_path, overrides={"data_dir": str(data_root)})
    assert summary["metric"] == "test/map_50"
    for key in ("test/map_50", "test/map"):
        assert 0 <= summary["metrics"][key] <= 1, summary["metrics"]
