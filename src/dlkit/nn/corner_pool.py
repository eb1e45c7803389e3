"""CornerNet's corner pooling (Law and Deng 2018; Notes: 002 §4.3.5, keypoint-based detectors).

A box corner usually lies outside the object, so no local feature sees it. Corner pooling brings the object to the
corner: for the top-left corner, at pixel (i, j) it takes the maximum of the "top" feature map over every pixel
below it in its column, and of the "left" map over every pixel to its right in its row, and adds the two:

    t[i, j] = max_{i <= k < H} f_t[k, j]     (top pooling: a reverse cumulative max along H)
    l[i, j] = max_{j <= k < W} f_l[i, k]     (left pooling: a reverse cumulative max along W)
    top-left corner map = t + l

The bottom-right corner uses bottom pooling (max over k <= i) and right pooling (max over k <= j), the forward
cumulative maxima. Each is one `torch.cummax` (on a flipped tensor for the reverse ones): O(HW), vectorised; the
gradient reaches the position of each running maximum. `CornerPool` is the paper's corner-pooling module (its
Fig. 7, a modified residual block): two 3x3 conv-BN-ReLU branches, pooled and summed, a 3x3 conv-BN, a 1x1 conv-BN
shortcut from the input, their sum through ReLU, then a 3x3 conv-BN-ReLU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .conv_bn_act import ConvBNAct


def _check_map(x: Tensor, what: str) -> None:
    if x.dim() < 2:
        raise ConfigError(f"{what} expects a feature map [..., H, W] (e.g. [N, C, H, W]); got shape {tuple(x.shape)}")


def cummax_reverse(x: Tensor, dim: int) -> Tensor:
    """y[..., i, ...] = max_{k >= i} x[..., k, ...] along `dim`: the cumulative max run from the far end."""
    return torch.cummax(x.flip(dim), dim).values.flip(dim)


def top_pool(x: Tensor) -> Tensor:
    """Top pooling (Notes: 002 §4.3.5, CornerNet): y[..., i, j] = max_{k >= i} x[..., k, j] (everything below)."""
    _check_map(x, "top_pool")
    return cummax_reverse(x, -2)


def left_pool(x: Tensor) -> Tensor:
    """Left pooling (Notes: 002 §4.3.5, CornerNet): y[..., i, j] = max_{k >= j} x[..., i, k] (everything right)."""
    _check_map(x, "left_pool")
    return cummax_reverse(x, -1)


def bottom_pool(x: Tensor) -> Tensor:
    """Bottom pooling (Notes: 002 §4.3.5, CornerNet): y[..., i, j] = max_{k <= i} x[..., k, j] (everything above)."""
    _check_map(x, "bottom_pool")
    return torch.cummax(x, -2).values


def right_pool(x: Tensor) -> Tensor:
    """Right pooling (Notes: 002 §4.3.5, CornerNet): y[..., i, j] = max_{k <= j} x[..., i, k] (everything left)."""
    _check_map(x, "right_pool")
    return torch.cummax(x, -1).values


CORNERS = {"top_left": (top_pool, left_pool), "bottom_right": (bottom_pool, right_pool)}


def corner_pool(vertical: Tensor, horizontal: Tensor, corner: str = "top_left") -> Tensor:
    """The corner map of CornerNet (Notes: 002 §4.3.5): top_pool(vertical) + left_pool(horizontal) for the
    top-left corner, bottom_pool + right_pool for the bottom-right one."""
    if corner not in CORNERS:
        raise ConfigError(f"corner must be one of {sorted(CORNERS)}; got {corner!r}")
    if vertical.shape != horizontal.shape:
        raise ConfigError(f"corner_pool: the two maps must have the same shape; got {tuple(vertical.shape)} and "
                          f"{tuple(horizontal.shape)}")
    pool_v, pool_h = CORNERS[corner]
    return pool_v(vertical) + pool_h(horizontal)


class CornerPool(nn.Module):
    """CornerNet's corner pooling module (its Fig. 7; Notes: 002 §4.3.5): [N, C, H, W] -> [N, C, H, W].

    out = ConvBNAct3x3(ReLU(BN(conv3x3(corner_pool(a(x), b(x)))) + BN(conv1x1(x)))), with a, b two 3x3
    conv-BN-ReLU branches of `mid_chans` channels (128 in the paper, for C = 256) and `corner` 'top_left' or
    'bottom_right'.
    """

    def __init__(self, channels: int, mid_chans: int = 128, corner: str = "top_left", norm_layer="batch"):
        super().__init__()
        if corner not in CORNERS:
            raise ConfigError(f"corner must be one of {sorted(CORNERS)}; got {corner!r}")
        self.channels, self.corner = channels, corner
        self.vertical = ConvBNAct(channels, mid_chans, 3, norm_layer=norm_layer)
        self.horizontal = ConvBNAct(channels, mid_chans, 3, norm_layer=norm_layer)
        self.merge = ConvBNAct(mid_chans, channels, 3, act_layer=None, norm_layer=norm_layer)
        self.shortcut = ConvBNAct(channels, channels, 1, act_layer=None, norm_layer=norm_layer)
        self.relu = nn.ReLU()
        self.out = ConvBNAct(channels, channels, 3, norm_layer=norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ConfigError(f"CornerPool expects [N, {self.channels}, H, W]; got shape {tuple(x.shape)}")
        pooled = corner_pool(self.vertical(x), self.horizontal(x), self.corner)
        return self.out(self.relu(self.merge(pooled) + self.shortcut(x)))

    def extra_repr(self) -> str:
        return f"{self.channels}, corner={self.corner!r}"
