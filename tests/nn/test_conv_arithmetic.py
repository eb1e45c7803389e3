"""Convolution arithmetic against the notes' numbers and torch's shapes and FLOP counter (Notes: 000 §3.1, 004 CNN)."""

import math
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from dlkit.errors import ConfigError
from dlkit.nn.conv_arithmetic import (
    conv_flops,
    conv_output_shape,
    conv_output_size,
    conv_output_size_total_padding,
    conv_params,
    conv_transpose_output_size,
    dense_flops,
    dense_params,
    depthwise_separable_flops,
    depthwise_separable_params,
    effective_kernel_size,
    pool_output_size,
    receptive_field,
    receptive_fields,
    same_padding,
)

META = torch.device("meta")


def test_output_size_hand_examples_from_the_notes():
    # spec C2 / 003 [3-05]: both conventions, valid and same
    assert conv_output_size(32, 5, 1, 0) == conv_output_size_total_padding(32, 5, 1, 0) == 28
    assert conv_output_size(224, 7, 2, 3) == conv_output_size_total_padding(224, 7, 2, 6) == 112
    assert conv_output_size(5, 3, 1, "same") == 5
    assert conv_output_size(32, 3, 1, "valid") == 30 and conv_output_size(32, 3, 2, "valid") == 15
    assert pool_output_size(4, 2) == 2  # 004: O = (I - F)/S + 1 with S = F


def test_total_padding_equals_twice_per_side_and_odd_totals_floor():
    for w, k, s, p, d in [(7, 3, 2, 1, 1), (10, 4, 3, 2, 2), (1, 1, 1, 0, 1), (9, 2, 4, 0, 3)]:
        assert conv_output_size_total_padding(w, k, s, 2 * p, d) == conv_output_size(w, k, s, p, d)
    # an odd total (e.g. 'same' with an even kernel) is expressible only in the 000 convention
    assert conv_output_size_total_padding(6, 4, 1, 3) == 6 == conv_output_size(6, 4, 1, "same")
    assert conv_output_size_total_padding(8, 3, 3, 0) == 2  # (8 - 3)/3 + 1 = 2.67 -> floor


