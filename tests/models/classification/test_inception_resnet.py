"""Inception-ResNet-A and -B blocks (Notes: 002 §2.2.2): v2 sizes, hand-counted parameters, shape preservation,
identity at scale 0 / zero projection, the residual scaling, and the tiny network."""

import pytest
import torch
from model_checks import digits_batch, n_params, training_losses

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.classification.inception_resnet import InceptionResNetA, InceptionResNetB
from dlkit.report.summary import summarize


def unit(cin: int, cout: int, kh: int, kw: int) -> int:
    return kh * kw * cin * cout + 2 * cout  # conv (no bias) + BN gamma, beta


def test_block_a_has_hand_counted_parameters_at_v2_size():
    # 1x1 32 | 1x1 32 -> 3x3 32 | 1x1 32 -> 3x3 48 -> 3x3 64 | 1x1 128 -> 320 with bias
    by_hand = (unit(320, 32, 1, 1) + unit(320, 32, 1, 1) + unit(32, 32, 3, 3) + unit(320, 32, 1, 1)
               + unit(32, 48, 3, 3) + unit(48, 64, 3, 3) + 128 * 320 + 320)
    assert by_hand == 123_168 == n_params(InceptionResNetA())


def test_block_b_has_hand_counted_parameters_at_v2_size():
    # 1x1 192 | 1x1 128 -> 1x7 160 -> 7x1 192 | 1x1 384 -> 1088 with bias
    by_hand = (unit(1088, 192, 1, 1) + unit(1088, 128, 1, 1) + unit(128, 160, 1, 7) + unit(160, 192, 7, 1)
               + 384 * 1088 + 1088)
    assert by_hand == 1_126_784 == n_params(InceptionResNetB())


def test_block_a_keeps_35x35x320():
    assert InceptionResNetA().eval()(torch.randn(1, 320, 35, 35)).shape == (1, 320, 35, 35)


def test_block_b_keeps_17x17x1088_and_pads_1x7_and_7x1_per_axis():
    block = InceptionResNetB().eval()
    assert block(torch.randn(1, 1088, 17, 17)).shape == (1, 1088, 17, 17)
    conv17, conv71 = block.branches[1][1][0], block.branches[1][2][0]
    assert conv17.kernel_size == (1, 7) and conv17.padding == (0, 3)
    assert conv71.kernel_size == (7, 1) and conv71.padding == (3, 0)
    small = InceptionResNetB(32, 8, (8, 10, 12)).eval()
    assert small(torch.randn(1, 32, 9, 5)).shape == (1, 32, 9, 5)  # non-square maps are kept too


@pytest.mark.parametrize("block", [InceptionResNetA(32, 8, (8, 8), (8, 12, 16)), InceptionResNetB(32, 8, (8, 10, 12))])
def test_scale_zero_or_zero_projection_gives_the_identity_before_activation(block):
    x = torch.randn(2, 32, 9, 9)
    block.eval()
    block.scale = 0.0
    block.act = torch.nn.Identity()
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    block.scale = 0.3
    with torch.no_grad():
        block.up.weight.zero_()
        block.up.bias.zero_()
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def test_scale_zero_block_with_activation_is_relu_of_input():
    block = InceptionResNetA(32, 8, (8, 8), (8, 12, 16), scale=0.0).eval()
    x = torch.randn(2, 32, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_residual_is_scaled_linearly_by_the_scale_factor():
    block = InceptionResNetA(32, 8, (8, 8), (8, 12, 16), scale=1.0, activate=False).eval()
    x = torch.randn(2, 32, 6, 6)
    full = block(x) - x
    block.scale = 0.17
    torch.testing.assert_close(block(x) - x, 0.17 * full, rtol=1e-4, atol=1e-5)


def test_inception_resnet_tiny_is_small_cheap_and_trains():
    model = create_model("inception_resnet_tiny")
    assert model.default_input_shape == (1, 28, 28)
    assert n_params(model) == 55_130
    assert 2 * summarize(model, (32, 1, 28, 28)).total_macs < 0.5e9  # < 0.5 GFLOPs per 32 images
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    model.train()
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_blocks_explain_wrong_channels_and_widths():
    with pytest.raises(ConfigError, match=r"expects \[N, 320, H, W\]"):
        InceptionResNetA()(torch.randn(1, 64, 8, 8))
    with pytest.raises(ConfigError, match="b1=\\(reduce, 1x7, 7x1\\)"):
        InceptionResNetB(64, 16, (16, 16))


def test_inception_resnet_tiny_loss_falls_on_a_small_batch():
    x, y = digits_batch(32, 28, 1, 10)
    losses = training_losses(create_model("inception_resnet_tiny"), x, y, steps=20)
    assert losses[-1] < 0.7 * losses[0], losses
