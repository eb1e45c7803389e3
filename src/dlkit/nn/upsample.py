"""Up-sampling: nearest neighbour, bed of nails, and transposed convolutions initialised bilinear.

Notes: 002 §5.1.3-§5.1.4, 003 §4.1.2, 000 §3.11.1. Nearest neighbour repeats each pixel into an f x f block;
bed of nails puts each value at the top-left of its f x f cell and zeros elsewhere (max unpooling with every
"argmax" at the top-left; the general one, with SegNet's switches, is dlkit.nn.unpool.max_unpool). A learned
up-sampling is a transposed convolution, which FCN initialises as a bilinear interpolator:

    filter[u, v] = (1 - |u - c| / f)(1 - |v - c| / f),   f = ceil(k / 2),  c = f - 1 (k odd) or f - 1/2 (k even)

(for k = 3 this is the notes' [[1/4, 1/2, 1/4], [1/2, 1, 1/2], [1/4, 1/2, 1/4]]). Up-sampling by an integer
factor f uses kernel k = 2f - f % 2, stride f and padding f // 2, so the output is exactly f times the input.
Then output pixel j reads input i with weight 1 - |(j + 1/2)/f - 1/2 - i|, which is bilinear interpolation
with align_corners=False. It differs from F.interpolate only on a border of f // 2 pixels, where the source
coordinate falls outside the image: interpolate clamps it to the edge, the transposed conv sees zero padding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .conv_arithmetic import IntPair, as_pair


def _check_factor(factor: int, what: str) -> int:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ConfigError(f"{what}: factor must be an int >= 1; got {factor!r}")
    return factor


def _check_image(x: Tensor, what: str) -> None:
    if x.dim() < 2:
        raise ConfigError(f"{what} expects an image [..., H, W] (e.g. [N, C, H, W]); got shape {tuple(x.shape)}")


def bilinear_filter(kernel_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The k x k bilinear-interpolation filter of FCN (Notes: 002 §5.1.4): (1 - |u-c|/f)(1 - |v-c|/f), f = ceil(k/2)."""
    k = _check_factor(kernel_size, "bilinear_filter")
    f = (k + 1) // 2
    c = f - 1 if k % 2 else f - 0.5
    tri = 1 - (torch.arange(k, dtype=torch.float64) - c).abs() / f
    return torch.outer(tri, tri).to(dtype)


def upsample_geometry(factor: int) -> tuple[int, int, int]:
    """(kernel_size, stride, padding) = (2f - f % 2, f, f // 2) of a transposed conv up-sampling exactly f times."""
    f = _check_factor(factor, "upsample_geometry")
    return 2 * f - f % 2, f, f // 2


def bilinear_kernel(channels: int, factor: int, depthwise: bool = True, dtype: torch.dtype = torch.float32) -> Tensor:
    """Weight of a ConvTranspose2d that up-samples each channel bilinearly by `factor` (Notes: 002 §5.1.4).

    depthwise=True: [channels, 1, k, k] for groups=channels; False: [channels, channels, k, k] with the filter
    on the diagonal and zeros across channels (FCN's form, which lets training learn to mix channels).
    """
    if not isinstance(channels, int) or channels < 1:
        raise ConfigError(f"bilinear_kernel: channels must be an int >= 1; got {channels!r}")
    k = upsample_geometry(factor)[0]
    filt = bilinear_filter(k, dtype)
    if depthwise:
        return filt.expand(channels, 1, k, k).clone()
    weight = torch.zeros(channels, channels, k, k, dtype=dtype)
    idx = torch.arange(channels)
    weight[idx, idx] = filt
    return weight


class BilinearUpsample(nn.Module):
    """Transposed convolution (up-convolution) initialised as bilinear up-sampling by `factor` (002 §5.1.3-5.1.4).

    [N, C, H, W] -> [N, C, fH, fW]. depthwise=True uses groups=channels (k^2 weights per channel, no channel
    mixing); False a full C x C kernel initialised diagonal, as FCN. learnable=False freezes the weights (a fixed
    bilinear up-sampler); gradients still reach the input. No bias. Equals F.interpolate(mode='bilinear',
    align_corners=False) at initialisation except on a border of factor // 2 pixels (zero padding, see module).
    """

    def __init__(self, channels: int, factor: int, learnable: bool = True, depthwise: bool = True):
        super().__init__()
        k, s, p = upsample_geometry(factor)
        self.channels, self.factor, self.learnable, self.depthwise = channels, factor, learnable, depthwise
        self.conv = nn.ConvTranspose2d(channels, channels, k, stride=s, padding=p,
                                       groups=channels if depthwise else 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(bilinear_kernel(channels, factor, depthwise))
        self.conv.weight.requires_grad_(learnable)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ConfigError(f"BilinearUpsample expects [N, {self.channels}, H, W]; got shape {tuple(x.shape)}")
        return self.conv(x)

    def extra_repr(self) -> str:
        return (f"{self.channels}, factor={self.factor}, learnable={self.learnable}, depthwise={self.depthwise}")


def nearest_upsample(x: Tensor, factor: IntPair) -> Tensor:
    """Nearest-neighbour up-sampling: every pixel becomes an f x f block (Notes: 002 §5.1.3, 003 §4.1.2).

    Equals F.interpolate(mode='nearest') for an integer factor, and a transposed conv with an f x f kernel of
    ones and stride f (003's "insert zeros, then copy the nearest pixel").
    """
    _check_image(x, "nearest_upsample")
    fh, fw = (_check_factor(f, "nearest_upsample") for f in as_pair(factor, "factor"))
    return x.repeat_interleave(fh, dim=-2).repeat_interleave(fw, dim=-1)


def bed_of_nails(x: Tensor, factor: IntPair) -> Tensor:
    """Bed-of-nails unpooling: x at the top-left of each f x f cell, zeros elsewhere; [..., H, W] -> [..., fH, fW].

    Max unpooling (F.max_unpool2d) with every stored argmax at the top-left of its window.
    """
    _check_image(x, "bed_of_nails")
    fh, fw = (_check_factor(f, "bed_of_nails") for f in as_pair(factor, "factor"))
    h, w = x.shape[-2:]
    out = x.new_zeros(*x.shape[:-2], h * fh, w * fw)
    out[..., ::fh, ::fw] = x
    return out


class NearestUpsample(nn.Module):
    """Nearest-neighbour up-sampling by `factor` as a module (no parameters), see nearest_upsample."""

    def __init__(self, factor: IntPair):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return nearest_upsample(x, self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class BedOfNails(NearestUpsample):
    """Bed-of-nails unpooling by `factor` as a module (no parameters), see bed_of_nails."""

    def forward(self, x: Tensor) -> Tensor:
        return bed_of_nails(x, self.factor)

