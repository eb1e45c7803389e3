"""Pooling from the definition equals torch's, forward and gradient (Notes: 000 §3.3, 003 §3.2.2, 004 CNN)."""

import pytest
import torch
import torch.nn.functional as F

from dlkit.errors import ConfigError
from dlkit.nn.conv_arithmetic import pool_output_size
from dlkit.nn.pooling import (
    AvgPool2d,
    GlobalAvgPool2d,
    MaxPool2d,
    MinPool2d,
    avg_pool2d,
    global_avg_pool2d,
    max_pool2d,
    min_pool2d,
)

D = torch.float64
X4 = torch.tensor([[1, 3, 2, 4], [5, 6, 1, 0], [7, 2, 9, 8], [0, 1, 3, 5]], dtype=D).view(1, 1, 4, 4)


def _value_and_grad(fn, x):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    proj = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
    (grad,) = torch.autograd.grad((y * proj).sum(), x)
    return y, grad


def _assert_same(ours, ref, x):
    (ya, ga), (yb, gb) = _value_and_grad(ours, x), _value_and_grad(ref, x)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-5)


def test_hand_computed_4x4_example_with_f2_s2():
    # spec C5 / 003 [3-06]: a 4x4 input, 2x2 windows, stride 2
    assert max_pool2d(X4, 2).view(2, 2).tolist() == [[6, 4], [7, 9]]
    assert avg_pool2d(X4, 2).view(2, 2).tolist() == [[3.75, 1.75], [2.5, 6.25]]
    assert min_pool2d(X4, 2).view(2, 2).tolist() == [[1, 0], [0, 3]]
    assert global_avg_pool2d(X4).item() == 57 / 16


# (kernel, stride, padding, dilation)
POOL_CASES = [(2, None, 0, 1), (3, 2, 1, 1), (3, 1, 1, 1), ((2, 3), (1, 2), (1, 0), 1), (3, 2, 0, 2), (2, 3, 1, 2)]


@pytest.mark.parametrize("k,s,p,d", POOL_CASES)
def test_max_pool_equals_torch_values_indices_and_gradient(k, s, p, d):
    x = torch.randn(2, 3, 9, 8, dtype=D)
    _assert_same(lambda x: max_pool2d(x, k, s, p, d), lambda x: F.max_pool2d(x, k, s, p, d), x)
    (y, idx), (_, idx_ref) = max_pool2d(x, k, s, p, d, True), F.max_pool2d(x, k, s, p, d, return_indices=True)
    assert torch.equal(idx, idx_ref)
    assert y.shape[2] == pool_output_size(9, *((k, s, p, d) if isinstance(k, int) else (k[0], s[0], p[0], d)))


def test_max_pool_gradient_reaches_only_the_argmax():
    x = torch.randn(1, 2, 6, 6, dtype=D, requires_grad=True)
    y, idx = max_pool2d(x, 2, return_indices=True)
    y.sum().backward()
    expected = torch.zeros(1, 2, 36, dtype=D).scatter_(2, idx.flatten(2), 1.0).view_as(x)
    torch.testing.assert_close(x.grad, expected)
    assert x.grad.sum() == y.numel()  # one unit of gradient per window
    # on ties (integer inputs), the first maximum in the window receives it, as in torch
    ties = torch.randint(0, 3, (2, 3, 7, 7), generator=torch.Generator().manual_seed(0)).to(D)
    _assert_same(lambda x: max_pool2d(x, 3, 2, 1), lambda x: F.max_pool2d(x, 3, 2, 1), ties)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (1, 2), (1, 1)), (4, 3, 2)])
def test_avg_pool_equals_torch_for_both_padding_counts(k, s, p, count_include_pad):
    x = torch.randn(2, 3, 9, 8, dtype=D)
    _assert_same(lambda x: avg_pool2d(x, k, s, p, count_include_pad),
                 lambda x: F.avg_pool2d(x, k, s, p, count_include_pad=count_include_pad), x)


def test_avg_pool_divisor_override_equals_torch():
    x = torch.randn(1, 2, 7, 7, dtype=D)
    _assert_same(lambda x: avg_pool2d(x, 3, 2, 1, divisor_override=5),
                 lambda x: F.avg_pool2d(x, 3, 2, 1, divisor_override=5), x)


def test_min_pool_is_the_window_minimum():
    x = torch.randn(2, 3, 8, 8, dtype=D)
    _assert_same(lambda x: min_pool2d(x, 3, 2, 1), lambda x: -F.max_pool2d(-x, 3, 2, 1), x)
    ref = x.unfold(2, 2, 2).unfold(3, 2, 2).amin((-2, -1))
    torch.testing.assert_close(MinPool2d(2)(x), ref)


def test_global_average_pooling_equals_adaptive_avg_pool_and_ignores_shifts():
    x = torch.randn(3, 5, 7, 6, dtype=D)
    _assert_same(lambda x: global_avg_pool2d(x, keepdim=True), lambda x: F.adaptive_avg_pool2d(x, 1), x)
    assert GlobalAvgPool2d()(x).shape == (3, 5) and GlobalAvgPool2d(flatten=False)(x).shape == (3, 5, 1, 1)
    # 003 [3-10]: GAP is invariant to (circular) translations, while convolution is only equivariant
    torch.testing.assert_close(global_avg_pool2d(torch.roll(x, (2, 3), (2, 3))), global_avg_pool2d(x))


def test_pooling_layers_have_no_parameters_and_keep_the_depth():
    x = torch.randn(2, 7, 8, 8)
    for layer, ref in [(MaxPool2d(2), torch.nn.MaxPool2d(2)), (AvgPool2d(3, 2, 1), torch.nn.AvgPool2d(3, 2, 1)),
                       (MinPool2d(2), None), (GlobalAvgPool2d(), None)]:
        assert sum(p.numel() for p in layer.parameters()) == 0
        y = layer(x)
        assert y.shape[1] == 7
        if ref is not None:
            torch.testing.assert_close(y, ref(x))


def test_bad_pool_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="padding"):
        max_pool2d(torch.randn(1, 1, 5, 5), 2, padding=2)
    with pytest.raises(ConfigError, match="padding"):
        avg_pool2d(torch.randn(1, 1, 5, 5), 3, padding=2)
    with pytest.raises(ConfigError, match=r"\[N, C, H, W\]"):
        MaxPool2d(2)(torch.randn(5, 5))
    with pytest.raises(ConfigError, match="does not fit"):
        avg_pool2d(torch.randn(1, 1, 2, 2), 3)
