"""Max unpooling with switches (SegNet, DeconvNet): the decoder's up-sampling undoes the encoder's max-pooling.

Notes: 003 §4.1.2 ("max unpooling"), 002 §5.1.3. Max-pooling records, per window, where its maximum was (the
"switch": the flat index r W + c of the argmax in the H x W input plane). Max unpooling puts each pooled value back
at its stored position and zeros everywhere else:

    out[n, c, idx[n, c, i, j] // W, idx[n, c, i, j] % W] = x[n, c, i, j],   out = 0 elsewhere.

Bed of nails (dlkit.nn.upsample.bed_of_nails) is the special case with every switch at the top-left of its cell.
When windows overlap two values may share a position: the scatter keeps one of them (which one is unspecified,
as in torch); the gradient of each input value is the output gradient at its position.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from .conv_arithmetic import IntPair, as_pair
from .pooling import max_pool2d


def unpool_output_size(in_size: tuple[int, int], kernel_size: IntPair, stride: IntPair | None = None,
                       padding: IntPair = 0) -> tuple[int, int]:
    """(H, W) = ((h - 1) s - 2p + k, ...): the size of the map a max-pooling of these settings reduced to h x w."""
    k, p = as_pair(kernel_size, "kernel_size"), as_pair(padding, "padding")
    s = k if stride is None else as_pair(stride, "stride")
    return tuple((in_size[i] - 1) * s[i] - 2 * p[i] + k[i] for i in range(2))


def max_unpool(x: Tensor, indices: Tensor, kernel_size: IntPair | None = None, stride: IntPair | None = None,
               padding: IntPair = 0, output_size: tuple[int, int] | None = None) -> Tensor:
    """Max unpooling: each value of x [N, C, h, w] placed at its switch `indices` (flat H * W positions, as
    max_pool2d(..., return_indices=True) returns them) of a zero [N, C, H, W] map. Notes: 003 §4.1.2.

    (H, W) is `output_size` if given (e.g. the pooled map's size, needed when pooling floored an odd size), else
    derived from kernel_size / stride / padding as the inverse of the pooling's output-size formula.
    """
    if x.dim() != 4 or indices.shape != x.shape:
        raise ConfigError(f"max_unpool expects values [N, C, h, w] and switches of the same shape; got "
                          f"{tuple(x.shape)} and {tuple(indices.shape)} (pass the indices of "
                          f"max_pool2d(..., return_indices=True))")
    if indices.is_floating_point():
        raise ConfigError(f"max_unpool: switches must be integer indices; got dtype {indices.dtype}")
    if output_size is None:
        if kernel_size is None:
            raise ConfigError("max_unpool needs output_size=(H, W) or the pooling's kernel_size (and stride, padding)")
        output_size = unpool_output_size(tuple(x.shape[-2:]), kernel_size, stride, padding)
    h, w = (int(v) for v in tuple(output_size)[-2:])
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= h * w):
        raise ConfigError(f"max_unpool: switches must lie in 0..{h * w - 1} for a {h} x {w} output; got "
                          f"{int(indices.min())}..{int(indices.max())}. Pass the pooled map's size as output_size.")
    n, c = x.shape[:2]
    out = x.new_zeros(n, c, h * w)
    out = out.scatter(2, indices.reshape(n, c, -1).long(), x.reshape(n, c, -1))
    return out.view(n, c, h, w)


class MaxPoolWithSwitches(nn.Module):
    """Max-pooling that also returns its switches: forward(x) -> (y, indices). Notes: 003 §4.1.2 (SegNet encoder)."""

    def __init__(self, kernel_size: IntPair = 2, stride: IntPair | None = None, padding: IntPair = 0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, return_indices=True)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool(nn.Module):
    """Max unpooling with the switches of the matching MaxPoolWithSwitches: forward(x, indices, output_size=None).

    Notes: 003 §4.1.2 (SegNet decoder). Pass output_size (the pooled map's H x W) to undo a floor on odd sizes.
    """

    def __init__(self, kernel_size: IntPair = 2, stride: IntPair | None = None, padding: IntPair = 0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: Tensor, indices: Tensor, output_size: tuple[int, int] | None = None) -> Tensor:
        return max_unpool(x, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
