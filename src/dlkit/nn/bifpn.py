"""Weighted bi-directional feature pyramid (BiFPN, Tan, Pang & Le 2020, EfficientDet; Notes: 002 §4.A).

PANet adds a bottom-up path to the FPN's top-down one; BiFPN, a block stacked several times, changes it as follows:
nodes with a single input are removed (the top level has no top-down node, the bottom level's top-down node is
already its output), the middle levels get an extra edge from their input to their output, the convolutions are
depth-wise separable, and every node weighs its inputs with learned, non-negative weights. For levels P_3..P_7:

    P_i^td  = conv( (w'_1 P_i^in + w'_2 up(P_{i+1}^td)) / (w'_1 + w'_2 + eps) )                 i = 6 .. 4
    P_3^out = conv( (w_1 P_3^in + w_2 up(P_4^td)) / (w_1 + w_2 + eps) )
    P_i^out = conv( (w_1 P_i^in + w_2 P_i^td + w_3 down(P_{i-1}^out)) / (w_1 + w_2 + w_3 + eps) )  i = 4 .. 6
    P_7^out = conv( (w_1 P_7^in + w_2 down(P_6^out)) / (w_1 + w_2 + eps) )

"Fast normalised fusion": O = sum_i w_i / (eps + sum_j w_j) I_i with w_i = ReLU(learned), eps = 1e-4, for every
node. The notes' P^td formula has no normalising denominator; the paper's (implemented here) has one, as P^out.
Each node is, in the official implementation's order, fusion -> swish -> depth-wise separable 3x3 convolution
(with a bias) -> batch norm. `up` is nearest-neighbour upsampling x2, `down` a 3x3 stride-2 max pool with
TensorFlow's 'SAME' padding. The first block of EfficientDet also adapts the backbone's widths: each node that reads
a backbone map of another width has its own 1x1 convolution + BN (P_4^in and P_5^in feed two nodes each and get two),
and `BiFPN` builds the extra levels P_6, P_7 from the last backbone map (1x1 conv + BN when the width differs, then
the stride-2 max pools), as the official EfficientDet does. `PANet` (FPN + the bottom-up path, the notes' first
remark of §4.A) is the design BiFPN starts from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .activations import get_act_layer
from .conv_arithmetic import same_padding
from .fpn import FeaturePyramidNetwork


def separable_conv(in_chans: int, out_chans: int, kernel_size: int = 3, bias: bool = True) -> nn.Sequential:
    """Depth-wise k x k convolution (no bias) then a 1 x 1 point-wise one with `bias`: Keras' SeparableConv2D, whose
    single bias the official EfficientDet keeps before its batch norms (Notes: 002 §2.5; `dlkit.nn.conv`'s
    DepthwiseSeparableConv2d is the from-definition version, with a bias on both parts or none)."""
    return nn.Sequential(nn.Conv2d(in_chans, in_chans, kernel_size, padding=kernel_size // 2, groups=in_chans,
                                   bias=False),
                         nn.Conv2d(in_chans, out_chans, 1, bias=bias))


def same_max_pool(x: Tensor, kernel_size: int = 3, stride: int = 2) -> Tensor:
    """Max pooling with TensorFlow's 'SAME' padding (output ceil(I / S), the odd padded pixel after): the official
    EfficientDet's downsampling (PyTorch's padding=1 would centre the 3x3 windows one pixel earlier)."""
    (top, bottom), (left, right) = (same_padding(n, kernel_size, stride) for n in x.shape[-2:])
    return F.max_pool2d(F.pad(x, (left, right, top, bottom), value=-math.inf), kernel_size, stride)


def channel_adapter(in_chans: int, out_chans: int, bn_eps: float = 1e-3, bn_momentum: float = 0.01) -> nn.Module:
    """1x1 convolution (with the official's redundant bias) + BN when the widths differ, else the identity."""
    if in_chans == out_chans:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_chans, out_chans, 1),
                         nn.BatchNorm2d(out_chans, eps=bn_eps, momentum=bn_momentum))


