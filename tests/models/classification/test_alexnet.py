"""AlexNet (Notes: 003 §3.3.3): torchvision's published parameter count, shapes, dropout 0.5, gradients."""

import pytest
import torch
from model_checks import n_params
from torch import nn

from dlkit import create_model
from dlkit.errors import ConfigError


def test_alexnet_has_torchvision_parameter_count_61100840():
    # torchvision alexnet: 61,100,840. By the cheat sheet, conv F(k*k*d_in + 1), dense d_out(d_in + 1):
    conv = 64 * (121 * 3 + 1) + 192 * (25 * 64 + 1) + 384 * (9 * 192 + 1) + 256 * (9 * 384 + 1) + 256 * (9 * 256 + 1)
    dense = 4096 * (256 * 6 * 6 + 1) + 4096 * (4096 + 1) + 1000 * (4096 + 1)
    with torch.device("meta"):
        model = create_model("alexnet")
    assert conv == 2_469_696 and dense == 58_631_144
    assert n_params(model.features) == conv and n_params(model.classifier) == dense
    assert n_params(model) == 61_100_840


def test_alexnet_maps_224_to_256x6x6_features_and_1000_logits():
    model = create_model("alexnet").eval()
    assert model.default_input_shape == (3, 224, 224)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert model.features(x).shape == (1, 256, 6, 6)
        assert model(x).shape == (1, 1000)


def test_alexnet_uses_relu_and_dropout_half_before_the_hidden_dense_layers():
    model = create_model("alexnet")
    drops = [m for m in model.classifier if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == [0.5, 0.5]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 7  # after 5 convs and 2 hidden dense layers


def test_every_alexnet_parameter_gets_a_gradient():
    model = create_model("alexnet", num_classes=10).train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_alexnet_explains_too_small_input():
    with pytest.raises(ConfigError, match=r"H, W >= 63"):
        create_model("alexnet")(torch.randn(1, 3, 32, 32))


def test_alexnet_original_widths_counts_by_hand_and_the_grouped_caffe_count():
    """The 2012 widths 96-256-384-384-256 in one tower: 62,378,344 parameters by the cheat sheet; with conv2, conv4
    and conv5 split over two GPUs (groups=2, each filter reads half its inputs) 60,965,224, the published count of
    the two-GPU network (Caffe's bvlc_alexnet). Notes: 003 §3.3.3."""
    conv = 96 * (121 * 3 + 1) + 256 * (25 * 96 + 1) + 384 * (9 * 256 + 1) + 384 * (9 * 384 + 1) + 256 * (9 * 384 + 1)
    grouped = 96 * (121 * 3 + 1) + 256 * (25 * 48 + 1) + 384 * (9 * 256 + 1) + 384 * (9 * 192 + 1) \
        + 256 * (9 * 192 + 1)
    dense = 58_631_144
    with torch.device("meta"):
        model = create_model("alexnet_original")
        split = create_model("alexnet_original", groups=2)
    assert n_params(model.features) == conv == 3_747_200 and n_params(model) == conv + dense == 62_378_344
    assert n_params(split) == grouped + dense == 60_965_224


def test_alexnet_original_maps_227_to_6x6_and_conv5_is_a_stage_at_stride_16():
    model = create_model("alexnet_original").eval()
    assert model.default_input_shape == (3, 227, 227)
    x = torch.randn(1, 3, 227, 227)
    with torch.no_grad():
        maps = model.feature_maps(x)
        assert [tuple(m.shape[1:]) for m in maps] == [(96, 27, 27), (256, 13, 13), (256, 13, 13), (256, 6, 6)]
        assert torch.equal(maps[2], model.features[:12](x))  # conv5 after its ReLU, before pool5
        assert model(x).shape == (1, 1000)
    assert model.feature_info.reductions() == [8, 16, 16, 32]
    with pytest.raises(ConfigError, match="divisible by groups"):
        create_model("alexnet_original", groups=5)
