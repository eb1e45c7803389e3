"""Convolution layers from the definition equal torch's (Notes: 000 §3.1-3.7, 003 §3.2.1, 002 §2.3, 002 §2.5)."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlkit.errors import ConfigError
from dlkit.nn.conv import (
    Conv2d,
    ConvTranspose2d,
    DepthwiseSeparableConv2d,
    conv2d,
    conv_transpose2d,
    dilate_kernel,
    im2col,
    zero_insert,
)
from dlkit.nn.conv_arithmetic import conv_params, depthwise_separable_params

D = torch.float64


def _grads(fn, *tensors):
    """Output of fn and the gradients of a random projection of it w.r.t. each tensor."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    return out, torch.autograd.grad((out * proj).sum(), leaves)


def _assert_same(ours, ref, *tensors):
    (ya, ga), (yb, gb) = _grads(ours, *tensors), _grads(ref, *tensors)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", [
    dict(kernel_size=3), dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
    dict(kernel_size=1, stride=3), dict(kernel_size=3, padding="same"), dict(kernel_size=4, dilation=2, padding=1),
])
def test_im2col_equals_f_unfold(kw):
    x = torch.randn(2, 3, 9, 8, dtype=D)
    ref_kw = {**kw, "padding": (kw["kernel_size"] - 1) // 2} if kw.get("padding") == "same" else kw
    torch.testing.assert_close(im2col(x, **kw), F.unfold(x, **ref_kw), rtol=0, atol=0)


# (C_in, C_out, kernel, stride, padding, dilation, groups, bias)
CONV_CASES = [
    (3, 4, 3, 1, 0, 1, 1, True),
    (3, 5, (3, 2), (2, 1), (1, 2), 1, 1, True),
    (4, 6, 3, 2, 2, 2, 2, False),  # grouped, dilated, strided
    (6, 6, 3, 1, 1, 1, 6, True),  # depth-wise
    (4, 8, 5, 3, 2, (2, 1), 4, True),
    (2, 3, 1, 1, 0, 1, 1, True),  # 1x1
    (3, 4, 4, 1, "same", 1, 1, True),  # even kernel 'same': asymmetric padding
    (3, 4, 3, 1, "valid", 3, 1, False),
]


@pytest.mark.parametrize("cin,cout,k,s,p,d,g,bias", CONV_CASES)
def test_conv2d_equals_torch_forward_and_gradients(cin, cout, k, s, p, d, g, bias):
    gen = torch.Generator().manual_seed(0)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(2, cin, 11, 10, generator=gen, dtype=D)
    w = torch.randn(cout, cin // g, kh, kw, generator=gen, dtype=D)
    b = torch.randn(cout, generator=gen, dtype=D) if bias else None
    args = (x, w) if b is None else (x, w, b)

    def ours(x, w, b=None):
        return conv2d(x, w, b, s, p, d, g)

    def ref(x, w, b=None):
        if p == "same" and kh % 2 == 0:  # silence torch's warning about the asymmetric padded copy
            total = d * (kh - 1)
            return F.conv2d(F.pad(x, (total // 2, total - total // 2) * 2), w, b, s, 0, d, g)
        return F.conv2d(x, w, b, s, p, d, g)

    _assert_same(ours, ref, *args)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv2d_padding_modes_equal_torch(mode):
    ref = torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode).double()
    ours = Conv2d(3, 4, 3, padding=1, padding_mode=mode).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 7, 6, dtype=D)
    torch.testing.assert_close(ours(x), ref(x))


def test_conv_is_translation_equivariant_with_circular_padding():
    # 004 CNN "translation invariance (circulant matrix)" is equivariance: conv(roll(x)) == roll(conv(x))
    conv = Conv2d(2, 3, 3, padding=1, padding_mode="circular").double()
    x = torch.randn(1, 2, 8, 8, dtype=D)
    torch.testing.assert_close(conv(torch.roll(x, (2, -3), (2, 3))), torch.roll(conv(x), (2, -3), (2, 3)))


def test_conv2d_module_interchanges_state_with_nn_conv2d():
    ref = torch.nn.Conv2d(6, 4, (3, 5), stride=2, padding=(1, 2), dilation=(2, 1), groups=2)
    ours = Conv2d(6, 4, (3, 5), stride=2, padding=(1, 2), dilation=(2, 1), groups=2)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == conv_params(6, 4, (3, 5), groups=2)
    # torch's initialisation: weight and bias within U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 3 * 3 * 5
    bound = 1 / math.sqrt(3 * 3 * 5)
    assert ours.weight.abs().max() <= bound and ours.bias.abs().max() <= bound
    assert ours.weight.std() > bound / 3
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 6, 12, 9)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_same_padding_gives_ceil_size_for_any_stride():
    x, w = torch.randn(1, 2, 9, 10, dtype=D), torch.randn(3, 2, 3, 4, dtype=D)
    for s in (1, 2, 3):
        y = conv2d(x, w, stride=s, padding="same")
        assert y.shape[2:] == (math.ceil(9 / s), math.ceil(10 / s))
    # stride 2: total padding rows (5-1)*2 + 3 - 9 = 2 -> (1, 1), cols (5-1)*2 + 4 - 10 = 2 -> (1, 1)
    torch.testing.assert_close(conv2d(x, w, stride=2, padding="same"), F.conv2d(F.pad(x, (1, 1, 1, 1)), w, stride=2))


def test_grouped_conv_equals_separate_convs_concatenated():
    # 002 §2.3: G chunks of C_in/G channels, each with C_out/G kernels, outputs stacked; G times fewer weights
    g, x = 3, torch.randn(2, 6, 8, 8, dtype=D)
    w = torch.randn(9, 2, 3, 3, dtype=D)
    chunks = [F.conv2d(xc, wc, padding=1) for xc, wc in zip(x.chunk(g, 1), w.chunk(g, 0))]
    torch.testing.assert_close(conv2d(x, w, padding=1, groups=g), torch.cat(chunks, 1))
    assert Conv2d(6, 9, 3, groups=3).weight.numel() * 3 == Conv2d(6, 9, 3).weight.numel()


def test_one_by_one_conv_is_a_per_pixel_dense_layer():
    conv = Conv2d(5, 7, 1).double()
    dense = torch.nn.Linear(5, 7).double()
    dense.load_state_dict({"weight": conv.weight[:, :, 0, 0], "bias": conv.bias})
    x = torch.randn(2, 5, 4, 6, dtype=D)
    torch.testing.assert_close(conv(x), dense(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


@pytest.mark.parametrize("bias", [False, True])
def test_depthwise_separable_conv_matches_notes_count_and_torch(bias):
    m = DepthwiseSeparableConv2d(64, 128, 3, padding=1, bias=bias).double()
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == depthwise_separable_params(64, 128, 3, bias=bias) == 8768 + (192 if bias else 0)
    assert n_params < conv_params(64, 128, 3, bias=False) == 73_728
    x = torch.randn(1, 64, 6, 5, dtype=D)
    ref = F.conv2d(F.conv2d(x, m.depthwise.weight, m.depthwise.bias, padding=1, groups=64),
                   m.pointwise.weight, m.pointwise.bias)
    y = m(x)
    torch.testing.assert_close(y, ref)
    assert y.shape == F.conv2d(x, torch.randn(128, 64, 3, 3, dtype=D), padding=1).shape
    # the composition is a standard conv with the rank-limited kernel W[o, c] = p[o, c] d[c]
    torch.testing.assert_close(m.equivalent_conv()(x), y)


def test_dilated_conv_equals_conv_with_zero_inserted_kernel():
    x, w = torch.randn(2, 3, 13, 12, dtype=D), torch.randn(4, 3, 3, 2, dtype=D)
    for d in [(2, 2), (3, 1), (1, 4)]:
        big = dilate_kernel(w, d)
        assert big.shape[2:] == (d[0] * 2 + 1, d[1] + 1)  # K + (K - 1)(d - 1)
        _assert_same(lambda x, w, d=d: conv2d(x, w, dilation=d, padding=1),
                     lambda x, w, d=d: conv2d(x, dilate_kernel(w, d), padding=1), x, w)
        _assert_same(lambda x, w, d=d: conv2d(x, w, dilation=d), lambda x, w, d=d: F.conv2d(x, w, dilation=d), x, w)
    assert Conv2d(3, 4, 3, dilation=2).weight.shape == Conv2d(3, 4, 3).weight.shape  # no extra parameters


# (C_in, C_out, kernel, stride, padding, output_padding, groups, dilation)
TRANSPOSE_CASES = [
    (3, 4, 3, 1, 0, 0, 1, 1),
    (3, 4, 3, 2, 1, 1, 1, 1),
    (2, 5, 4, 2, 1, 0, 1, 1),  # the usual x2 upsampling
    (4, 6, (3, 2), (3, 2), (2, 0), (1, 1), 2, 1),
    (2, 2, 3, 2, 3, 1, 1, 2),  # padding larger than d (K-1)/2: a crop
    (4, 4, 3, 1, 1, 1, 4, 2),  # depth-wise, output padding from dilation
    (3, 2, 1, 3, 0, 2, 1, 1),
]


@pytest.mark.parametrize("cin,cout,k,s,p,op,g,d", TRANSPOSE_CASES)
def test_conv_transpose2d_equals_torch_forward_and_gradients(cin, cout, k, s, p, op, g, d):
    gen = torch.Generator().manual_seed(1)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(2, cin, 5, 4, generator=gen, dtype=D)
    w = torch.randn(cin, cout // g, kh, kw, generator=gen, dtype=D)
    b = torch.randn(cout, generator=gen, dtype=D)
    _assert_same(lambda x, w, b: conv_transpose2d(x, w, b, s, p, op, g, d),
                 lambda x, w, b: F.conv_transpose2d(x, w, b, s, p, op, g, d), x, w, b)


@pytest.mark.parametrize("cin,cout,k,s,p,op,g,d", [c for c in TRANSPOSE_CASES if c[3] != 1 or c[5] == 0])
def test_conv_transpose_is_the_adjoint_of_conv(cin, cout, k, s, p, op, g, d):
    # <conv(x), y> = <x, conv_T(y)>: the same weight read as [C_out of conv, C_in of conv / G, ...]. (With stride 1
    # an output_padding allowed by dilation adds rows that conv maps to extra outputs, so shapes differ there.)
    w = torch.randn(cin, cout // g, *((k, k) if isinstance(k, int) else k), dtype=D)
    y = torch.randn(2, cin, 5, 4, dtype=D)
    up = conv_transpose2d(y, w, None, s, p, op, g, d)
    x = torch.randn_like(up)
    down = conv2d(x, w, None, s, p, d, g)
    assert down.shape == y.shape
    torch.testing.assert_close((down * y).sum(), (x * up).sum())


def test_transposed_conv_upsamples_each_pixel_into_a_kernel_patch():
    # 000 §3.7: one input pixel of value v becomes v * kernel placed at (i S, j S); stride S = "stride 1/S"
    w = torch.randn(1, 1, 3, 3, dtype=D)
    x = torch.zeros(1, 1, 3, 3, dtype=D)
    x[0, 0, 1, 2] = 2.0
    y = conv_transpose2d(x, w, stride=2)
    expected = torch.zeros(1, 1, 7, 7, dtype=D)
    expected[0, 0, 2:5, 4:7] = 2.0 * w[0, 0]
    torch.testing.assert_close(y, expected)
    z = zero_insert(torch.arange(1.0, 5.0).view(1, 1, 2, 2), 3)
    assert z.shape == (1, 1, 4, 4) and z[0, 0, ::3, ::3].tolist() == [[1, 2], [3, 4]] and z.sum() == 10


def test_conv_transpose_module_interchanges_state_with_torch():
    ref = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    ours = ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    bound = 1 / math.sqrt(3 * 3 * 3)  # fan_in = weight.size(1) * K * K, as torch
    assert ours.weight.abs().max() <= bound and ours.bias.abs().max() <= bound
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 5, 5)
    y = ours(x)
    assert y.shape == (2, 6, 10, 10)
    torch.testing.assert_close(y, ref(x), rtol=1e-5, atol=1e-5)


def test_bad_conv_inputs_raise_config_error():
    with pytest.raises(ConfigError, match="channels"):
        conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 2, 3, 3))
    with pytest.raises(ConfigError, match=r"\[N, C, H, W\]"):
        Conv2d(3, 4, 3)(torch.randn(3, 5, 5))
    with pytest.raises(ConfigError, match="does not fit"):
        conv2d(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 3, 3))
    with pytest.raises(ConfigError, match="groups"):
        Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ConfigError, match="padding"):
        Conv2d(4, 6, 3, padding="full")
    with pytest.raises(ConfigError, match="output_padding"):
        conv_transpose2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 3, 3), stride=2, output_padding=2)
