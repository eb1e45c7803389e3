"""Inverted residual (MBConv) block of MobileNetV2 and EfficientNet (Notes: 002 §2.5, §2.7).

A ResNet bottleneck squeezes the channels, filters them with a 3x3 and expands them back. The inverted
residual does the opposite: a 1x1 convolution expands the C_in input channels by a factor t, a k x k
depth-wise convolution (groups = channels; stride s sits on this middle convolution when downsampling)
filters each channel on its own, an optional squeeze-and-excitation unit re-weights the channels
(EfficientNet), and a 1x1 convolution projects to C_out with no non-linearity: the linear bottleneck,
because a ReLU on the thin, compressed representation would destroy information. The skip joins the thin
ends and exists only when s = 1 and C_in = C_out. With t = 1 the expansion is left out (MobileNetV2's first
row, EfficientNet's MBConv1). EfficientNet also drops the residual branch of whole samples at random
during training (stochastic depth).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .conv_bn_act import ConvBNAct
from .squeeze_excitation import SqueezeExcitation


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of `divisor`, never below 90% of `value`.

    Notes: 002 §2.5-2.6 (width multiplier, width scaling). new = max(min_value, floor(v/d + 1/2) d), plus d when
    new < 0.9 v. This is the rounding of the MobileNet and EfficientNet reference implementations.
    """
    if divisor < 1:
        raise ConfigError(f"make_divisible divisor must be a positive integer; got {divisor}")
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def stochastic_depth(x: Tensor, p: float, training: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Drop the whole residual branch of each sample with probability p (Huang et al., 2016; EfficientNet §2.7).

    y_n = x_n * m_n / (1 - p), m_n ~ Bernoulli(1 - p) per sample n; the identity when not training or p = 0.
    """
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"stochastic depth probability must be in [0, 1]; got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    keep = torch.rand(shape, generator=generator, device=x.device) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class StochasticDepth(nn.Module):
    """Module form of `stochastic_depth`: per-sample branch drop with probability p in train mode."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"StochasticDepth p must be in [0, 1]; got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return stochastic_depth(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand (x t) -> k x k depth-wise (stride s) -> [SE] -> 1x1 linear projection, + x if s=1, C_in=C_out.

    Notes: 002 §2.5. y = x + P(SE(D(E(x)))) with E, D followed by BN and `act_layer` (ReLU6 in MobileNetV2,
    SiLU in EfficientNet) and P followed by BN only; `norm_layer` replaces BN (`dlkit.nn.norm`). `se_ratio` > 0
    adds squeeze-and-excitation with max(1, floor(se_ratio * C_in)) hidden units, i.e. a fraction of the block's
    *input* channels, as EfficientNet does. `expanded_chans` overrides round(t * C_in). `drop_path` is the
    stochastic-depth probability of the branch.
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1, expand_ratio: float = 6, kernel_size: int = 3,
                 se_ratio: float = 0.0, act_layer="relu6", bn_eps: float = 1e-5, bn_momentum: float = 0.1,
                 drop_path: float = 0.0, expanded_chans: int | None = None, norm_layer="batch"):
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"InvertedResidual stride must be 1 or 2; got {stride}")
        if expand_ratio < 1:
            raise ConfigError(f"InvertedResidual expand_ratio t must be >= 1; got {expand_ratio}")
        if kernel_size % 2 != 1:
            raise ConfigError(f"InvertedResidual kernel_size must be odd (3, 5, ...); got {kernel_size}")
        hidden = int(round(in_chans * expand_ratio)) if expanded_chans is None else expanded_chans
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, norm_layer=norm_layer)
        self.in_chans, self.out_chans, self.stride, self.hidden_chans = in_chans, out_chans, stride, hidden
        self.use_residual = stride == 1 and in_chans == out_chans
        self.expand = ConvBNAct(in_chans, hidden, 1, act_layer=act_layer, **bn) if hidden != in_chans else None
        self.depthwise = ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden, act_layer=act_layer, **bn)
        self.se = (SqueezeExcitation(hidden, max(1, int(in_chans * se_ratio)), act_layer=act_layer)
                   if se_ratio > 0 else None)
        self.project = ConvBNAct(hidden, out_chans, 1, act_layer=None, **bn)
        self.drop_path = StochasticDepth(drop_path) if self.use_residual and drop_path > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.expand(x) if self.expand is not None else x
        h = self.depthwise(h)
        if self.se is not None:
            h = self.se(h)
        h = self.project(h)
        if not self.use_residual:
            return h
        if self.drop_path is not None:
            h = self.drop_path(h)
        return x + h