def test_output_size_equals_torch_conv_shape_for_random_configs():
    rng = random.Random(0)
    for _ in range(300):
        h, w = rng.randint(1, 20), rng.randint(1, 20)
        k, s, d = (rng.randint(1, 5), rng.randint(1, 5)), (rng.randint(1, 4), rng.randint(1, 4)), \
            (rng.randint(1, 3), rng.randint(1, 3))
        p = (rng.randint(0, 3), rng.randint(0, 3))
        x, wt = torch.empty(1, 2, h, w, device=META), torch.empty(3, 2, *k, device=META)
        try:
            ref = tuple(F.conv2d(x, wt, stride=s, padding=p, dilation=d).shape[2:])
        except RuntimeError:
            ref = None
        if ref is None or min(ref) < 1:
            with pytest.raises(ConfigError):
                conv_output_shape((h, w), k, s, p, d)
        else:
            assert conv_output_shape((h, w), k, s, p, d) == ref
            # the notes' total-padding form on an asymmetric (total P, split P//2 + rest) padding agrees too
            tp = rng.randint(0, 5)
            xp = F.pad(torch.empty(1, 2, h, 1, device=META), (0, 0, tp // 2, tp - tp // 2))
            if xp.shape[2] >= effective_kernel_size(k[0], d[0]):
                ref_h = F.conv2d(xp, wt[..., :1], stride=s, dilation=d).shape[2]
                assert conv_output_size_total_padding(h, k[0], s[0], tp, d[0]) == ref_h


def test_same_padding_keeps_size_and_gives_ceil_for_strides():
    for size in range(1, 13):
        for k in range(1, 6):
            for d in (1, 2):
                x, wt = torch.empty(1, 1, size, 3, device=META), torch.empty(1, 1, k, 1, device=META)
                with warnings.catch_warnings():  # torch warns that even kernels need an asymmetric padded copy
                    warnings.simplefilter("ignore", UserWarning)
                    ref = F.conv2d(x, wt, padding="same", dilation=(d, 1)).shape[2]
                assert conv_output_size(size, k, 1, "same", d) == ref == size
                assert sum(same_padding(size, k, 1, d)) == d * (k - 1)
                for s in (2, 3):
                    assert conv_output_size(size, k, s, "same", d) == math.ceil(size / s)


def test_output_size_below_one_raises_config_error():
    with pytest.raises(ConfigError, match="does not fit"):
        conv_output_size(3, 5)
    with pytest.raises(ConfigError):
        conv_output_size_total_padding(3, 3, 1, 0, dilation=2)  # K_eff = 5 > 3
    with pytest.raises(ConfigError):
        conv_output_size(8, 3, stride=0)
    with pytest.raises(ConfigError):
        conv_output_size(8, 3, padding="full")


def test_transposed_and_pool_output_sizes_equal_torch():
    rng = random.Random(1)
    for _ in range(100):
        i, k, s, d = rng.randint(1, 9), rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 3)
        p, op = rng.randint(0, 2), rng.randint(0, max(s, d) - 1)
        try:
            out = F.conv_transpose2d(torch.empty(1, 1, i, i, device=META), torch.empty(1, 1, k, k, device=META),
                                     stride=s, padding=p, output_padding=op, dilation=d).shape[2]
        except RuntimeError:  # torch: "output size is too small"
            out = 0
        if out < 1:
            with pytest.raises(ConfigError):
                conv_transpose_output_size(i, k, s, p, op, d)
        else:
            assert conv_transpose_output_size(i, k, s, p, op, d) == out == (i - 1) * s - 2 * p + d * (k - 1) + op + 1
        kp = rng.randint(1, 4)
        pp = rng.randint(0, kp // 2)
        if i + 2 * pp >= kp:
            ref = F.max_pool2d(torch.empty(1, 1, i, i, device=META), kp, s, pp).shape[2]
            assert pool_output_size(i, kp, s, pp) == ref


def test_conv_params_equal_torch_numel_and_notes_example():
    assert conv_params(3, 64, 3) == 1792  # spec C3
    assert conv_params(3, 8, 3) == 224 == 8 * (3 * 3 * 3 + 1)  # 003 cheat sheet F (k_w k_h d_in + 1)
    rng = random.Random(2)
    for _ in range(50):
        g = rng.choice([1, 2, 3])
        cin, cout, k = g * rng.randint(1, 4), g * rng.randint(1, 4), (rng.randint(1, 5), rng.randint(1, 5))
        bias = rng.random() < 0.5
        m = torch.nn.Conv2d(cin, cout, k, groups=g, bias=bias, device=META)
        assert conv_params(cin, cout, k, groups=g, bias=bias) == sum(p.numel() for p in m.parameters())


def test_grouped_conv_has_g_times_fewer_weights_and_flops():
    # 002 §2.3: parameters and FLOPs are G times fewer
    for g in (1, 2, 4, 8, 32):
        assert conv_params(64, 128, 3, groups=g, bias=False) * g == conv_params(64, 128, 3, bias=False)
        assert conv_flops(64, 128, 3, 14, groups=g) * g == conv_flops(64, 128, 3, 14)
    with pytest.raises(ConfigError, match="groups"):
        conv_params(6, 4, 3, groups=4)


def test_conv_flops_equal_half_of_torch_flop_counter():
    assert conv_flops(3, 64, 3, 224) == 86_704_128  # spec C3, 224x224 output
    for cin, cout, k, s, p, g, hw in [(3, 64, 3, 1, 1, 1, 224), (4, 6, (3, 5), 2, 0, 2, 17), (8, 8, 3, 1, 1, 8, 9)]:
        x = torch.empty(1, cin, hw, hw, device=META)
        m = torch.nn.Conv2d(cin, cout, k, s, p, groups=g, bias=False, device=META)
        with FlopCounterMode(display=False) as counter:
            out = m(x)
        assert 2 * conv_flops(cin, cout, k, tuple(out.shape[2:]), groups=g) == counter.get_total_flops()


def test_dense_params_and_flops():
    assert dense_params(784, 128) == 100_480  # spec (a) D1
    assert dense_params(24, 64) == 1600  # 003 [3-07]
    lin = torch.nn.Linear(30, 7, device=META)
    assert dense_params(30, 7) == sum(p.numel() for p in lin.parameters())
    with FlopCounterMode(display=False) as counter:
        torch.nn.Linear(30, 7, bias=False, device=META)(torch.empty(1, 30, device=META))
    assert 2 * dense_flops(30, 7) == counter.get_total_flops()


def test_depthwise_separable_counts_match_the_notes():
    assert depthwise_separable_params(64, 128, 3) == 576 + 8192 == 8768  # 000 §3.4.1, no biases
    assert conv_params(64, 128, 3, bias=False) == 73_728
    assert depthwise_separable_params(256, 256, 3) == 67_840 and conv_params(256, 256, 3, bias=False) == 589_824
    assert depthwise_separable_params(64, 128, 3, bias=True) == 8768 + 64 + 128
    # 002 §2.5: cost ratio to a standard conv is 1/D_out + 1/k^2
    for cout, k in [(128, 3), (32, 5), (7, 1)]:
        ratio = depthwise_separable_flops(64, cout, k, 10) / conv_flops(64, cout, k, 10)
        assert ratio == pytest.approx(1 / cout + 1 / k**2)


def test_stacked_small_kernels_receptive_fields_and_weights():
    assert receptive_field([3, 3]).size == 5 and receptive_field([3, 3, 3]).size == 7  # 003 [3-08], [3-20]
    assert receptive_field([7]).size == 7
    c = 16  # three 3x3 see as far as one 7x7 with 27 C^2 instead of 49 C^2 weights; two 3x3 vs 5x5: 18 vs 25
    assert 3 * conv_params(c, c, 3, bias=False) == 27 * c * c < conv_params(c, c, 7, bias=False) == 49 * c * c
    assert 2 * conv_params(c, c, 3, bias=False) == 18 * c * c < conv_params(c, c, 5, bias=False) == 25 * c * c
    assert receptive_field([(3, 1), (2, 2), (3, 1)]).size == 8  # conv3 -> pool2 -> conv3
    assert receptive_field([(3, 1, 1), (3, 1, 2), (3, 1, 4)]).size == 15  # dilations 1, 2, 4 (spec C10)
    fields = receptive_fields([(3, 2), (3, 2), (3, 1)])
    assert [f.jump for f in fields] == [2, 4, 4] and [f.size for f in fields] == [3, 7, 15]
    assert receptive_field([]).size == 1


def test_dilation_widens_the_kernel_without_parameters():
    assert [effective_kernel_size(3, d) for d in (1, 2, 4)] == [3, 5, 9]
    dilated = torch.nn.Conv2d(8, 8, 3, dilation=2, device=META)
    assert conv_params(8, 8, 3) == sum(p.numel() for p in dilated.parameters())


def _support(grad_row: torch.Tensor) -> tuple[int, int]:
    idx = torch.nonzero(grad_row).flatten()
    return int(idx.min()), int(idx.max())


@pytest.mark.parametrize("seed", range(6))
def test_receptive_field_equals_input_gradient_support(seed):
    # 003 [3-08]: the input-gradient of one output unit is zero outside its receptive field (positive weights: no
    # cancellation, so the support's extent is exactly the field)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    layers = []
    for _ in range(rng.randint(1, 4)):
        k, s, d = (rng.randint(1, 4), rng.randint(1, 3)), (rng.randint(1, 2), rng.randint(1, 2)), \
            (rng.randint(1, 2), 1)
        if rng.random() < 0.7:
            p = (rng.randint(0, 2), rng.randint(0, 2))
            conv = torch.nn.Conv2d(1, 1, k, s, p, d, bias=False).double()
            with torch.no_grad():
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=gen, dtype=torch.float64) + 0.1)
            layers.append(conv)
        else:
            layers.append(torch.nn.AvgPool2d(k, s, (k[0] // 2, k[1] // 2)))
    net = torch.nn.Sequential(*layers)
    x = torch.ones(1, 1, 48, 48, dtype=torch.float64, requires_grad=True)
    out = net(x)
    i, j = out.shape[2] // 2, out.shape[3] // 2
    (grad,) = torch.autograd.grad(out[0, 0, i, j], x)
    for axis, pos, line in ((0, i, grad[0, 0, :, :].sum(1)), (1, j, grad[0, 0, :, :].sum(0))):
        rf = receptive_field(net, axis=axis)
        centre = rf.start + pos * rf.jump
        lo, hi = _support(line)
        assert (lo, hi) == (centre - (rf.size - 1) / 2, centre + (rf.size - 1) / 2)


def test_receptive_field_rejects_unknown_layers():
    with pytest.raises(ConfigError):
        receptive_field([torch.nn.ReLU()])
    with pytest.raises(ConfigError):
        receptive_field([(3, 1, 1, 0, 9)])