class FastNormalizedFusion(nn.Module):
    """O = sum_i w_i / (eps + sum_j w_j) I_i, w_i = ReLU(learned weight, initially 1). Notes: 002 §4.A.

    `weighted=False` is the plain sum (no parameters), which the official EfficientDet-D6/D7 use "for stability".
    """

    def __init__(self, num_inputs: int, eps: float = 1e-4, weighted: bool = True):
        super().__init__()
        if num_inputs < 2:
            raise ConfigError(f"a fusion node merges 2 or more inputs (BiFPN removes single-input nodes); got "
                              f"num_inputs={num_inputs}")
        self.num_inputs, self.eps = num_inputs, eps
        self.weight = nn.Parameter(torch.ones(num_inputs)) if weighted else None

    def normalized_weights(self) -> Tensor | None:
        """w_i / (eps + sum_j w_j) with w = ReLU(weight): non-negative, summing to just under 1 (None unweighted)."""
        if self.weight is None:
            return None
        w = F.relu(self.weight)
        return w / (w.sum() + self.eps)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        if len(inputs) != self.num_inputs:
            raise ConfigError(f"this fusion node takes {self.num_inputs} inputs; got {len(inputs)}")
        shapes = {tuple(x.shape) for x in inputs}
        if len(shapes) != 1:
            raise ConfigError(f"fused inputs must have one shape (resample them first); got {sorted(shapes)}")
        w = self.normalized_weights()
        if w is None:
            return torch.stack(list(inputs)).sum(0)
        return sum(wi * x for wi, x in zip(w, inputs))


class FusionNode(nn.Module):
    """One BiFPN node: fast normalised fusion -> swish -> separable 3x3 conv (bias) -> BN (the official order)."""

    def __init__(self, num_inputs: int, channels: int, weighted: bool = True, eps: float = 1e-4,
                 act_layer="silu", bn_eps: float = 1e-3, bn_momentum: float = 0.01):
        super().__init__()
        self.fusion = FastNormalizedFusion(num_inputs, eps, weighted)
        self.act = get_act_layer(act_layer)()
        self.conv = separable_conv(channels, channels)
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.bn(self.conv(self.act(self.fusion(inputs))))


