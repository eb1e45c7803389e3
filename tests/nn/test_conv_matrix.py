"""Convolution as a sparse Toeplitz matrix, and the tied-weight gradient (Notes: 000 §3.2, 000 §3.7)."""

import pytest
import torch
import torch.nn.functional as F

from dlkit.errors import ConfigError
from dlkit.nn.conv_matrix import conv_matrix, conv_matrix_indices, tied_weight_gradient

D = torch.float64

# The 16 x 4 matrix printed in 000 §3.2 (4x4 image, 3x3 kernel, stride 1, no padding); it is used transposed.
NOTES_MATRIX = """
w00 0 0 0 | w01 w00 0 0 | w02 w01 0 0 | 0 w02 0 0 |
w10 0 w00 0 | w11 w10 w01 w00 | w12 w11 w02 w01 | 0 w12 0 w02 |
w20 0 w10 0 | w21 w20 w11 w10 | w22 w21 w12 w11 | 0 w22 0 w12 |
0 0 w20 0 | 0 0 w21 w20 | 0 0 w22 w21 | 0 0 0 w22
"""

# (C_in, H, W, C_out, K_h, K_w, stride, padding, dilation, groups)
CONFIGS = [
    (1, 4, 4, 1, 3, 3, 1, 0, 1, 1),  # the notes' example
    (3, 7, 6, 4, 3, 2, 2, 1, 1, 1),
    (2, 8, 9, 3, 3, 3, (1, 2), (2, 1), 2, 1),
    (4, 6, 6, 6, 2, 3, 1, (0, 1), (1, 2), 2),
    (3, 5, 5, 3, 3, 3, 3, 2, 1, 3),  # depth-wise, padding wider than the stride grid
    (2, 5, 7, 2, 1, 1, 2, 0, 1, 1),  # 1x1
]


def _case(cfg, seed=0):
    cin, h, w, cout, kh, kw, s, p, d, g = cfg
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, cin, h, w, generator=gen, dtype=D)
    weight = torch.randn(cout, cin // g, kh, kw, generator=gen, dtype=D)
    return x, weight, dict(stride=s, padding=p, dilation=d, groups=g)


def test_matrix_reproduces_the_layout_printed_in_the_notes():
    weight = torch.tensor([[10 * a + b + 1 for b in range(3)] for a in range(3)], dtype=D).view(1, 1, 3, 3)
    cells = NOTES_MATRIX.replace("|", " ").split()
    expected = torch.tensor([0 if c == "0" else 10 * int(c[1]) + int(c[2]) + 1 for c in cells], dtype=D).view(16, 4)
    m = conv_matrix(weight, (1, 4, 4))
    assert m.shape == (4, 16)  # ours is the notes' matrix transposed: rows are outputs
    torch.testing.assert_close(m.T, expected, rtol=0, atol=0)
    assert ((m != 0).sum(1) == 9).all()  # 9 non-zeros per row, 16 - 9 zeros
    assert ((m != 0).sum() == 4 * 9) and torch.bincount(conv_matrix_indices((1, 1, 3, 3), (1, 4, 4))[2]).eq(4).all()


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("cfg", CONFIGS)
def test_matrix_times_flat_image_equals_conv2d(cfg, sparse):
    x, weight, kw = _case(cfg)
    ref = F.conv2d(x, weight, **kw)
    m = conv_matrix(weight, x.shape[1:], **kw, sparse=sparse)
    assert m.shape == (ref.numel(), x.numel()) and m.is_sparse == sparse
    y = torch.sparse.mm(m, x.reshape(-1, 1)).flatten() if sparse else m @ x.flatten()
    torch.testing.assert_close(y, ref.flatten())
    # a batch: X.flatten(1) @ M^T
    xb = torch.randn(3, *x.shape[1:], dtype=D)
    dense = m.to_dense() if sparse else m
    torch.testing.assert_close(xb.flatten(1) @ dense.T, F.conv2d(xb, weight, **kw).flatten(1))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_transposed_matrix_is_the_transposed_convolution(cfg):
    # 000 §3.7: conv_transpose2d(y) == M^T y (the notes' matrix itself, not its transpose)
    x, weight, kw = _case(cfg)
    m = conv_matrix(weight, x.shape[1:], **kw)
    out = F.conv2d(x, weight, **kw)
    y = torch.randn_like(out)
    s, p, d = ((kw[n], kw[n]) if isinstance(kw[n], int) else kw[n] for n in ("stride", "padding", "dilation"))
    op = tuple(x.shape[2 + i] - ((out.shape[2 + i] - 1) * s[i] - 2 * p[i] + d[i] * (weight.shape[2 + i] - 1) + 1)
               for i in range(2))
    ref = F.conv_transpose2d(y, weight, stride=s, padding=p, output_padding=op, groups=kw["groups"], dilation=d)
    torch.testing.assert_close(m.T @ y.flatten(), ref.flatten())


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("cfg", CONFIGS)
def test_tied_weight_gradient_is_the_sum_of_its_positions(cfg, sparse):
    x, weight, kw = _case(cfg, seed=1)
    g = torch.randn_like(F.conv2d(x, weight, **kw))
    # reference: autograd through F.conv2d
    w_ref = weight.clone().requires_grad_(True)
    (F.conv2d(x, w_ref, **kw) * g).sum().backward()
    # through the matrix built from the weight
    w = weight.clone().requires_grad_(True)
    m = conv_matrix(w, x.shape[1:], **kw, sparse=sparse)
    m.retain_grad()
    y = torch.sparse.mm(m, x.reshape(-1, 1)).flatten() if sparse else m @ x.flatten()
    (y * g.flatten()).sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad)
    # the sum over each kernel cell's positions of dL/dM (dense layer backprop: dL/dM = g x^T) is that gradient
    dl_dm = torch.outer(g.flatten(), x.flatten())
    torch.testing.assert_close(tied_weight_gradient(dl_dm, weight.shape, x.shape[1:], **kw), w_ref.grad)
    torch.testing.assert_close(tied_weight_gradient(m.grad, weight.shape, x.shape[1:], **kw), w_ref.grad)


