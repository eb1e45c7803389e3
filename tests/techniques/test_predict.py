"""Prediction on image files with a trained run: the same preprocessing as training, then the model's own
forward (classification: softmax top-k; segmentation: a per-pixel arg-max mask PNG)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import dlkit
from dlkit.cli import main
from dlkit.errors import ConfigError
from dlkit.runs import load_run, model_spec
from dlkit.techniques.predict import classify_files, preprocess, segment_files


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    dlkit.run_recipe("mlp-digits", overrides={"threads": 1}, smoke=True, out=out, report=False)
    return out


def _digit_files(folder, n=4):
    """The first n test digits as 8x8 grey PNGs; returns (paths, their pixels as floats in [0, 1], labels)."""
    from dlkit.data.digits import load_digits_split

    _, _, x, y = load_digits_split(test_size=0.2, seed=0)
    paths, pixels = [], []
    for i in range(n):
        img = (x[i].reshape(8, 8) * 255).round().to(torch.uint8).numpy()
        paths.append(folder / f"digit{i}.png")
        Image.fromarray(img).save(paths[-1])
        pixels.append(torch.from_numpy(np.asarray(Image.open(paths[-1]), dtype=np.float32) / 255))
    return paths, torch.stack(pixels), y[:n]


def test_classification_top5_is_the_softmax_of_the_models_own_forward(digits_run, tmp_path):
    paths, pixels, labels = _digit_files(tmp_path)
    run = load_run(digits_run)
    top = classify_files(run, paths, top=5)
    with torch.no_grad():  # reference: the PNG's pixels / 255 (mean 0, std 1), as a flat vector like training
        probs = torch.softmax(run.model(pixels.reshape(len(paths), 64)), 1)
    for got, p in zip(top, probs):
        values, idx = p.topk(5)
        assert [name for name, _ in got] == [str(int(i)) for i in idx]
        assert np.allclose([v for _, v in got], values.numpy(), atol=1e-6)
        assert got[0][1] >= got[1][1] >= got[4][1]
    assert len(classify_files(run, paths[:1], top=50)[0]) == 10  # at most the number of classes


def test_predict_command_prints_five_classes_per_file(digits_run, tmp_path, capsys):
    paths, pixels, _ = _digit_files(tmp_path, n=2)
    assert main(["predict", str(digits_run), *map(str, paths)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(paths[0]) and out[6] == str(paths[1]) and len(out) == 12
    run = load_run(digits_run)
    with torch.no_grad():
        p = torch.softmax(run.model(pixels.reshape(2, 64)), 1)[0]
    best = int(p.argmax())
    assert out[1].split() == [f"{p[best].item():.2%}", str(best)]


@pytest.mark.data
def test_mnist_files_are_prepared_exactly_as_lenet5_was_trained(data_root, tmp_path):
    from dlkit.data.mnist import load_mnist
    from dlkit.data.transforms import normalise_images

    out = tmp_path / "run"
    dlkit.run_recipe("lenet5-mnist", overrides={"threads": 1}, smoke=True, out=out, data_dir=str(data_root),
                     report=False)
    x, y = load_mnist("test", data_dir=data_root)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(x[i, 0].numpy()).save(paths[-1])
    run = load_run(out)
    with torch.no_grad():  # the recipe's own normalisation of the same images
        want = torch.softmax(run.model(normalise_images(x[:3], 0.1307, 0.3081)), 1)
    for got, p in zip(classify_files(run, paths, top=3), want):
        assert np.allclose([v for _, v in got], p.topk(3).values.numpy(), atol=1e-5)


def test_padding_matches_the_fashion_recipes_training_preprocessing():
    from dlkit.data.transforms import normalise_images, pad_images

    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    spec = model_spec("resnet_cifar20", channels=1, size=28, mean=0.2860, std=0.3530, pad_to=33)["input"]
    want = pad_images(normalise_images(images, 0.2860, 0.3530), 33, fill=-0.2860 / 0.3530)  # as build_cnn_fashion
    assert torch.allclose(preprocess(images, spec), want, atol=1e-6)


@pytest.fixture
def segmentation_run(tmp_path):
    """A run folder of an (untrained) unet_tiny with 4 classes, written by hand as `dlkit run` would."""
    torch.manual_seed(0)
    model = dlkit.create_model("unet_tiny", in_chans=3, num_classes=4).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    spec = model_spec("unet_tiny", {"in_chans": 3, "num_classes": 4}, class_names=["sky", "road", "car", "tree"],
                      channels=3, size=[32, 48], mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])
    (tmp_path / "model.json").write_text(json.dumps({"recipe": "hand", "task": "segmentation", **spec}))
    return tmp_path


def test_segmentation_mask_png_is_the_per_pixel_argmax_of_the_forward(segmentation_run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)  # the training size: no resizing involved
    Image.fromarray(img).save(tmp_path / "street.png")
    odd = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(odd).save(tmp_path / "other.jpg")
    run = load_run(segmentation_run)
    x = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1)) \
        / torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    with torch.no_grad():
        want = run.model(x[None])[0].argmax(0)
    (path, mask), (path2, mask2) = segment_files(run, [tmp_path / "street.png", tmp_path / "other.jpg"], tmp_path / "m")
    assert path == tmp_path / "m" / "street_mask.png" and torch.equal(mask, want)
    assert torch.equal(torch.tensor(np.asarray(Image.open(path))).long(), want)  # pixel value = class id
    assert Image.open(path).mode == "P" and mask2.shape == (50, 70)  # the mask has the photo's own size
    assert len(set(want.flatten().tolist())) > 1
    code = main(["predict", str(segmentation_run), str(tmp_path / "street.png"), "--out", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert code == 0 and f"mask {tmp_path / 'cli' / 'street_mask.png'}" in out and "32x48" in out
    assert (tmp_path / "cli" / "street_mask.png").is_file()


def test_predict_replaces_no_file_and_writes_no_mask_twice(segmentation_run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(tmp_path / folder / "img.png")
    (tmp_path / "out").mkdir()
    mine = tmp_path / "out" / "img_mask.png"
    mine.write_text("my ground truth")
    code = main(["predict", str(segmentation_run), str(tmp_path / "a" / "img.png"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and f"{mine} exists; predict does not replace files" in err and "--overwrite" in err
    assert mine.read_text() == "my ground truth"
    code = main(["predict", str(segmentation_run), str(tmp_path / "a" / "img.png"), str(tmp_path / "b" / "img.png"),
                 "--out", str(tmp_path / "new")])
    err = capsys.readouterr().err
    assert code == 2 and "would both write" in err and not (tmp_path / "new").exists()
    code = main(["predict", str(segmentation_run), str(tmp_path / "a" / "img.png"), "--out", str(tmp_path / "out"),
                 "--overwrite"])
    assert code == 0 and Image.open(mine).mode == "P"


def test_predict_errors_are_one_line(digits_run, tmp_path, capsys):
    code = main(["predict", str(digits_run), str(tmp_path / "missing.png")])
    err = capsys.readouterr().err
    assert code == 2 and "image file not found" in err and err.count("\n") == 1
    (tmp_path / "bad.png").write_text("not an image")
    code = main(["predict", str(digits_run), str(tmp_path / "bad.png")])
    assert code == 2 and "not an image PIL can read" in capsys.readouterr().err
    code = main(["predict", str(tmp_path), str(tmp_path / "bad.png")])
    assert code == 2 and "expected model.json and model.safetensors" in capsys.readouterr().err
    run = load_run(digits_run)
    run.spec["input"] = None
    with pytest.raises(ConfigError, match="no \"input\" record"):
        classify_files(run, [tmp_path / "bad.png"])
