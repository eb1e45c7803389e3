"""The image-folder recipe on a folder of PNGs made here: stratified split, lazy loaders with workers, a run
folder that load_run and predict use."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import dlkit
from dlkit.errors import ConfigError, DataNotFoundError
from dlkit.runs import load_run
from dlkit.techniques.predict import classify_files


def _shape(kind, rng, size=40):
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 120, 3)))
    d = ImageDraw.Draw(img)
    r, (cx, cy) = rng.uniform(8, 14), rng.uniform(14, size - 14, 2)
    fill = tuple(int(v) for v in rng.integers(140, 256, 3))
    if kind == "disc":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "box":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def _folder(root, per_class=30, size=40, seed=0):
    rng = np.random.default_rng(seed)
    for kind in ("disc", "box", "wedge"):
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            _shape(kind, rng, size).save(root / kind / f"{i}.png")
    return root


def test_a_class_folder_trains_with_workers_and_the_run_predicts(tmp_path):
    data = _folder(tmp_path / "shapes")
    out = tmp_path / "run"
    summary = dlkit.run_recipe("image-folder", overrides={"threads": 1, "num_workers": 1}, smoke=True,
                               data_dir=str(data), out=out, report=False)
    # 30 per class, 20% held out per class (6), smoke keeps a stratified 48 of the 72 training images
    assert summary["images"] == {"train": 48, "val": 18} and summary["classes"] == ["box", "disc", "wedge"]
    assert summary["steps"] == 3 and 0.0 <= summary["value"] <= 1.0 and summary["run_dir"] == str(out)
    spec = json.loads((out / "model.json").read_text())
    assert spec["name"] == "resnet_cifar20" and spec["kwargs"] == {"in_chans": 3, "num_classes": 3}
    assert spec["input"] == {"channels": 3, "size": [32, 32], "mean": [0.485, 0.456, 0.406],
                             "std": [0.229, 0.224, 0.225]}
    run = load_run(out)
    img = _shape("disc", np.random.default_rng(5), size=32)  # the training size: prepared without resizing
    img.save(tmp_path / "disc.png")
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255
    x = (x - torch.tensor(spec["input"]["mean"]).view(3, 1, 1)) / torch.tensor(spec["input"]["std"]).view(3, 1, 1)
    with torch.no_grad():
        p = torch.softmax(run.model(x[None]), 1)[0]
    top = classify_files(run, [tmp_path / "disc.png"])[0]
    assert len(top) == 3 and top[0][0] == spec["class_names"][int(p.argmax())]
    assert np.allclose(sorted(v for _, v in top), sorted(p.tolist()), atol=1e-5)


def test_train_val_test_folders_are_used_as_given_and_grey_images_work(tmp_path):
    for split, n, seed in (("train", 12, 0), ("val", 4, 1), ("test", 5, 2)):
        _folder(tmp_path / "data" / split, per_class=n, seed=seed)
    summary = dlkit.run_recipe("image-folder", overrides={"threads": 1, "channels": 1, "subset": 0}, smoke=True,
                               data_dir=str(tmp_path / "data"), out=tmp_path / "run", report=False)
    assert summary["images"] == {"train": 36, "val": 12, "test": 15}
    assert {"val/accuracy", "test/accuracy"} <= summary["metrics"].keys()
    spec = load_run(tmp_path / "run").spec
    assert spec["input"]["channels"] == 1 and spec["input"]["mean"] == [0.449] and spec["kwargs"]["in_chans"] == 1


def test_a_model_that_is_not_an_image_classifier_is_refused(tmp_path):
    data = _folder(tmp_path / "shapes", per_class=3)
    with pytest.raises(ConfigError, match="cannot be built as an image classifier.*resnet_cifar20"):  # no in_chans
        dlkit.run_recipe("image-folder", overrides={"model": "mlp"}, smoke=True, data_dir=str(data),
                         out=tmp_path / "run", report=False)
    with pytest.raises(DataNotFoundError, match="image folder not found"):
        dlkit.run_recipe("image-folder", smoke=True, data_dir=str(tmp_path / "none"), out=tmp_path / "r2",
                         report=False)


@pytest.mark.parametrize("overrides, match", [
    ({"model": "deeplabv3_tiny"}, "'deeplabv3_tiny' is a segmentation model, not an image classifier"),
    ({"model": "lenet5"}, r"'lenet5' does not take 3 x 32 x 32 images .*pass --set image_size=28"),
    ({"model": "vit_b_16"}, r"does not take 3 x 32 x 32 images .*pass --set image_size=224"),
    ({"model_kwargs": {"num_classes": 5}}, r"model_kwargs sets num_classes, which the recipe sets .*\(num_classes=3\)"),
])
def test_a_model_that_does_not_fit_the_data_is_refused_before_training(tmp_path, overrides, match):
    data = _folder(tmp_path / "shapes", per_class=3)
    with pytest.raises(ConfigError, match=match):
        dlkit.run_recipe("image-folder", overrides=overrides, smoke=True, data_dir=str(data), out=tmp_path / "run",
                         report=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_googlenet_trains_with_its_auxiliary_classifiers(tmp_path):
    data = _folder(tmp_path / "shapes", per_class=4, size=96)
    summary = dlkit.run_recipe("image-folder", overrides={"model": "googlenet", "image_size": 96, "threads": 1},
                               smoke=True, data_dir=str(data), out=tmp_path / "run", report=False)
    assert summary["steps"] >= 1 and load_run(tmp_path / "run").model.aux_logits


@pytest.mark.parametrize("layout, error, match", [
    ({"only": 4}, ConfigError, r"needs at least 2 classes; .* has 1 class folder \(only\)"),
    ({"a": 1, "b": 1, "c": 1}, ConfigError, "no image .* can be held out for validation: every class has a single"),
    ({"training/a": 3, "training/b": 3, "validation/a": 2, "validation/b": 2}, ConfigError,
     r"the class folders \['training', 'validation'\] look like data splits"),
    ({"train/a": 3, "train/b": 3, "Val/a": 2, "Val/b": 2}, ConfigError,
     r"holds a train/ folder, so it is read as split folders .* and also \['Val'\]"),
    ({"bus": 3, "car": 3, "train": 3}, ConfigError, r"and also \['bus', 'car'\].*if train is one of your classes"),
])
def test_folder_layouts_that_would_train_nonsense_are_refused_before_training(tmp_path, layout, error, match):
    rng = np.random.default_rng(0)
    for folder, n in layout.items():
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(n):
            _shape("disc", rng).save(tmp_path / "data" / folder / f"{i}.png")
    with pytest.raises(error, match=match):
        dlkit.run_recipe("image-folder", smoke=True, data_dir=str(tmp_path / "data"), out=tmp_path / "run",
                         report=False)


def test_hidden_files_and_folders_inside_class_folders_are_not_images_of_the_class(tmp_path):
    from dlkit.data.image_folder import ImageFolder

    data = _folder(tmp_path / "shapes", per_class=2)
    (data / "disc" / "._0.png").write_bytes(b"\x00\x05\x16\x07Mac OS X")  # macOS AppleDouble metadata
    (data / "disc" / ".ipynb_checkpoints").mkdir()
    _shape("disc", np.random.default_rng(1)).save(data / "disc" / ".ipynb_checkpoints" / "0-checkpoint.png")
    assert len(ImageFolder(data)) == 6


def test_a_refused_run_leaves_no_empty_default_run_folder(tmp_path, monkeypatch):
    """Bad input found while the run is built (here a missing data folder) removes the automatically named
    runs/RECIPE/TIME folder, which holds only config.json then; a folder named with --out is the user's and stays."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError, match="image folder not found"):
        dlkit.run_recipe("image-folder", smoke=True, data_dir=str(tmp_path / "none"), report=False)
    assert list((tmp_path / "runs" / "image-folder").iterdir()) == []
    with pytest.raises(DataNotFoundError, match="image folder not found"):
        dlkit.run_recipe("image-folder", smoke=True, data_dir=str(tmp_path / "none"), out=tmp_path / "mine",
                         report=False)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["config.json"]
