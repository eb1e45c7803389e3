"""SPP and ASPP (Notes: 002 §5.A, §5.A.1, §5.A.2) and atrous convolution stacks (002 §5.1.5): fixed-length SPP
vectors, dilated convolution as the zero-inserted kernel, the exponential receptive field measured by a gradient,
the degeneration of large rates, and the v2 / v3 ASPP structures."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlkit.errors import ConfigError
from dlkit.nn.aspp import ASPP, ASPPv2, ImagePooling, SpatialPyramidPooling, atrous_conv, valid_taps
from dlkit.nn.dilated import DilatedStack, exponential_receptive_field


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- SPP (§5.A)


@pytest.mark.parametrize("levels", [(1, 2, 4), (1, 2, 3, 6)])
def test_spp_output_length_is_c_sum_n_squared_for_any_input_size(levels):
    spp, c = SpatialPyramidPooling(levels), 5
    expected = c * sum(n * n for n in levels)
    assert spp.out_features(c) == expected
    for h, w in [(6, 6), (13, 29), (32, 17), (3, 2)]:
        assert spp(torch.randn(2, c, h, w)).shape == (2, expected)


def test_spp_1x1_level_is_global_max_pooling_and_2x2_level_is_quadrant_maxima():
    x = torch.randn(2, 3, 8, 10)
    out = SpatialPyramidPooling((1, 2))(x)
    torch.testing.assert_close(out[:, :3], x.amax(dim=(2, 3)))
    quads = torch.stack([x[..., :4, :5], x[..., :4, 5:], x[..., 4:, :5], x[..., 4:, 5:]], dim=-1).amax(dim=(2, 3))
    torch.testing.assert_close(out[:, 3:], quads.flatten(1))  # channel-major: c0 (tl, tr, bl, br), c1 ...
    torch.testing.assert_close(SpatialPyramidPooling((1,), mode="avg")(x), x.mean(dim=(2, 3)))


def test_spp_rejects_bad_levels_and_inputs():
    with pytest.raises(ConfigError, match="levels"):
        SpatialPyramidPooling((0, 2))
    with pytest.raises(ConfigError, match=r"\[N, C, H, W\]"):
        SpatialPyramidPooling()(torch.randn(3, 8, 8))


# ----------------------------------------------------------------------------- atrous convolution (§5.1.5)


@pytest.mark.parametrize("rate", [1, 2, 4])
def test_atrous_conv_equals_conv2d_dilation_and_the_zero_inserted_kernel(rate):
    conv = atrous_conv(3, 4, rate)[0]
    x = torch.randn(2, 3, 11, 12)
    w = conv.weight.detach()
    k_eff = 3 + 2 * (rate - 1)  # k + (k - 1)(r - 1): 3, 5, 9 (Fig. 5.4)
    big = torch.zeros(4, 3, k_eff, k_eff)
    big[..., ::rate, ::rate] = w  # r - 1 zeros between the taps
    with torch.no_grad():
        y = conv(x)
    assert y.shape[-2:] == x.shape[-2:]  # 'same' padding r keeps H x W
    torch.testing.assert_close(y, F.conv2d(x, w, padding=rate, dilation=rate))
    torch.testing.assert_close(y, F.conv2d(x, big, padding=k_eff // 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rate", [1, 3])
def test_atrous_conv_follows_the_notes_formula_at_one_pixel(rate):
    # [K * I](j, i) = sum_m sum_l K(m, l) I(j - r m, i - r l), m, l in {-1, 0, 1}, I = 0 outside the image: the
    # project's atrous layers (atrous_conv, an ASPPv2 branch, an ASPP branch after set_rates) against it, by hand
    img, k = torch.randn(1, 1, 13, 13), torch.randn(3, 3)

    def formula(j, i):
        taps = [(m, l) for m in (-1, 0, 1) for l in (-1, 0, 1)
                if 0 <= j - rate * m < 13 and 0 <= i - rate * l < 13]
        return sum(k[m + 1, l + 1] * img[0, 0, j - rate * m, i - rate * l] for m, l in taps)

    aspp = ASPP(1, 1, rates=(7,))
    aspp.set_rates((rate,))
    layers = {"atrous_conv": atrous_conv(1, 1, rate)[0], "ASPPv2": ASPPv2(1, 1, rates=(rate,)).branches[0],
              "ASPP.set_rates": aspp.branches[1][0]}
    for name, conv in layers.items():
        with torch.no_grad():
            conv.weight.copy_(k.flip(0, 1).view(1, 1, 3, 3))  # the notes' K flipped: torch cross-correlates
            if conv.bias is not None:
                conv.bias.zero_()
            y = conv(img)
        assert y.shape == img.shape, name
        for j, i in [(6, 5), (0, 0), (12, 2), (2, 11)]:  # the centre and pixels whose taps fall off the image
            torch.testing.assert_close(y[0, 0, j, i], formula(j, i), msg=f"{name} at ({j}, {i})")


# ----------------------------------------------------------------------------- exponentially dilated stack (§5.1.5)


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_dilated_stack_receptive_field_is_2_to_the_l_plus_1_minus_1_by_hand_and_by_gradient(num_layers):
    stack = DilatedStack(1, num_layers, act_layer=None)
    expected = [3, 7, 15, 31][num_layers - 1]
    assert exponential_receptive_field(num_layers) == 2 ** (num_layers + 1) - 1 == expected
    assert stack.receptive_field() == expected and stack.dilations == tuple(2 ** i for i in range(num_layers))
    for m in stack.modules():  # positive weights: no cancellation inside the field
        if isinstance(m, nn.Conv2d):
            nn.init.uniform_(m.weight, 0.1, 1.0)
    x = torch.zeros(1, 1, 64, 64, requires_grad=True)
    y = stack(x)
    assert y.shape == x.shape  # resolution unchanged
    y[0, 0, 32, 32].backward()
    rows, cols = (x.grad[0, 0] != 0).nonzero().unbind(1)
    assert rows.max() - rows.min() + 1 == expected == cols.max() - cols.min() + 1
    assert rows.min() == 32 - expected // 2


def test_dilated_stack_parameters_grow_linearly():
    counts = [n_params(DilatedStack(8, n)) for n in (1, 2, 3, 4)]
    assert counts == [n * (9 * 8 * 8 + 8) for n in (1, 2, 3, 4)]
    with pytest.raises(ConfigError, match="odd kernel_size"):
        DilatedStack(8, 2, kernel_size=4)


# ----------------------------------------------------------------------------- DeepLab v2 ASPP (§5.A.1)


def test_valid_taps_of_a_3x3_kernel_and_the_degeneration_at_large_rates():
    assert valid_taps(3, 3, 1).tolist() == [[4, 6, 4], [6, 9, 6], [4, 6, 4]]
    assert valid_taps(5, 5, 2)[2, 2] == 9 and valid_taps(5, 5, 2)[0, 0] == 4
    for h, w, r in [(4, 4, 4), (5, 7, 7), (6, 3, 24)]:  # r >= the map size: only the centre tap
        assert (valid_taps(h, w, r) == 1).all()
    # then the 3x3 atrous convolution equals the 1x1 convolution with its centre weights
    aspp, x = ASPPv2(6, 2, rates=(8,)), torch.randn(1, 6, 5, 7)
    conv = aspp.branches[0]
    with torch.no_grad():
        torch.testing.assert_close(aspp(x), F.conv2d(x, conv.weight[..., 1:2, 1:2], conv.bias))


def test_aspp_v2_sums_the_four_branch_scores_and_keeps_the_size():
    aspp, x = ASPPv2(8, 3), torch.randn(2, 8, 30, 31)
    assert aspp.rates == (6, 12, 18, 24) and len(aspp.branches) == 4
    assert n_params(aspp) == 4 * (9 * 8 * 3 + 3)
    with torch.no_grad():
        y = aspp(x)
        ref = sum(F.conv2d(x, c.weight, c.bias, padding=r, dilation=r) for c, r in zip(aspp.branches, aspp.rates))
    assert y.shape == (2, 3, 30, 31)
    torch.testing.assert_close(y, ref)


def test_aspp_v2_concat_variant_mixes_the_branches_with_a_1x1():
    aspp = ASPPv2(8, 3, merge="concat")
    assert aspp.project.weight.shape == (3, 12, 1, 1)
    assert aspp(torch.randn(1, 8, 9, 9)).shape == (1, 3, 9, 9)
    with pytest.raises(ConfigError, match="sum"):
        ASPPv2(8, 3, merge="max")


# ----------------------------------------------------------------------------- DeepLab v3 ASPP (§5.A.2)


def test_aspp_v3_five_branches_keep_the_size_and_project_to_256():
    aspp, x = ASPP(32).eval(), torch.randn(2, 32, 9, 13)
    assert aspp.rates == (6, 12, 18) and len(aspp.branches) == 5 and aspp.out_chans == 256
    kinds = [type(b).__name__ for b in aspp.branches]
    assert kinds == ["ConvBNAct"] * 4 + ["ImagePooling"]  # 1x1, three atrous 3x3, image pooling
    assert [b[0].dilation for b in aspp.branches[1:4]] == [(6, 6), (12, 12), (18, 18)]
    with torch.no_grad():
        outs = aspp.branch_outputs(x)
        y = aspp(x)
    assert all(o.shape == (2, 256, 9, 13) for o in outs)
    assert y.shape == (2, 256, 9, 13)
    pooled = outs[-1]  # the image-level features are constant over H x W
    torch.testing.assert_close(pooled, pooled[..., :1, :1].expand_as(pooled))
    # torchvision's ASPP: 1x1 + BN, 3 x (3x3 + BN), pooling 1x1 + BN, projection 1x1 (5 x 256 -> 256) + BN
    conv = lambda cin, cout, k: cin * cout * k * k + 2 * cout
    assert n_params(aspp) == 2 * conv(32, 256, 1) + 3 * conv(32, 256, 3) + conv(5 * 256, 256, 1)
    assert isinstance(aspp.project[-1], nn.Dropout) and aspp.project[-1].p == 0.1


def test_aspp_rates_double_in_place_for_output_stride_8():
    aspp, x = ASPP(16, 8).eval(), torch.randn(1, 16, 20, 20)
    shapes = [p.shape for p in aspp.parameters()]
    aspp.set_rates((12, 24, 36))
    assert aspp.rates == (12, 24, 36) and [p.shape for p in aspp.parameters()] == shapes
    assert [(b[0].dilation, b[0].padding) for b in aspp.branches[1:4]] == [((r, r), (r, r)) for r in (12, 24, 36)]
    assert aspp(x).shape == (1, 8, 20, 20)
    with pytest.raises(ConfigError, match="3 atrous branches"):
        aspp.set_rates((6, 12))
    with pytest.raises(ConfigError, match="rates"):
        ASPP(16, rates=(0, 2))


def test_separable_aspp_has_depthwise_atrous_convolutions():
    aspp = ASPP(16, 8, rates=(2, 4), separable=True)
    dw = aspp.branches[1][0][0]
    assert dw.groups == 16 and dw.dilation == (2, 2)
    aspp.set_rates((4, 8))
    assert aspp.branches[2][0][0].dilation == (8, 8)
    assert aspp.eval()(torch.randn(1, 16, 7, 9)).shape == (1, 8, 7, 9)
    assert ImagePooling(16, 8).eval()(torch.randn(2, 16, 5, 3)).shape == (2, 8, 5, 3)


def test_image_pooling_explains_that_training_needs_two_images():
    pool = ImagePooling(4, 2)
    assert pool(torch.randn(2, 4, 5, 5)).shape == (2, 2, 5, 5)
    with pytest.raises(ConfigError, match="batches of 2 or more"):
        pool(torch.randn(1, 4, 5, 5))
    assert pool.eval()(torch.randn(1, 4, 5, 5)).shape == (1, 2, 5, 5)
