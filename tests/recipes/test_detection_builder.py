"""The detection recipes' shared data path: generated and real sets, batching, DDP sharding, bad options."""

from types import SimpleNamespace

import pytest
import torch

from dlkit.data.loader import detection_loaders
from dlkit.errors import ConfigError
from dlkit.recipes import run_recipe
from dlkit.recipes.detection import DET_DEFAULTS, build_detection, detection_sets
from dlkit.registry import create_model


def cfg(**kw):
    return SimpleNamespace(**{**DET_DEFAULTS, "data_dir": None, "seed": 0, "n_train": 6, "n_val": 3, "n_test": 3,
                              "image_size": 64, **kw})


def test_generated_sets_are_disjoint_seeded_and_in_the_contract():
    parts, names, channels = detection_sets(cfg(data="shapes"))
    assert [len(parts[k]) for k in ("train", "val", "test")] == [6, 3, 3] and channels == 3 and len(names) == 5
    image, target = parts["train"][0]
    assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
    assert target["boxes"].shape[1] == 4 and target["labels"].min() >= 1
    assert not torch.equal(parts["train"][0][0], parts["val"][0][0])  # different seeds, different scenes
    again, _, _ = detection_sets(cfg(data="shapes"))
    assert torch.equal(again["test"][2][0], parts["test"][2][0])  # the same seed, the same scene


def test_mnist_scenes_are_one_channel_with_ten_classes(data_root):
    parts, names, channels = detection_sets(cfg(data="mnist", data_dir=data_root, scene={"objects": [1, 1]}))
    assert channels == 1 and names == tuple(str(d) for d in range(10))
    assert all(len(parts["train"][i][1]["labels"]) == 1 for i in range(6))  # one digit per canvas


def test_raccoon_photos_are_letterboxed_and_val_is_the_test_set(data_root):
    parts, names, channels = detection_sets(cfg(data="raccoon", data_dir=data_root, image_size=96))
    assert names == ("raccoon",) and len(parts["train"]) == 160 and parts["test"] is parts["val"]
    image, target = parts["val"][0]
    assert image.shape == (3, 96, 96) and (target["boxes"] <= 96).all() and (target["boxes"] >= 0).all()


def test_detection_loaders_shard_evaluation_sets_across_processes():
    parts, _, _ = detection_sets(cfg(data="shapes", n_val=5))
    ids = []
    for rank in (0, 1):
        loaders = detection_loaders(parts, 4, rank=rank, world_size=2)
        ids += [t["image_id"] for _, targets in loaders["val"] for t in targets]
        images, targets = next(iter(loaders["train"]))
        assert images.shape == (2, 3, 64, 64) and len(targets) == 2  # 4 images per step over 2 processes
    assert sorted(ids) == [1, 2, 3, 4, 5]  # each validation image on exactly one process


def test_bad_options_get_one_line_errors():
    with pytest.raises(ConfigError, match="data must be one of"):
        detection_sets(cfg(data="voc"))
    with pytest.raises(ConfigError, match="n_train, n_val and n_test must be >= 1"):
        detection_sets(cfg(n_val=0))
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        detection_loaders({"train": [1, 2]}, 3, world_size=2)


class _Detector(torch.nn.Conv2d):
    def forward(self, images, targets=None):  # the detection contract's signature
        return super().forward(images)


def test_build_detection_uses_make_model_and_records_its_kwargs():
    made = []

    def make_model(c, train, num_classes, in_chans):
        made.append((len(train), num_classes, in_chans))
        return _Detector(in_chans, num_classes, 1), {"num_classes": num_classes, "anchors": [[1, 2]]}

    setup = build_detection(cfg(data="shapes", model="some_detector"), SimpleNamespace(rank=0, world_size=1),
                            make_model)
    assert made == [(6, 5, 3)]
    assert setup.model_spec["kwargs"] == {"num_classes": 5, "anchors": [[1, 2]]}
    assert setup.task.metric_names == ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1",
                                       "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


@pytest.mark.parametrize("recipe, model, message", [
    ("maskrcnn-shapes", "fasterrcnn_tiny", "model 'fasterrcnn_tiny' predicts no instance masks"),
    ("panoptic-fpn-shapes", "maskrcnn_tiny", "model 'maskrcnn_tiny' predicts no semantic \\(stuff\\) map"),
    ("maskformer-shapes", "maskrcnn_tiny", "trains a mask-classification model; got model='maskrcnn_tiny'"),
])
def test_a_model_without_the_outputs_the_recipe_scores_is_refused_before_training(tmp_path, recipe, model, message):
    with pytest.raises(ConfigError, match=message):
        run_recipe(recipe, smoke=True, out=tmp_path, overrides={"model": model})
    assert not (tmp_path / "metrics.csv").exists()


def test_yolov3_sizes_that_are_not_multiples_of_its_stride_are_refused_with_a_size_that_fits():
    with pytest.raises(ConfigError, match=r"image_size must be a multiple of its largest stride 32; got 100 \(e.g. 96"):
        create_model("yolov3_small", image_size=100)
    with pytest.raises(ConfigError, match=r"multiples of 32; got \(1, 3, 100, 90\) .*e.g. to 96 x 96"):
        create_model("yolov3_small").eval()(torch.rand(1, 3, 100, 90))
