"""Convolution as a sparse (Toeplitz) matrix, and backpropagation through tied weights (Notes: 000 §3.2).

A convolution is a dense layer whose matrix is mostly zeros and whose non-zeros repeat the kernel: for an
input x of shape (C_in, H, W) and a kernel w of shape (C_out, C_in / G, K_h, K_w),

    conv(x).flatten() = M x.flatten(),   M[(o, i, j), (c, i S_h - P_h + a d_h, j S_w - P_w + b d_w)] = w[o, c', a, b]

(c the channel of group o // (C_out / G) at in-group index c'; taps falling into the zero padding are dropped).
The notes print the 16 x 4 matrix M^T for a 4x4 image and a 3x3 kernel; `conv_matrix` returns M itself
(rows = outputs), so `M @ x.flatten()` is the convolution and `M.T @ y.flatten()` the transposed
convolution (000 §3.7).

Training M as a dense layer must keep the entries of one kernel cell equal. The gradient of the shared
weight is the SUM of the gradients of its positions (chain rule through the tying). The notes suggest "e.g.
the mean of all the corresponding updates": that is an erratum (spec (d)3), only a rescaling by 1/(number of
positions), uniform only when every cell occurs equally often (valid convolution). `tied_weight_gradient`
computes the sum and offers the notes' mean for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from .conv_arithmetic import IntPair, as_pair, conv_output_shape


def conv_matrix_indices(weight_shape: Sequence[int], input_shape: Sequence[int], stride: IntPair = 1,
                        padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1
                        ) -> tuple[Tensor, Tensor, Tensor, tuple[int, int]]:
    """Positions of the kernel in the convolution matrix (Notes: 000 §3.2).

    Returns (rows, cols, taps, (n_rows, n_cols)) with M[rows[n], cols[n]] = weight.flatten()[taps[n]];
    n_rows = C_out O_h O_w, n_cols = C_in H W, all flattened row-major (channel, row, column).
    """
    if len(weight_shape) != 4 or len(input_shape) != 3:
        raise ConfigError(f"expected weight (C_out, C_in/groups, K_h, K_w) and input_shape (C_in, H, W); got "
                          f"{tuple(weight_shape)} and {tuple(input_shape)}")
    c_out, c_in_g, kh, kw = (int(v) for v in weight_shape)
    c_in, h, w = (int(v) for v in input_shape)
    if groups < 1 or c_out % groups or c_in != c_in_g * groups:
        raise ConfigError(f"with groups={groups} the weight needs C_out divisible by groups and C_in/groups = "
                          f"{c_in}/{groups} input channels per group; got weight {tuple(weight_shape)}")
    (sh, sw), (ph, pw), (dh, dw) = as_pair(stride, "stride"), as_pair(padding, "padding"), as_pair(dilation,
                                                                                                    "dilation")
    oh, ow = conv_output_shape((h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    ar = torch.arange
    o = ar(c_out).view(-1, 1, 1, 1, 1, 1)
    c = ar(c_in_g).view(1, -1, 1, 1, 1, 1)
    a = ar(kh).view(1, 1, -1, 1, 1, 1)
    b = ar(kw).view(1, 1, 1, -1, 1, 1)
    i = ar(oh).view(1, 1, 1, 1, -1, 1)
    j = ar(ow).view(1, 1, 1, 1, 1, -1)
    ih, iw = i * sh - ph + a * dh, j * sw - pw + b * dw  # input pixel under tap (a, b) of output (i, j)
    channel = (o // (c_out // groups)) * c_in_g + c
    shape = torch.broadcast_shapes(o.shape, c.shape, a.shape, b.shape, i.shape, j.shape)
    rows = ((o * oh + i) * ow + j).expand(shape)
    cols = ((channel * h + ih) * w + iw).expand(shape)
    taps = (((o * c_in_g + c) * kh + a) * kw + b).expand(shape)
    inside = ((ih >= 0) & (ih < h) & (iw >= 0) & (iw < w)).expand(shape)  # outside = zero padding
    return rows[inside], cols[inside], taps[inside], (c_out * oh * ow, c_in * h * w)


def conv_matrix(weight: Tensor, input_shape: Sequence[int], stride: IntPair = 1, padding: IntPair = 0,
                dilation: IntPair = 1, groups: int = 1, sparse: bool = False) -> Tensor:
    """The matrix M of a convolution, M @ x.flatten() == F.conv2d(x, weight, ...).flatten() (Notes: 000 §3.2).

    Built differentiably from `weight` (its values are scattered to their positions), so gradients flow from
    M back to the shared kernel. `sparse=True` returns a coalesced torch.sparse COO tensor (use torch.sparse.mm).
    """
    if weight.dim() != 4:
        raise ConfigError(f"weight must be (C_out, C_in/groups, K_h, K_w); got shape {tuple(weight.shape)}")
    rows, cols, taps, size = conv_matrix_indices(weight.shape, input_shape, stride, padding, dilation, groups)
    values = weight.reshape(-1)[taps]
    if sparse:
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, size, check_invariants=True).coalesce()
    return weight.new_zeros(size).index_put((rows, cols), values)


def tied_weight_gradient(grad_matrix: Tensor, weight_shape: Sequence[int], input_shape: Sequence[int],
                         stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
                         reduce: str = "sum") -> Tensor:
    """Gradient of the kernel from the gradient of its matrix, dL/dw = sum over positions of dL/dM (Notes: 000 §3.2).

    reduce='sum' is the exact gradient of the tied weight; reduce='mean' is the notes' suggestion ("e.g. the
    mean"), an erratum: it divides each cell's sum by its number of positions.
    """
    if reduce not in ("sum", "mean"):
        raise ConfigError(f"reduce must be 'sum' (exact) or 'mean' (the notes' variant); got {reduce!r}")
    rows, cols, taps, size = conv_matrix_indices(weight_shape, input_shape, stride, padding, dilation, groups)
    if tuple(grad_matrix.shape) != size:
        raise ConfigError(f"grad_matrix must have the matrix shape {size}; got {tuple(grad_matrix.shape)}")
    dense = grad_matrix.to_dense() if grad_matrix.is_sparse else grad_matrix
    n = 1
    for v in weight_shape:
        n *= int(v)
    grad = dense.new_zeros(n).index_add_(0, taps, dense[rows, cols])
    if reduce == "mean":
        grad = grad / torch.bincount(taps, minlength=n).clamp(min=1).to(grad.dtype)
    return grad.view(*weight_shape)
