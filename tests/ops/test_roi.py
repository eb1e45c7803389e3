"""RoI pooling and RoI align (Notes: 002 §4.3.2): dlkit's computation (impl="dlkit") against torchvision.ops.roi_pool /
roi_align, forward and backward, and by hand; the default fast path (torchvision's kernel) equal to it."""

import pytest
import torch
import torchvision.ops as tvops

from dlkit.errors import ConfigError
from dlkit.ops.roi import RoIAlign, RoIPool, roi_align, roi_pool


def random_case(seed: int, n: int = 2, c: int = 3, h: int = 13, w: int = 17, k: int = 24, scale: float = 0.5):
    """Feature maps and regions in image pixels (1/scale per cell), some partly or wholly outside the map, some
    degenerate (zero or negative size)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    side = torch.tensor([w, h, w, h], dtype=torch.float64) / scale
    xy = torch.rand(k, 2, generator=g, dtype=torch.float64) * side[:2] * 1.2 - side[:2] * 0.1
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * side[:2] * 0.8
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[:3, 2:] = boxes[:3, :2]  # zero size
    boxes[3, 2:] = boxes[3, :2] - 2.0  # negative size
    boxes[4] = torch.tensor([-40.0, -40.0, -10.0, -10.0])  # wholly outside
    batch = torch.randint(0, n, (k, 1), generator=g).double()
    return x, torch.cat([batch, boxes], dim=1)


def compare(ours, theirs, x, rois):
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = ours(a, rois), theirs(b, rois)
    tol = 1e-10 if x.dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out_a, out_b, rtol=tol, atol=tol)
    upstream = torch.randn(out_a.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    (out_a * upstream).sum().backward()
    (out_b * upstream).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("size", [(7, 7), (2, 3)])
def test_roi_pool_equals_torchvision_forward_and_backward(seed, scale, size):
    x, rois = random_case(seed, scale=scale)
    compare(lambda t, r: roi_pool(t, r, size, scale, impl="dlkit"), lambda t, r: tvops.roi_pool(t, r, size, scale),
            x, rois)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("scale", [1.0, 0.25])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_equals_torchvision_forward_and_backward(seed, scale, sampling_ratio, aligned):
    x, rois = random_case(seed, scale=scale)
    compare(lambda t, r: roi_align(t, r, (5, 4), scale, sampling_ratio, aligned, impl="dlkit"),
            lambda t, r: tvops.roi_align(t, r, (5, 4), scale, sampling_ratio, aligned), x, rois)


def test_float32_list_of_boxes_and_modules_equal_torchvision():
    x, rois = random_case(7)
    x = x.float()
    boxes = [rois[rois[:, 0] == i, 1:].float() for i in range(2)]
    torch.testing.assert_close(RoIAlign(7, 0.5, 2, True, impl="dlkit")(x, boxes),
                               tvops.RoIAlign(7, 0.5, 2, True)(x, boxes))
    torch.testing.assert_close(RoIPool((3, 5), 0.5, impl="dlkit")(x, boxes), tvops.RoIPool((3, 5), 0.5)(x, boxes))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_default_fast_path_equals_dlkits_computation(dtype):
    x, rois = random_case(3)
    x, rois = x.to(dtype), rois.to(dtype)
    compare(lambda t, r: roi_align(t, r, 7, 0.5, 2, True), lambda t, r: roi_align(t, r, 7, 0.5, 2, True, impl="dlkit"),
            x, rois)
    compare(lambda t, r: roi_pool(t, r, 7, 0.5), lambda t, r: roi_pool(t, r, 7, 0.5, impl="dlkit"), x, rois)


def test_impl_choice():
    x, rois = random_case(4)
    half = x.bfloat16()  # torchvision's CPU kernels take no bfloat16: "auto" computes it with dlkit's code
    torch.testing.assert_close(roi_align(half, rois.bfloat16(), 3, 0.5, 2), roi_align(half, rois.bfloat16(), 3, 0.5, 2,
                                                                                       impl="dlkit"))
    with pytest.raises(ConfigError, match="impl must be one of"):
        roi_pool(x, rois, 3, impl="cuda")


def test_hand_example_of_the_notes_bins():
    # a 4 x 4 map 0..15 and the region of cells (0, 0)-(2, 2) into 2 x 2 bins
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]])
    # RoI pooling: 3 cells per side, bins cover cells {0, 1} and {1, 2} per axis (floor(i 3/2)..ceil((i+1) 3/2)-1)
    assert roi_pool(x, rois, 2, impl="dlkit").flatten().tolist() == [5.0, 6.0, 9.0, 10.0]
    # RoI align, aligned: the region spans 2 cells from -0.5 to 1.5; one sample per bin at the bin centres -0.0
    # and 1.0 per axis, i.e. cells (0, 0), (0, 1), (1, 0), (1, 1) exactly
    got = roi_align(x, rois, 2, sampling_ratio=1, aligned=True, impl="dlkit")
    assert got.flatten().tolist() == [0.0, 1.0, 4.0, 5.0]
    # legacy (not aligned): from 0 to 2, samples at 0.5 and 1.5: the mean of four cells each
    assert roi_align(x, rois, 2, sampling_ratio=1, impl="dlkit").flatten().tolist() == [2.5, 3.5, 6.5, 7.5]


def test_empty_regions_and_bad_inputs():
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    assert roi_align(x, torch.zeros(0, 5), 3, impl="dlkit").shape == (0, 2, 3, 3)
    assert roi_pool(x, [torch.zeros(0, 4)], 3, impl="dlkit").shape == (0, 2, 3, 3)
    with pytest.raises(ConfigError, match=r"\[K, 5\]"):
        roi_align(x, torch.zeros(3, 4), 3)
    with pytest.raises(ConfigError, match="batch indices"):
        roi_pool(x, torch.tensor([[1.0, 0, 0, 2, 2]]), 3)
    with pytest.raises(ConfigError, match=r"\[N, C, H, W\]"):
        roi_align(x[0], torch.zeros(1, 5), 3)