class BiFPNLayer(nn.Module):
    """One BiFPN block over L >= 2 levels (shallowest first, each half the size of the one before): a top-down pass
    (nodes at levels L-2 .. 0; the level-0 one is also its output) then a bottom-up pass (levels 1 .. L-1, the
    middle ones with the extra edge from their input). Maps whose width `in_channels[i]` is not `channels` are
    adapted by a 1x1 conv + BN per node that reads them (the first block of EfficientDet). Notes: 002 §4.A.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, weighted: bool = True, eps: float = 1e-4,
                 act_layer="silu", bn_eps: float = 1e-3, bn_momentum: float = 0.01):
        super().__init__()
        levels = len(in_channels)
        if levels < 2 or channels < 1 or min(in_channels) < 1:
            raise ConfigError(f"a BiFPN layer fuses 2 or more levels of positive widths into a positive width; got "
                              f"in_channels={list(in_channels)}, channels={channels}")
        self.in_channels, self.channels = tuple(in_channels), channels
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        node = dict(weighted=weighted, eps=eps, act_layer=act_layer, **bn)
        # td_inputs[i] adapts P_i^in for the top-down node of level i (i = L-1: the top map that is upsampled);
        # out_inputs[i - 1] adapts P_i^in for the output node of level i >= 1 (its extra same-level edge)
        self.td_inputs = nn.ModuleList(channel_adapter(c, channels, **bn) for c in in_channels)
        self.out_inputs = nn.ModuleList(channel_adapter(c, channels, **bn) for c in in_channels[1:])
        self.td_nodes = nn.ModuleList(FusionNode(2, channels, **node) for _ in range(levels - 1))
        self.out_nodes = nn.ModuleList(FusionNode(3 if i < levels - 1 else 2, channels, **node)
                                       for i in range(1, levels))

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """P_i^out [N, channels, H_i, W_i] of every level, for P_i^in [N, in_channels[i], H_i, W_i]."""
        maps = list(maps)
        widths = [m.shape[1] if m.dim() == 4 else None for m in maps]
        if widths != list(self.in_channels):
            raise ConfigError(f"this BiFPN layer takes {len(self.in_channels)} maps [N, C, H, W] with C = "
                              f"{list(self.in_channels)}; got shapes {[tuple(m.shape) for m in maps]}")
        levels = len(maps)
        td = self.td_inputs[-1](maps[-1])
        tds = [td]
        for i in range(levels - 2, -1, -1):
            up = F.interpolate(td, size=maps[i].shape[-2:], mode="nearest")
            td = self.td_nodes[i]([self.td_inputs[i](maps[i]), up])
            tds.insert(0, td)
        outs = [tds[0]]
        for i in range(1, levels):
            inputs = [self.out_inputs[i - 1](maps[i])]
            if i < levels - 1:
                inputs.append(tds[i])
            inputs.append(same_max_pool(outs[-1]))
            outs.append(self.out_nodes[i - 1](inputs))
        return outs


class BiFPN(nn.Module):
    """EfficientDet's feature network: extra levels from the backbone's last map, then `num_layers` BiFPN blocks of
    width `channels` over `num_levels` levels (P3..P7 for three backbone maps C3..C5 and num_levels=5).

    Notes: 002 §4.A. Level k beyond the backbone's maps is a 3x3 stride-2 'SAME' max pool of the level before,
    after a 1x1 conv + BN when that one is a backbone map of another width. The first block adapts the backbone's
    widths (`BiFPNLayer`); `forward(maps)` returns the `num_levels` maps, shallowest first. `weighted=False`: plain
    sums (official D6/D7).
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 64, num_layers: int = 3, num_levels: int = 5,
                 weighted: bool = True, eps: float = 1e-4, act_layer="silu", bn_eps: float = 1e-3,
                 bn_momentum: float = 0.01):
        super().__init__()
        if not in_channels or num_levels < max(2, len(in_channels)) or num_layers < 1:
            raise ConfigError(f"BiFPN needs backbone maps, num_levels >= max(2, their count) and num_layers >= 1; "
                              f"got in_channels={list(in_channels)}, num_levels={num_levels}, "
                              f"num_layers={num_layers}")
        self.in_channels, self.channels, self.num_levels = tuple(in_channels), channels, num_levels
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        extra = num_levels - len(in_channels)
        self.extra_adapters = nn.ModuleList(
            channel_adapter(in_channels[-1] if k == 0 else channels, channels, **bn) for k in range(extra))
        first = [*in_channels, *([channels] * extra)]
        self.layers = nn.ModuleList(
            BiFPNLayer(first if k == 0 else [channels] * num_levels, channels, weighted, eps, act_layer, **bn)
            for k in range(num_layers))
        for m in self.modules():  # Keras' defaults, as the official: Glorot-uniform kernels, zero biases
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        maps = list(maps)
        if [m.shape[1] if m.dim() == 4 else None for m in maps] != list(self.in_channels):
            raise ConfigError(f"this BiFPN was built for {len(self.in_channels)} backbone maps [N, C, H, W] with C = "
                              f"{list(self.in_channels)}; got shapes {[tuple(m.shape) for m in maps]}")
        for adapter in self.extra_adapters:
            maps.append(same_max_pool(adapter(maps[-1])))
        for layer in self.layers:
            maps = layer(maps)
        return maps


class PANet(nn.Module):
    """PANet's feature network (Liu et al. 2018; Notes: 002 §4.A): an FPN (`dlkit.nn.fpn`) then a bottom-up path
    N_first = P_first, N_{i+1} = ReLU(conv3x3(ReLU(conv3x3 stride 2 (N_i)) + P_{i+1})), which brings the
    high-resolution maps' localisation to the coarse levels in a few layers. Returns N_first ... N_last."""

    def __init__(self, in_channels: Sequence[int], channels: int = 256):
        super().__init__()
        self.fpn = FeaturePyramidNetwork(in_channels, channels)
        levels = len(in_channels)
        self.down = nn.ModuleList(nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(levels - 1))
        self.smooth = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(levels - 1))

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        p = self.fpn(maps)
        outs = [p[0]]
        for down, smooth, p_next in zip(self.down, self.smooth, p[1:]):
            outs.append(F.relu(smooth(F.relu(down(outs[-1])) + p_next)))
        return outs
