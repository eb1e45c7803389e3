"""Darknet-53 (Notes: 002 §4.3.4): the size derived layer by layer from darknet53.cfg, the residual block against
torch's functional layers, the stages' strides and widths, and the small variant learning digits."""

import pytest
import torch
import torch.nn.functional as F

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.classification.darknet import darknet_residual
from tests.model_checks import digits_batch, n_params, training_losses


def conv_bn(k: int, c_in: int, c_out: int) -> int:
    """A darknet convolutional layer: a k x k kernel without bias, then batch norm (scale and shift per channel)."""
    return k * k * c_in * c_out + 2 * c_out


def test_darknet53_has_the_size_derived_by_hand_from_its_layer_table():
    # darknet53.cfg (Redmon & Farhadi 2018, Table 1): conv 3x3/32, then per stage a 3x3 stride-2 conv doubling the
    # width and n residual blocks (1x1 to half the width, 3x3 back); 52 conv layers plus the 1000-way classifier.
    stem = conv_bn(3, 3, 32)  # 928
    stage1 = conv_bn(3, 32, 64) + 1 * (conv_bn(1, 64, 32) + conv_bn(3, 32, 64))  # 18,560 + 20,672
    stage2 = conv_bn(3, 64, 128) + 2 * (conv_bn(1, 128, 64) + conv_bn(3, 64, 128))  # 73,984 + 2 x 82,304
    stage3 = conv_bn(3, 128, 256) + 8 * (conv_bn(1, 256, 128) + conv_bn(3, 128, 256))  # 295,424 + 8 x 328,448
    stage4 = conv_bn(3, 256, 512) + 8 * (conv_bn(1, 512, 256) + conv_bn(3, 256, 512))  # 1,180,672 + 8 x 1,312,256
    stage5 = conv_bn(3, 512, 1024) + 4 * (conv_bn(1, 1024, 512) + conv_bn(3, 512, 1024))  # 4,720,640 + 4 x 5,245,952
    convs = stem + stage1 + stage2 + stage3 + stage4 + stage5
    classifier = 1024 * 1000 + 1000
    assert convs == 40_584_928 and classifier == 1_025_000
    assert 1 + (1 + 2 * 1) + (1 + 2 * 2) + (1 + 2 * 8) + (1 + 2 * 8) + (1 + 2 * 4) + 1 == 53  # the name's 53 layers
    with torch.device("meta"):
        model = create_model("darknet53")
        features = create_model("darknet53", num_classes=0)
    assert n_params(model) == convs + classifier == 41_609_928
    assert n_params(features) == convs
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 52


def test_darknet53_stages_end_at_strides_2_to_32_with_widths_64_to_1024():
    with torch.device("meta"):
        model = create_model("darknet53")
        maps = model.feature_maps(torch.empty(1, 3, 256, 256))
    assert model.feature_info.reductions() == [2, 4, 8, 16, 32]
    assert model.feature_info.channels() == [64, 128, 256, 512, 1024]
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 128, 128), (128, 64, 64), (256, 32, 32), (512, 16, 16),
                                                  (1024, 8, 8)]


def test_residual_block_is_x_plus_two_conv_bn_leaky_layers_as_torch_functional():
    torch.manual_seed(0)
    block = darknet_residual(8).eval()
    for m in block.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
            m.weight.data.normal_()
            m.bias.data.normal_()
    x = torch.randn(2, 8, 5, 5)
    (c1, b1, _), (c2, b2, _) = block.fn

    def layer(h, conv, bn, pad):
        h = F.conv2d(h, conv.weight, None, 1, pad)
        h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return F.leaky_relu(h, 0.1)

    expected = x + layer(layer(x, c1, b1, 0), c2, b2, 1)
    assert c1.weight.shape == (4, 8, 1, 1) and c2.weight.shape == (8, 4, 3, 3)
    torch.testing.assert_close(block(x), expected)


def test_small_darknet_learns_digits_and_refuses_bad_input():
    torch.manual_seed(0)
    model = create_model("darknet_small", in_chans=1, num_classes=4)
    assert model.feature_info.reductions() == [2, 4, 8, 16, 32]
    x, y = digits_batch(32, 32, 1, 4)
    losses = training_losses(model, x, y, steps=25)
    assert losses[-1] < 0.2 * losses[0]
    with pytest.raises(ConfigError, match=r"\[N, 1, H, W\]"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ConfigError, match="odd width"):
        darknet_residual(7)
