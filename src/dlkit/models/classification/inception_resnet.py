"""Inception-ResNet blocks (Szegedy et al., 2016, "Inception-v4, Inception-ResNet ..."; Notes: 002 §2.2.2).

Inception modules inspired by the bottleneck block, wrapped in a residual connection: 1x1 convolutions compress
the input, a few branches transform it, the branches are concatenated, a final 1x1 convolution (linear, with bias)
restores the skip width, and the result is added to the input:

    y = act(x + s * W_up [b_0(x), b_1(x), ...])

The residual scale s (0.1-0.3 in the paper, 0.17 for A and 0.10 for B in Inception-ResNet-v2) keeps the sum stable
in very wide networks; it is not in the notes. With s = 0 (or W_up = 0) the block is the identity before the
activation, the starting point residual learning relies on (002 §2.2).

Inception-ResNet-A (35x35x320 in v2): 1x1 32 | 1x1 32 -> 3x3 32 | 1x1 32 -> 3x3 48 -> 3x3 64 (two 3x3 = a factorised
5x5), concat 128 -> 1x1 320.
Inception-ResNet-B (17x17x1088 in v2): 1x1 192 | 1x1 128 -> 1x7 160 -> 7x1 192 (a factorised 7x7), concat 384 ->
1x1 1088. The notes say "three 1x1 convolutions" for B but list two paths; the paper has two (as here).
Every convolution inside a branch is conv + BN (eps 1e-3, no bias) + ReLU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.activations import get_act_layer, inplace_
from ...nn.conv_bn_act import ConvBNAct
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo


def _conv(in_chans: int, out_chans: int, kernel_size: int | tuple[int, int], stride: int = 1,
          bn_eps: float = 1e-3, norm_layer="batch", act_layer="relu") -> ConvBNAct:
    return ConvBNAct(in_chans, out_chans, kernel_size, stride, bn_eps=bn_eps, norm_layer=norm_layer,
                     act_layer=act_layer)


class _ResidualInception(nn.Module):
    """Shared forward of the A and B blocks: act(x + scale * up(concat(branches(x))))."""

    branches: nn.ModuleList
    up: nn.Conv2d

    def __init__(self, chans: int, scale: float, activate: bool, bn_eps: float, norm_layer, act_layer):
        super().__init__()
        if chans < 1:
            raise ConfigError(f"{type(self).__name__} needs a positive channel count; got {chans}")
        self.chans, self.scale = chans, float(scale)
        make_act = get_act_layer(act_layer)
        self.act = inplace_(make_act()) if activate and make_act is not None else nn.Identity()
        self.make_conv = functools.partial(_conv, bn_eps=bn_eps, norm_layer=norm_layer, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.chans:
            raise ConfigError(f"{type(self).__name__} expects [N, {self.chans}, H, W]; got {tuple(x.shape)}")
        residual = self.up(torch.cat([b(x) for b in self.branches], dim=1))
        return self.act(x + self.scale * residual)


class InceptionResNetA(_ResidualInception):
    """Inception-ResNet-A: act(x + s W_up [1x1 | 1x1->3x3 | 1x1->3x3->3x3]). Notes: 002 §2.2.2.

    Defaults are Inception-ResNet-v2's (320 channels at 35x35, branches 32 | 32-32 | 32-48-64, s = 0.17):
    123,168 parameters.
    """

    def __init__(self, chans: int = 320, b0: int = 32, b1: Sequence[int] = (32, 32), b2: Sequence[int] = (32, 48, 64),
                 scale: float = 0.17, activate: bool = True, bn_eps: float = 1e-3, norm_layer="batch",
                 act_layer="relu"):
        super().__init__(chans, scale, activate, bn_eps, norm_layer, act_layer)
        conv = self.make_conv
        if len(b1) != 2 or len(b2) != 3:
            raise ConfigError(f"InceptionResNetA widths: b1=(reduce, 3x3), b2=(reduce, 3x3, 3x3); got b1={b1}, b2={b2}")
        self.branches = nn.ModuleList([
            conv(chans, b0, 1),
            nn.Sequential(conv(chans, b1[0], 1), conv(b1[0], b1[1], 3)),
            nn.Sequential(conv(chans, b2[0], 1), conv(b2[0], b2[1], 3), conv(b2[1], b2[2], 3)),
        ])
        self.up = nn.Conv2d(b0 + b1[-1] + b2[-1], chans, 1)


class InceptionResNetB(_ResidualInception):
    """Inception-ResNet-B: act(x + s W_up [1x1 | 1x1->1x7->7x1]). Notes: 002 §2.2.2.

    Defaults are Inception-ResNet-v2's (1088 channels at 17x17, branches 192 | 128-160-192, s = 0.10):
    1,126,784 parameters. The 1x7 and 7x1 convolutions are padded (0, 3) and (3, 0), so H and W are kept.
    """

    def __init__(self, chans: int = 1088, b0: int = 192, b1: Sequence[int] = (128, 160, 192), scale: float = 0.10,
                 activate: bool = True, bn_eps: float = 1e-3, norm_layer="batch", act_layer="relu"):
        super().__init__(chans, scale, activate, bn_eps, norm_layer, act_layer)
        conv = self.make_conv
        if len(b1) != 3:
            raise ConfigError(f"InceptionResNetB widths: b1=(reduce, 1x7, 7x1); got b1={b1}")
        self.branches = nn.ModuleList([
            conv(chans, b0, 1),
            nn.Sequential(conv(chans, b1[0], 1), conv(b1[0], b1[1], (1, 7)), conv(b1[1], b1[2], (7, 1))),
        ])
        self.up = nn.Conv2d(b0 + b1[-1], chans, 1)


class InceptionResNetTiny(Backbone):
    """A small Inception-ResNet: 3x3 stem -> conv/2 -> A blocks -> conv/2 -> B blocks -> GAP -> dropout -> FC.

    Notes: 002 §2.2.2. `norm_layer` / `act_layer` replace every BN / ReLU (names or classes, `dlkit.nn.norm`,
    `dlkit.nn.activations`). Branch widths are v2's ratios of the block width (A: C/4 | C/4-C/4 | C/4-3C/8-C/2;
    B: C/4 | C/4-5C/16-3C/8); for 28x28 / 32x32 images (28 -> 14 -> 7).

    Backbone contract: stages stem (stride 2), stage_a (stride 2) and stage_b (after the strided `reduce`
    convolution, stride 4); head: average pool -> dropout -> classifier `head.3`.
    """

    classifier_name = "head.3"
    head_modules = ("head",)

    def __init__(self, num_classes: int = 10, in_chans: int = 1, stem_chans: int = 16, a_chans: int = 32,
                 b_chans: int = 64, num_a: int = 2, num_b: int = 2, dropout: float = 0.2, norm_layer="batch",
                 act_layer="relu"):
        super().__init__()
        if min(num_classes, in_chans, stem_chans, a_chans, b_chans) < 1 or min(num_a, num_b) < 0:
            raise ConfigError("InceptionResNetTiny widths must be positive and block counts >= 0; got "
                              f"{dict(stem_chans=stem_chans, a_chans=a_chans, b_chans=b_chans, num_a=num_a)}")
        self.in_chans = in_chans
        self.default_input_shape = (in_chans, 28, 28)
        a, b = a_chans, b_chans
        layers = {"norm_layer": norm_layer, "act_layer": act_layer}
        self.stem = nn.Sequential(_conv(in_chans, stem_chans, 3, **layers), _conv(stem_chans, a, 3, stride=2, **layers))
        self.stage_a = nn.Sequential(*[InceptionResNetA(a, a // 4, (a // 4, a // 4), (a // 4, 3 * a // 8, a // 2),
                                                        **layers) for _ in range(num_a)])
        self.reduce = _conv(a, b, 3, stride=2, **layers)
        self.stage_b = nn.Sequential(*[InceptionResNetB(b, b // 4, (b // 4, 5 * b // 16, 3 * b // 8), **layers)
                                       for _ in range(num_b)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(b, num_classes))
        self.feature_info = FeatureInfo([FeatureInfo.entry("stem", a, 2), FeatureInfo.entry("stage_a", a, 2),
                                         FeatureInfo.entry("stage_b", b, 4)])

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(f"InceptionResNetTiny expects images [N, {self.in_chans}, H, W] (e.g. "
                              f"{list(self.default_input_shape)}); got {tuple(x.shape)}")

    def feature_path(self):
        return [("stem", self.stem), ("stage_a", self.stage_a), ("reduce", self.reduce), ("stage_b", self.stage_b)]

    def head_path(self):
        return list(self.head)[:-1]


@register_model(input_size=(1, 28, 28))
def inception_resnet_tiny(**kw) -> InceptionResNetTiny:
    """A CPU-sized Inception-ResNet for 28x28 grey images, 10 classes: 2 A blocks (32 ch), 2 B blocks (64 ch).

    55,130 parameters; about 0.31 GFLOPs per 32 images. Notes: 002 §2.2.2."""
    return InceptionResNetTiny(**kw)
