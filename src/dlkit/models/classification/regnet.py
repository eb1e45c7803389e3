"""RegNet and the AnyNet design space (Radosavovic et al., 2020; Notes: 002 §2.8).

A design space is a parametrised population of networks. AnyNet is a stem-body-head network like ResNeXt
with four stages; stage i has depth d_i, width w_i, group width g_i and bottleneck ratio b_i, 16 numbers
in all, and need not double its width. Design spaces are compared through the empirical distribution
function of the errors of n sampled models, F(e) = (1/n) sum_i 1[e_i < e] (`error_edf`), then narrowed.

RegNet is the narrowed space: block widths follow a quantised line. Block j of d has the linear width
u_j = w_0 + w_a j, which is snapped to the nearest power of w_m above w_0: s_j = round(log(u_j / w_0) /
log(w_m)), w_j = w_0 w_m^{s_j}, rounded to a multiple of 8. Consecutive blocks of equal width form a stage.
The six numbers (d, w_0, w_a, w_m, b, g) give the whole network; RegNetY adds squeeze-and-excitation with
1/4 of the block's input width. The blocks are ResNeXt bottlenecks: 1x1 -> 3x3 grouped (stride 2 in each
stage's first block) -> [SE] -> 1x1, with a projection shortcut when the shape changes, and ReLU after the
addition.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError
from ...nn.activations import get_act_layer
from ...nn.conv_bn_act import ConvBNAct
from ...nn.init import init_weights
from ...nn.inverted_residual import make_divisible
from ...nn.squeeze_excitation import SqueezeExcitation
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo, flatten, named_steps

# (depth d, w_0, w_a, w_m, group width g, SE) of the RegNet model zoo (Radosavovic et al., 2020; pycls / torchvision).
REGNET_CONFIGS: dict[str, tuple[int, int, float, float, int, bool]] = {
    "regnet_x_200mf": (13, 24, 36.44, 2.49, 8, False),
    "regnet_x_400mf": (22, 24, 24.48, 2.54, 16, False),
    "regnet_x_800mf": (16, 56, 35.73, 2.28, 16, False),
    "regnet_y_400mf": (16, 48, 27.89, 2.09, 8, True),
    "regnet_y_800mf": (14, 56, 38.84, 2.4, 16, True),
    "regnet_y_1_6gf": (27, 48, 20.71, 2.65, 24, True),
}

# AnyNetX ranges (Radosavovic et al., 2020, §3): d_i <= 16, w_i in {8, 16, ..., 1024}, b_i in {1, 2, 4}, g_i <= 32.
ANYNET_DEPTHS = range(1, 17)
ANYNET_WIDTHS = range(8, 1025, 8)
ANYNET_BOTTLENECK_RATIOS = (1, 2, 4)
ANYNET_GROUP_WIDTHS = range(1, 33)


def error_edf(errors: Sequence[float], e: float | Sequence[float]) -> float | np.ndarray:
    """Error empirical distribution function F(e) = (1/n) sum_i 1[e_i < e] (strict). Notes: 002 §2.8."""
    errs = np.asarray(errors, dtype=float)
    if errs.ndim != 1 or errs.size == 0:
        raise ConfigError(f"error_edf needs a non-empty 1-D list of errors; got shape {errs.shape}")
    values = (errs[None, :] < np.asarray(e, dtype=float).reshape(-1, 1)).mean(axis=1)
    return float(values[0]) if np.ndim(e) == 0 else values


def quantized_linear_widths(depth: int, w0: float, wa: float, wm: float, quant: int = 8) -> list[int]:
    """Per-block widths of RegNet's quantised linear rule. Notes: 002 §2.8.

    u_j = w_0 + w_a j (0 <= j < d), s_j = round(log(u_j / w_0) / log(w_m)), w_j = round(w_0 w_m^{s_j} / q) q.
    """
    if depth < 1 or w0 <= 0 or wa < 0 or wm <= 1 or w0 % quant:
        raise ConfigError(f"RegNet needs depth >= 1, w0 > 0 a multiple of {quant}, wa >= 0, wm > 1; "
                          f"got depth={depth}, w0={w0}, wa={wa}, wm={wm}")
    u = w0 + wa * np.arange(depth)
    s = np.round(np.log(u / w0) / np.log(wm))
    return [int(w) for w in np.round(w0 * np.power(wm, s) / quant) * quant]


def widths_to_stages(block_widths: Sequence[int]) -> tuple[list[int], list[int]]:
    """Group consecutive blocks of equal width into stages: (stage widths, stage depths)."""
    widths: list[int] = []
    depths: list[int] = []
    for w in block_widths:
        if widths and widths[-1] == w:
            depths[-1] += 1
        else:
            widths.append(w)
            depths.append(1)
    return widths, depths


def adjust_widths_groups(widths: Sequence[int], bottleneck_ratios: Sequence[float],
                         group_widths: Sequence[int]) -> tuple[list[int], list[int]]:
    """Make each stage's bottleneck width w/b a multiple of its group width g (g capped at w/b).

    g <- min(g, w/b); w/b <- make_divisible(w/b, g); w <- (w/b) * b, the pycls compatibility rule.
    """
    bottleneck = [int(w / b) for w, b in zip(widths, bottleneck_ratios)]
    groups = [min(g, wb) for g, wb in zip(group_widths, bottleneck)]
    bottleneck = [make_divisible(wb, g) for wb, g in zip(bottleneck, groups)]
    return [int(wb * b) for wb, b in zip(bottleneck, bottleneck_ratios)], groups


def regnet_design(depth: int, w0: float, wa: float, wm: float, group_width: int,
                  bottleneck_ratio: float = 1.0) -> dict[str, list]:
    """The per-stage AnyNet parameters (depths, widths, group_widths, bottleneck_ratios) of a RegNet."""
    widths, depths = widths_to_stages(quantized_linear_widths(depth, w0, wa, wm))
    ratios = [bottleneck_ratio] * len(widths)
    widths, groups = adjust_widths_groups(widths, ratios, [group_width] * len(widths))
    return dict(depths=depths, widths=widths, group_widths=groups, bottleneck_ratios=ratios)


def sample_anynet(rng: random.Random | None = None, num_stages: int = 4) -> dict[str, list]:
    """Sample AnyNetX stage parameters uniformly from the paper's ranges (w_i / b_i a multiple of g_i).

    Notes: 002 §2.8 (the 16-dimensional design space). Each stage's (w, b, g) is redrawn until compatible.
    """
    rng = rng or random.Random()
    out: dict[str, list] = dict(depths=[], widths=[], group_widths=[], bottleneck_ratios=[])
    for _ in range(num_stages):
        while True:
            w, b, g = rng.choice(ANYNET_WIDTHS), rng.choice(ANYNET_BOTTLENECK_RATIOS), rng.choice(ANYNET_GROUP_WIDTHS)
            if w % b == 0 and (w // b) % g == 0:
                break
        out["depths"].append(rng.choice(ANYNET_DEPTHS))
        out["widths"].append(w)
        out["bottleneck_ratios"].append(b)
        out["group_widths"].append(g)
    return out


class RegNetBlock(nn.Module):
    """X/Y block: relu(proj(x) + c(se(b(a(x))))) with a: 1x1, b: 3x3 grouped stride s, c: 1x1 linear. Notes: 002 §2.8.

    Bottleneck width w_b = round(w_out / b), groups w_b / g; `se_ratio` > 0 (RegNetY) adds SE with
    round(se_ratio * w_in) hidden units; the shortcut is a 1x1 conv + BN when stride or width change. `norm_layer`
    and `act_layer` replace BN and ReLU.
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1, group_width: int = 1,
                 bottleneck_ratio: float = 1.0, se_ratio: float = 0.0, act_layer="relu", norm_layer="batch"):
        super().__init__()
        w_b = int(round(out_chans / bottleneck_ratio))
        if w_b % group_width:
            raise ConfigError(f"RegNet block: bottleneck width {w_b} must be a multiple of the group width "
                              f"{group_width}; use adjust_widths_groups")
        self.a = ConvBNAct(in_chans, w_b, 1, act_layer=act_layer, norm_layer=norm_layer)
        self.b = ConvBNAct(w_b, w_b, 3, stride, groups=w_b // group_width, act_layer=act_layer, norm_layer=norm_layer)
        self.se = (SqueezeExcitation(w_b, int(round(se_ratio * in_chans)), act_layer=act_layer)
                   if se_ratio > 0 else None)
        self.c = ConvBNAct(w_b, out_chans, 1, act_layer=None, norm_layer=norm_layer)
        self.shortcut = (ConvBNAct(in_chans, out_chans, 1, stride, act_layer=None, norm_layer=norm_layer)
                         if stride != 1 or in_chans != out_chans else None)
        self.act = get_act_layer(act_layer)()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b(self.a(x))
        if self.se is not None:
            h = self.se(h)
        h = self.c(h)
        return self.act(h + (self.shortcut(x) if self.shortcut is not None else x))


class RegNet(Backbone):
    """AnyNet body with explicit per-stage (depth, width, group width, bottleneck ratio); RegNet via `from_design`.

    Notes: 002 §2.8. Stem 3x3/`stem_stride` conv to `stem_chans` -> 4 (or more) stages, each starting with
    stride 2 -> global average pooling -> dense layer.

    Backbone contract: stages stem and stages.0 ... (strides 2, 4, 8, 16, 32 with the stride-2 stem); head: average
    pool -> classifier `fc`. `norm_layer` (`dlkit.nn.norm`) and `act_layer` (a name or class) replace BN and ReLU.
    """

    classifier_name = "fc"
    head_modules = ("pool", "fc")

    def __init__(self, depths: Sequence[int], widths: Sequence[int], group_widths: Sequence[int],
                 bottleneck_ratios: Sequence[float], se_ratio: float = 0.0, num_classes: int = 1000,
                 in_chans: int = 3, stem_chans: int = 32, stem_stride: int = 2, act_layer="relu",
                 resolution: int = 224, norm_layer="batch"):
        super().__init__()
        n = len(depths)
        if n == 0 or not (len(widths) == len(group_widths) == len(bottleneck_ratios) == n):
            raise ConfigError(f"RegNet needs equally long per-stage lists; got depths {list(depths)}, widths "
                              f"{list(widths)}, group_widths {list(group_widths)}, "
                              f"bottleneck_ratios {list(bottleneck_ratios)}")
        self.in_chans = in_chans
        self.default_input_shape = (in_chans, resolution, resolution)
        self.stage_params = dict(depths=list(depths), widths=list(widths), group_widths=list(group_widths),
                                 bottleneck_ratios=list(bottleneck_ratios))
        self.stem = ConvBNAct(in_chans, stem_chans, 3, stem_stride, act_layer=act_layer, norm_layer=norm_layer)
        chans, stages = stem_chans, []
        for d, w, g, b in zip(depths, widths, group_widths, bottleneck_ratios):
            blocks = [RegNetBlock(chans if i == 0 else w, w, 2 if i == 0 else 1, g, b, se_ratio, act_layer, norm_layer)
                      for i in range(d)]
            stages.append(nn.Sequential(*blocks))
            chans = w
        self.stages = nn.Sequential(*stages)
        self.feature_info = FeatureInfo([FeatureInfo.entry("stem", stem_chans, stem_stride)] + [
            FeatureInfo.entry(f"stages.{i}", w, stem_stride * 2 ** (i + 1)) for i, w in enumerate(widths)])
        self.num_features = chans
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans, num_classes)
        # torchvision's: He (fan-out) convolutions (SE biases keep torch's default), unit norms, N(0, 0.01) dense
        init_weights(self, conv="he_fan_out", conv_bias=False, linear="normal_0.01")

    @classmethod
    def from_design(cls, depth: int, w0: float, wa: float, wm: float, group_width: int,
                    bottleneck_ratio: float = 1.0, se_ratio: float = 0.0, **kw) -> RegNet:
        """Build the RegNet of design parameters (d, w_0, w_a, w_m, g, b) via `regnet_design`."""
        return cls(**regnet_design(depth, w0, wa, wm, group_width, bottleneck_ratio), se_ratio=se_ratio, **kw)

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(f"RegNet expects images [N, {self.in_chans}, H, W]; got {tuple(x.shape)}")

    def feature_path(self):
        """stem, stages.0 ...: the last map is [N, num_features, H/32, W/32]."""
        return [("stem", self.stem), *named_steps("stages", self.stages)]

    def head_path(self):
        return [self.pool, flatten]


