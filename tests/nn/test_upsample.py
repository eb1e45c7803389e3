import pytest
import torch
import torch.nn.functional as F

from dlkit.errors import ConfigError
from dlkit.nn.upsample import (
    BedOfNails,
    BilinearUpsample,
    NearestUpsample,
    bed_of_nails,
    bilinear_filter,
    bilinear_kernel,
    nearest_upsample,
    upsample_geometry,
)

FACTORS = [2, 3, 4, 8]


def test_3x3_filter_is_the_notes_matrix():
    # Notes 002 §5.1.4: [[1/4, 1/2, 1/4], [1/2, 1, 1/2], [1/4, 1/2, 1/4]]
    expected = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    torch.testing.assert_close(bilinear_filter(3), expected)


def test_factor_2_filter_and_geometry():
    # k = 4, f = 2, c = 1.5: 1 - |u - 1.5|/2 = 1/4, 3/4, 3/4, 1/4
    tri = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(bilinear_filter(4), torch.outer(tri, tri))
    assert upsample_geometry(2) == (4, 2, 1)
    assert upsample_geometry(3) == (5, 3, 1)
    assert upsample_geometry(8) == (16, 8, 4)
    assert upsample_geometry(32) == (64, 32, 16)  # FCN-32s


def test_notes_3x3_transposed_conv_example_is_exact_corner_aligned_bilinear():
    # the notes' example: 3x3 input, 3x3 kernel, stride 2 -> 5x5 (padding 1). With the bilinear 3x3 kernel the
    # output is exactly bilinear interpolation with align_corners=True onto 2n - 1 pixels, borders included.
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    y = F.conv_transpose2d(x, bilinear_filter(3, torch.float64)[None, None], stride=2, padding=1)
    assert y.shape == (1, 1, 5, 5)
    torch.testing.assert_close(y, F.interpolate(x, size=(5, 5), mode="bilinear", align_corners=True))


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("depthwise", [True, False])
def test_bilinear_upsample_equals_interpolate_away_from_the_border(factor, depthwise):
    # Interior: output pixel j reads source coordinate (j + 1/2)/f - 1/2 with the bilinear weights, exactly as
    # F.interpolate(align_corners=False). The outer f // 2 pixels differ: their source coordinate lies outside the
    # image; interpolate clamps it to the edge pixel, the transposed conv multiplies zero padding instead.
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    up = BilinearUpsample(3, factor, depthwise=depthwise).double()
    y = up(x)
    assert y.shape == (2, 3, 5 * factor, 6 * factor)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    b = factor // 2
    inner = (..., slice(b, y.shape[-2] - b), slice(b, y.shape[-1] - b))
    torch.testing.assert_close(y[inner], ref[inner])
    if b:  # and the border really does differ (it is darker: weights missing beyond the edge)
        assert not torch.allclose(y[..., 0, :], ref[..., 0, :])


@pytest.mark.parametrize("factor", FACTORS)
def test_constant_image_stays_constant_in_the_interior_and_ramp_is_reproduced(factor):
    up = BilinearUpsample(1, factor).double()
    y = up(torch.full((1, 1, 4, 4), 2.5, dtype=torch.float64))
    b = factor // 2
    inner = y[..., b:y.shape[-2] - b, b:y.shape[-1] - b]
    torch.testing.assert_close(inner, torch.full_like(inner, 2.5))
    if b:
        assert y[0, 0, 0, 0] < 2.5  # zero padding darkens the corner
    # Notes 5-13: a linear ramp is interpolated exactly: value at output column j = (j + 1/2)/f - 1/2
    ramp = torch.arange(5, dtype=torch.float64).expand(1, 1, 5, 5)
    z = up(ramp)[0, 0, 2 * factor]
    j = torch.arange(5 * factor, dtype=torch.float64)
    torch.testing.assert_close(z[b:len(z) - b], ((j + 0.5) / factor - 0.5)[b:len(z) - b])


def test_full_kernel_is_diagonal_and_depthwise_has_few_parameters():
    w = bilinear_kernel(3, 4, depthwise=False)
    assert w.shape == (3, 3, 8, 8)
    assert w[0, 1].abs().sum() == 0 and torch.equal(w[2, 2], bilinear_filter(8))
    assert bilinear_kernel(3, 4).shape == (3, 1, 8, 8)
    assert sum(p.numel() for p in BilinearUpsample(3, 4).parameters()) == 3 * 64
    assert sum(p.numel() for p in BilinearUpsample(3, 4, depthwise=False).parameters()) == 9 * 64


def test_gradients_flow_learnable_and_frozen():
    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    up = BilinearUpsample(2, 2)
    up(x).square().sum().backward()
    assert up.conv.weight.grad is not None and up.conv.weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    frozen = BilinearUpsample(2, 2, learnable=False)
    assert not any(p.requires_grad for p in frozen.parameters())
    x.grad = None
    frozen(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_bed_of_nails_hand_example():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    expected = torch.tensor([[1.0, 0, 2.0, 0], [0, 0, 0, 0], [3.0, 0, 4.0, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(bed_of_nails(x, 2), expected)
    assert bed_of_nails(torch.ones(2, 3, 4, 5), (2, 3)).shape == (2, 3, 8, 15)


def test_bed_of_nails_is_max_unpool_with_top_left_indices():
    x = torch.randn(2, 3, 4, 5)
    f = 3
    rows, cols = torch.meshgrid(torch.arange(4) * f, torch.arange(5) * f, indexing="ij")
    indices = (rows * 5 * f + cols).expand(2, 3, 4, 5)
    torch.testing.assert_close(bed_of_nails(x, f), F.max_unpool2d(x, indices, f))


def test_nearest_hand_example_and_equals_interpolate_and_ones_transposed_conv():
    # 003 §4.1.2: [[1, 2], [3, 4]] x2 -> each value becomes a 2x2 block
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    expected = torch.tensor([[1.0, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    torch.testing.assert_close(nearest_upsample(x, 2)[0, 0], expected)
    y = torch.randn(2, 3, 4, 5)
    for f in (2, 3):
        torch.testing.assert_close(nearest_upsample(y, f), F.interpolate(y, scale_factor=f, mode="nearest"))
        ones = torch.ones(3, 1, f, f)
        torch.testing.assert_close(nearest_upsample(y, f), F.conv_transpose2d(y, ones, stride=f, groups=3))
    assert NearestUpsample(2)(y).shape == (2, 3, 8, 10) and BedOfNails(2)(y).shape == (2, 3, 8, 10)
    assert not list(NearestUpsample(2).parameters())


def test_bed_of_nails_and_nearest_pass_gradients():
    x = torch.randn(1, 1, 3, 3, requires_grad=True)
    (bed_of_nails(x, 2).sum() + nearest_upsample(x, 2).sum()).backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 1.0 + 4.0))


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="factor"):
        BilinearUpsample(3, 0)
    with pytest.raises(ConfigError, match="factor"):
        bed_of_nails(torch.ones(1, 1, 2, 2), 1.5)
    with pytest.raises(ConfigError, match=r"\[N, 3, H, W\]"):
        BilinearUpsample(3, 2)(torch.ones(1, 4, 2, 2))
    with pytest.raises(ConfigError, match="channels"):
        bilinear_kernel(0, 2)
    with pytest.raises(ConfigError, match="H, W"):
        nearest_upsample(torch.ones(3), 2)
