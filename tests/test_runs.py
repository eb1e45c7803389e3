"""Run folders as trained models: model.json (model_spec) and load_run."""

import json

import pytest
import torch
from safetensors.torch import save_file

import dlkit
from dlkit.errors import ConfigError
from dlkit.runs import LoadedRun, load_run, model_spec


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A smoke run of mlp-digits (one epoch on 256 digits)."""
    out = tmp_path_factory.mktemp("digits")
    summary = dlkit.run_recipe("mlp-digits", overrides={"threads": 1, "hidden": "[32]"}, smoke=True, out=out,
                               report=False)
    return out, summary


def test_a_training_run_writes_model_json_with_the_recipe_model_and_input(digits_run):
    out, _ = digits_run
    spec = json.loads((out / "model.json").read_text())
    assert spec["recipe"] == "mlp-digits" and spec["task"] == "classification" and spec["name"] == "mlp_digits"
    assert spec["kwargs"] == {"hidden": [32], "dropout": 0.1} and spec["class_names"] == [str(i) for i in range(10)]
    assert spec["input"] == {"channels": 1, "size": [8, 8], "mean": [0.0], "std": [1.0]}


def test_load_run_rebuilds_the_model_that_scored_the_summary(digits_run):
    from dlkit.data.digits import load_digits_split

    out, summary = digits_run
    run = dlkit.load_run(out)
    assert isinstance(run, LoadedRun) and not run.model.training and run.task == "classification"
    assert run.class_names[3] == "3" and run.input["size"] == [8, 8]
    # the smoke run scored the first 256 test digits; the rebuilt model, given the same digits, scores the same
    _, _, x_te, y_te = load_digits_split(test_size=0.2, seed=0)
    with torch.no_grad():
        acc = (run.model(x_te[:256]).argmax(1) == y_te[:256]).float().mean().item()
    assert acc == pytest.approx(summary["metrics"]["test/accuracy"], abs=1e-6)


def test_load_run_round_trips_weights_saved_by_hand(tmp_path):
    model = dlkit.create_model("lenet5", num_classes=3).eval()
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "model.json").write_text(json.dumps(model_spec("lenet5", {"num_classes": 3}, channels=1, size=28)))
    run = load_run(tmp_path)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(run.model(x), model(x))
    assert run.class_names is None and run.task == "classification"


def test_a_binary_classifier_with_one_output_and_two_class_names_loads(tmp_path):
    dlkit.run_recipe("mlp-xor", smoke=True, out=tmp_path / "xor")  # a tanh MLP with one logit, classes "0" and "1"
    run = load_run(tmp_path / "xor")
    assert run.class_names == ["0", "1"] and run.model(torch.tensor([[0.0, 1.0]])).shape == (1, 1)


def test_a_folder_that_is_not_a_finished_run_gets_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        load_run(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"expected model.json and model.safetensors.*missing model.json, "
                                          r"model.safetensors.*found: config.json.*--resume"):
        load_run(tmp_path)
    model = dlkit.create_model("lenet5")
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="missing model.json.*no model_spec"):
        load_run(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(model_spec("lenet5", {"num_classes": 4})))
    with pytest.raises(ConfigError, match="does not fit lenet5.*different runs"):
        load_run(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_run(tmp_path)


def test_model_spec_repeats_scalar_statistics_and_refuses_bad_input():
    spec = model_spec("resnet18", {"num_classes": 2}, class_names=["a", "b"], channels=3, size=64, mean=0.5, std=0.25)
    assert spec["input"] == {"channels": 3, "size": [64, 64], "mean": [0.5] * 3, "std": [0.25] * 3}
    assert "pad_to" not in model_spec("lenet5", channels=1, size=28, pad_to=28)["input"]
    assert model_spec("lenet5", channels=1, size=28, pad_to=32)["input"]["pad_to"] == [32, 32]
    with pytest.raises(ConfigError, match="one mean and one positive std per channel"):
        model_spec("resnet18", channels=3, size=8, mean=[0.1, 0.2], std=1.0)
    with pytest.raises(ConfigError, match="channels must be 1"):
        model_spec("resnet18", channels=4, size=8)
    with pytest.raises(ConfigError, match="pad_to .* smaller"):
        model_spec("lenet5", channels=1, size=28, pad_to=20)


def test_run_recipe_of_the_package_passes_overrides_through(digits_run):
    out, summary = digits_run
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["hidden"] == [32] and config["threads"] == 1 and summary["run_dir"] == str(out)


def _image_recipes():
    from dlkit.recipes import get_recipe

    return [n for n in dlkit.list_recipes() if get_recipe(n).task in ("classification", "segmentation")
            and not get_recipe(n).study]


@pytest.mark.parametrize("name", _image_recipes())
def test_every_image_recipe_describes_a_model_that_rebuilds(name):
    """The recipe's model_spec rebuilds its network (same parameter shapes) and names an input it accepts, so
    that load_run and `dlkit predict` work on its runs."""
    import os
    from pathlib import Path

    from dlkit.engine.distributed import DistInfo
    from dlkit.recipes import get_recipe, make_config

    recipe = get_recipe(name)
    root = os.environ.get("DLKIT_DATA")
    if any(not root or not (Path(root) / d).is_dir() for d in recipe.datasets):
        pytest.skip(f"needs {recipe.datasets} under DLKIT_DATA")
    setup = recipe.build(make_config(recipe, {}, smoke=True).freeze(), DistInfo())
    spec = setup.model_spec
    assert spec is not None and spec["class_names"] is not None
    rebuilt = dlkit.create_model(spec["name"], **spec["kwargs"])
    want = {k: v.shape for k, v in setup.task.model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == want
    inp = spec["input"]
    x = torch.randn(2, inp["channels"], *(inp.get("pad_to") or inp["size"]))
    with torch.no_grad():
        out = rebuilt.eval()(x)
    assert out.shape[:2] == (2, len(spec["class_names"]))
    if recipe.task == "segmentation":
        assert out.shape[2:] == x.shape[2:]
    batch = next(iter(setup.train))[0]  # the training batches have the described layout
    assert batch[0].numel() == x[0].numel()


def _hand_run(root):
    """A run folder of an untrained LeNet-5 for 3 classes of 28x28 grey images, written without training."""
    root.mkdir(parents=True, exist_ok=True)
    model = dlkit.create_model("lenet5", num_classes=3).eval()
    save_file(model.state_dict(), str(root / "model.safetensors"))
    spec = model_spec("lenet5", {"num_classes": 3}, class_names=["a", "b", "c"], channels=1, size=28, mean=0.5,
                      std=0.25)
    (root / "model.json").write_text(json.dumps({"recipe": "toy", "task": "classification", **spec}))
    return root


def _cli_error(capsys, argv, *needles):
    from dlkit.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dlkit: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def _png(path, size=(20, 20)):
    from PIL import Image

    Image.new("L", size, 128).save(path)
    return path


@pytest.mark.parametrize("edit, needle", [
    (lambda s: "{\"name\": \"lenet5\", ", "not valid JSON"),
    (lambda s: b"\xff\xfe\x00", "not valid JSON"),
    (lambda s: "[" * 100000 + "]" * 100000, "not valid JSON"),
    (lambda s: [s], "expected {\"name\": registry name"),
    (lambda s: {**s, "kwargs": [1]}, "expected {\"name\": registry name"),
    (lambda s: {**s, "class_names": "abc"}, "\"class_names\" must be a list of strings"),
    (lambda s: {**s, "class_names": ["a"]}, "1 \"class_names\" for a model of 3 classes"),
    (lambda s: {**s, "task": 7}, "\"task\" must be a string"),
    (lambda s: {**s, "input": {"channels": 2, "size": [28, 28]}}, "\"input\" is malformed: model_spec channels"),
    (lambda s: {**s, "input": {"channels": 1, "size": "big"}}, "\"input\" is malformed"),
    (lambda s: {**s, "input": {"channels": 1}}, "\"input\" is malformed: expected"),
    (lambda s: {**s, "input": {**s["input"], "mean": ["x"]}}, "\"input\" is malformed"),
    (lambda s: {**s, "kwargs": {"num_classes": 3, "bogus": 1}}, "cannot be built"),
    (lambda s: {**s, "class_names": None, "kwargs": {"num_classes": -1}}, "cannot be built"),
    (lambda s: {**s, "name": "no_such_model"}, "unknown model 'no_such_model'"),
])
def test_a_damaged_model_json_gets_one_line_from_predict_and_export(tmp_path, capsys, edit, needle):
    run = _hand_run(tmp_path / "run")
    spec = json.loads((run / "model.json").read_text())
    new = edit(spec)
    (run / "model.json").write_bytes(new if isinstance(new, bytes) else
                                     (new if isinstance(new, str) else json.dumps(new)).encode())
    with pytest.raises(ConfigError, match="model.json"):
        load_run(run)
    _cli_error(capsys, ["predict", str(run), str(_png(tmp_path / "x.png"))], str(run / "model.json"), needle)
    _cli_error(capsys, ["export", str(run)], str(run / "model.json"), needle)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"not safetensors at all",
                                    lambda b: b""])
def test_damaged_weights_get_one_line(tmp_path, capsys, damage):
    from dlkit.errors import CheckpointError

    run = _hand_run(tmp_path / "run")
    (run / "model.safetensors").write_bytes(damage((run / "model.safetensors").read_bytes()))
    with pytest.raises(CheckpointError, match="model.safetensors is damaged"):
        load_run(run)
    _cli_error(capsys, ["predict", str(run), str(_png(tmp_path / "x.png"))], "model.safetensors is damaged",
               "train the run again")


def test_predict_and_export_on_folders_that_are_not_runs(tmp_path, capsys):
    image = _png(tmp_path / "x.png")
    _cli_error(capsys, ["predict", str(tmp_path / "nope"), str(image)], "is not a folder")
    (tmp_path / "photos").mkdir()
    _cli_error(capsys, ["predict", str(tmp_path / "photos"), str(image)], "is not a run folder",
               "expected model.json and model.safetensors")
    _cli_error(capsys, ["export", str(tmp_path / "photos")], "is not a run folder", "found: nothing")
    _cli_error(capsys, ["export", str(image)], "is not a folder")


def test_predict_names_a_damaged_image_file(tmp_path, capsys):
    from dlkit.cli import main

    run = _hand_run(tmp_path / "run")
    good = _png(tmp_path / "good.png", (40, 30))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-30])
    text = tmp_path / "photo.jpg"
    text.write_text("hello")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path, problem in ((truncated, "truncated image"), (text, "not an image PIL can read"),
                          (empty, "empty file")):
        _cli_error(capsys, ["predict", str(run), str(good), str(path)], f"{path}: {problem}",
                   "Pass an intact PNG or JPEG image")
    assert main(["predict", str(run), str(good)]) == 0 and "good.png" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_predict_on_cuda_without_a_gpu(tmp_path, capsys):
    run = _hand_run(tmp_path / "run")
    _cli_error(capsys, ["predict", str(run), str(_png(tmp_path / "x.png")), "--device", "cuda"],
               "needs a CUDA GPU", "--device cpu")


def test_segmentation_predict_names_a_damaged_image_and_an_unusable_out(tmp_path, capsys):
    run = tmp_path / "seg"
    run.mkdir()
    model = dlkit.create_model("unet_tiny", in_chans=1, num_classes=2).eval()
    save_file(model.state_dict(), str(run / "model.safetensors"))
    spec = model_spec("unet_tiny", {"in_chans": 1, "num_classes": 2}, class_names=["a", "b"], channels=1, size=16)
    (run / "model.json").write_text(json.dumps({"recipe": "hand", "task": "segmentation", **spec}))
    bad = tmp_path / "bad.png"
    bad.write_bytes(_png(tmp_path / "good.png").read_bytes()[:40])
    _cli_error(capsys, ["predict", str(run), str(bad), "--out", str(tmp_path / "masks")],
               f"{bad}: truncated or damaged PNG file")
    _cli_error(capsys, ["predict", str(run), str(tmp_path / "good.png"), "--out", str(bad)],
               "--out expects a folder for the mask PNGs")


def test_paths_that_cannot_be_opened_or_written(tmp_path, capsys):
    run = _hand_run(tmp_path / "run")
    image = _png(tmp_path / "x.png")
    _cli_error(capsys, ["export", str(run), "--out", str(image / "model.pt2")],
               "is a file, so no folder can be made there")
    _cli_error(capsys, ["predict", "r" * 5000, str(image)], "cannot open the run folder", "File name too long")
    _cli_error(capsys, ["predict", str(run), "i" * 5000], "cannot open the image file", "File name too long")
    _cli_error(capsys, ["report", "r" * 5000], "cannot open the run folder", "File name too long")


def test_python_api_arguments_that_would_be_misread_are_refused_in_one_line(tmp_path):
    from dlkit.errors import ConfigError, UnknownNameError

    with pytest.raises(ConfigError, match="overrides must be a mapping of option -> value"):
        dlkit.run_recipe("mlp-xor", overrides=["epochs=2"])
    with pytest.raises(ConfigError, match="epochs is given twice, as epochs=3 and in overrides as 2"):
        dlkit.run_recipe("mlp-xor", overrides={"epochs": 2}, epochs=3)
    with pytest.raises(UnknownNameError, match="unknown task 'classfication'. Did you mean: classification"):
        dlkit.list_models(task="classfication")
    with pytest.raises(ConfigError, match="device must be a torch device .*got 'tpu'"):
        load_run(tmp_path, device="tpu")