def _zoo(name: str, kw: dict) -> RegNet:
    depth, w0, wa, wm, g, se = REGNET_CONFIGS[name]
    return RegNet.from_design(depth, w0, wa, wm, g, se_ratio=0.25 if se else 0.0, **kw)


@register_model(input_size=(3, 224, 224))
def regnet_x_200mf(**kw) -> RegNet:
    """RegNetX-200MF (d 13, w0 24, wa 36.44, wm 2.49, g 8): stages 24, 56, 152, 368 of depths 1, 1, 4, 7.

    Notes: 002 §2.8.
    """
    return _zoo("regnet_x_200mf", kw)


@register_model(input_size=(3, 224, 224), num_params=5_495_976, params_source="torchvision")
def regnet_x_400mf(**kw) -> RegNet:
    """RegNetX-400MF (d 22, w0 24, wa 24.48, wm 2.54, g 16): 5,495,976 parameters (torchvision). Notes: 002 §2.8."""
    return _zoo("regnet_x_400mf", kw)


@register_model(input_size=(3, 224, 224), num_params=7_259_656, params_source="torchvision")
def regnet_x_800mf(**kw) -> RegNet:
    """RegNetX-800MF (d 16, w0 56, wa 35.73, wm 2.28, g 16): 7,259,656 parameters (torchvision). Notes: 002 §2.8."""
    return _zoo("regnet_x_800mf", kw)