def test_the_notes_mean_update_is_not_the_gradient():
    # Erratum (spec (d)3): 000 §3.2 suggests "the mean" of the tied updates. In the notes' example each cell
    # occurs O_w O_h = 4 times, so the mean is the true gradient / 4: a rescaled, not the exact, gradient.
    x, weight, kw = _case(CONFIGS[0])
    w = weight.clone().requires_grad_(True)
    (F.conv2d(x, w) ** 2).sum().backward()
    dl_dm = torch.outer(2 * F.conv2d(x, weight).flatten(), x.flatten())
    mean = tied_weight_gradient(dl_dm, weight.shape, x.shape[1:], reduce="mean")
    torch.testing.assert_close(mean, w.grad / 4)
    assert not torch.allclose(mean, w.grad)
    # with padding, border cells occur fewer times: the mean is not even a uniform rescaling
    x, weight, kw = _case(CONFIGS[1])
    g = torch.randn_like(F.conv2d(x, weight, **kw))
    dl_dm = torch.outer(g.flatten(), x.flatten())
    total = tied_weight_gradient(dl_dm, weight.shape, x.shape[1:], **kw)
    counts = torch.bincount(conv_matrix_indices(weight.shape, x.shape[1:], **kw)[2]).view(weight.shape)
    assert counts.unique().numel() > 1
    torch.testing.assert_close(tied_weight_gradient(dl_dm, weight.shape, x.shape[1:], **kw, reduce="mean"),
                               total / counts)


def test_bad_shapes_raise_config_error():
    with pytest.raises(ConfigError, match="groups"):
        conv_matrix(torch.randn(2, 3, 3, 3), (2, 5, 5))
    with pytest.raises(ConfigError):
        conv_matrix(torch.randn(2, 3, 3), (3, 5, 5))
    with pytest.raises(ConfigError, match="does not fit"):
        conv_matrix(torch.randn(1, 1, 5, 5), (1, 3, 3))
    with pytest.raises(ConfigError, match="reduce"):
        tied_weight_gradient(torch.zeros(4, 16), (1, 1, 3, 3), (1, 4, 4), reduce="max")
