"""Grouped convolution and the three ResNeXt block forms (Notes: 002 §2.3) against torch and each other."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlkit.errors import ConfigError
from dlkit.nn.conv import Conv2d
from dlkit.nn.residual import Bottleneck
from dlkit.nn.resnext import ResNeXtBlock, grouped_conv2d, resnext_branch_width


def randomize_bn(module: nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_()
                m.bias.normal_()
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------- grouped convolution


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_grouped_conv2d_equals_torch_groups(groups):
    x, w = torch.randn(2, 8, 7, 7), torch.randn(12, 8 // groups, 3, 3)
    torch.testing.assert_close(grouped_conv2d(x, w, groups, stride=2, padding=1),
                               F.conv2d(x, w, stride=2, padding=1, groups=groups))


def test_grouped_conv_has_g_times_fewer_parameters():
    # C_out * (C_in / G) * k^2 = 64 * 16 * 9 versus 64 * 64 * 9 for the full convolution: dlkit's im2col Conv2d
    full, grouped = Conv2d(64, 64, 3, padding=1, bias=False), Conv2d(64, 64, 3, padding=1, groups=4, bias=False)
    assert n_params(grouped) == 64 * 16 * 9 == n_params(full) // 4
    x = torch.randn(2, 64, 5, 5)
    torch.testing.assert_close(grouped(x), F.conv2d(x, grouped.weight, padding=1, groups=4), rtol=1e-4, atol=1e-4)
    # and the grouped ResNeXt block (G = 4 branches of width d = 8, C = 32): its 3x3 has G d^2 9 weights, 1/G of a
    # full 3x3 on G d channels, and the block has the parameters of the G separate branches, counted by hand
    g, d, c = 4, 8, 32
    block = ResNeXtBlock(c, c, cardinality=g, width=d, form="grouped")
    assert block.conv2[0].weight.numel() == g * d * d * 9 == (g * d) ** 2 * 9 // g
    by_hand = g * (c * d + 2 * d + 9 * d * d + 2 * d + d * c) + 2 * c  # per branch 1x1, BN, 3x3, BN, 1x1; then BN3
    assert n_params(block) == by_hand == n_params(ResNeXtBlock(c, c, cardinality=g, width=d, form="split"))


def test_grouped_conv2d_rejects_indivisible_channels():
    with pytest.raises(ConfigError, match="divisible by groups"):
        grouped_conv2d(torch.randn(1, 6, 4, 4), torch.randn(4, 2, 3, 3), groups=4)


# ----------------------------------------------------------------------------- the three forms


@pytest.mark.parametrize("stride,cin", [(1, 32), (2, 16)])
@pytest.mark.parametrize("train", [False, True])
def test_resnext_block_forms_are_equal(stride, cin, train):
    # (a) G branches summed == (b) concatenation + one 1x1 == (c) grouped 3x3 (Xie et al. Fig. 3), weights copied
    torch.manual_seed(1)
    split = ResNeXtBlock(cin, 32, cardinality=4, width=3, stride=stride, form="split").double()
    randomize_bn(split)
    split.train(train)
    concat, grouped = split.to_form("concat"), split.to_form("grouped")
    assert grouped.conv2[0].groups == 4 and len(concat.branches) == 4
    x = torch.randn(2, cin, 9, 9, dtype=torch.float64)
    ya, yb, yc = split(x), concat(x), grouped(x)
    assert ya.shape == (2, 32, (9 - 1) // stride + 1, (9 - 1) // stride + 1)
    torch.testing.assert_close(yb, ya, rtol=0, atol=1e-10)
    torch.testing.assert_close(yc, ya, rtol=0, atol=1e-10)
    back = grouped.to_form("split")  # and the round trip
    torch.testing.assert_close(back(x), ya, rtol=0, atol=1e-10)


def test_resnext_forms_have_the_same_parameter_count():
    # G (C_in d + 9 d^2 + d C_out) conv weights + BN 2 (G d + G d + C_out), identity shortcut
    g, d, c = 8, 4, 64
    expected = g * (c * d + 9 * d * d + d * c) + 2 * (2 * g * d + c)
    counts = {f: n_params(ResNeXtBlock(c, c, g, d, form=f)) for f in ("split", "concat", "grouped")}
    assert set(counts.values()) == {expected}


def test_grouped_form_is_the_grouped_bottleneck():
    # ResNeXt 32x4d first-stage block: Bottleneck(256, planes=64, groups=32, base_width=4), width 32 * 4 = 128
    block = ResNeXtBlock(256, 256, cardinality=32, width=4, form="grouped").eval()
    randomize_bn(block)
    bott = Bottleneck(256, 64, groups=32, base_width=4).eval()
    st = block.state_dict()
    mapped = {k.replace("conv3.weight", "conv3.0.weight").replace("bn3.", "conv3.1."): v for k, v in st.items()}
    bott.load_state_dict(mapped)
    x = torch.randn(1, 256, 5, 5)
    torch.testing.assert_close(bott(x), block(x))
    assert n_params(bott) == n_params(block)


def test_branch_width_matches_the_quadratic_roots():
    # 002 §2.3 remark: fix G, solve 9G d^2 + 2GC d - (2Cb + 9b^2) = 0; for C=256, b=64, G=32 the paper uses d=4
    c, b, g = 256, 64, 32
    roots = np.roots([9 * g, 2 * g * c, -(2 * c * b + 9 * b * b)])
    d = resnext_branch_width(c, b, g)
    assert d == pytest.approx(roots.max(), rel=1e-12)
    assert round(d) == 4 and d == pytest.approx(3.97, abs=0.01)
    bottleneck = c * b + 9 * b * b + b * c
    assert g * (c * d + 9 * d * d + d * c) == pytest.approx(bottleneck, rel=1e-12)


def test_unknown_form_is_explained():
    with pytest.raises(ConfigError, match="form must be one of"):
        ResNeXtBlock(8, 8, 2, 2, form="branches")