@register_model(input_size=(3, 224, 224), num_params=4_344_144, params_source="torchvision")
def regnet_y_400mf(**kw) -> RegNet:
    """RegNetY-400MF (d 16, w0 48, wa 27.89, wm 2.09, g 8, SE): 4,344,144 parameters (torchvision). Notes: 002 §2.8."""
    return _zoo("regnet_y_400mf", kw)


@register_model(input_size=(3, 224, 224), num_params=6_432_512, params_source="torchvision")
def regnet_y_800mf(**kw) -> RegNet:
    """RegNetY-800MF (d 14, w0 56, wa 38.84, wm 2.4, g 16, SE): 6,432,512 parameters (torchvision). Notes: 002 §2.8."""
    return _zoo("regnet_y_800mf", kw)


@register_model(input_size=(3, 224, 224), num_params=11_202_430, params_source="torchvision")
def regnet_y_1_6gf(**kw) -> RegNet:
    """RegNetY-1.6GF (d 27, w0 48, wa 20.71, wm 2.65, g 24, SE): 11,202,430 parameters (torchvision).

    Notes: 002 §2.8.
    """
    return _zoo("regnet_y_1_6gf", kw)


@register_model(input_size=(1, 32, 32))
def regnet_tiny_fashion(**kw) -> RegNet:
    """A tiny RegNetY for 32x32 grey images, 10 classes (d 6, w0 16, wa 16, wm 2, g 8; stem 16, stride 1).

    Notes: 002 §2.8.
    """
    cfg = dict(num_classes=10, in_chans=1, stem_chans=16, stem_stride=1, resolution=32)
    return RegNet.from_design(6, 16, 16.0, 2.0, 8, se_ratio=0.25, **{**cfg, **kw})

