"""MobileNets: depth-wise separable networks for mobile devices (Notes: 002 §2.5, 003 §3.3.3).

MobileNet (v1) replaces each standard k x k convolution by a depth-wise k x k convolution (one filter per
channel) followed by a point-wise 1x1 convolution: k^2 C_in + C_in C_out weights instead of k^2 C_in C_out.
MobileNetV2 stacks inverted residual blocks (`dlkit.nn.inverted_residual`) exactly as in the notes'
Table 2.1: each row (t, c, n, s) is n blocks with expansion t and c output channels, the stride s on the
first block of the row only. Channels grow slowly, the stem is light, and the last features are expanded
to 1280 channels before global average pooling and the classifier (the table's final 1x1 conv to k classes
is a dense layer on the pooled vector). The width multiplier scales every channel count (rounded to a
multiple of 8); the 1280 head is never scaled below 1280.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.conv_bn_act import ConvBNAct
from ...nn.init import init_weights
from ...nn.inverted_residual import InvertedResidual, make_divisible
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo, flatten, named_steps

# Notes 002 Table 2.1, the bottleneck rows: (expansion t, output channels c, repeats n, stride s of the first repeat).
MOBILENET_V2_TABLE: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# MobileNet v1 (Howard et al., 2017, Table 1): (point-wise output channels, stride of the depth-wise conv).
MOBILENET_V1_TABLE: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


def _check_input(x: torch.Tensor, in_chans: int, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ConfigError(f"{name} expects images [N, {in_chans}, H, W]; got {tuple(x.shape)}")


def _init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convolutions, unit BN, N(0, 0.01) classifier: the MobileNet reference init."""
    init_weights(model, conv="he_fan_out", linear="normal_0.01")


class MobileNetV2(Backbone):
    """MobileNetV2 built from the rows (t, c, n, s) of the notes' Table 2.1. Notes: 002 §2.5.

    Every channel count c becomes make_divisible(c * width_mult, 8); the head has
    make_divisible(last_chans * max(1, width_mult)) channels. `stem_stride=1` keeps small (32x32) images from
    shrinking to 1x1. 224x224 input: 112^2x32 -> 112^2x16 -> 56^2x24 -> 28^2x32 -> 14^2x64 -> 14^2x96 -> 7^2x160
    -> 7^2x320 -> 7^2x1280 -> pool -> k.

    Backbone contract: stages stem, stages.0 ... stages.6 (one per table row) and the 1x1 head (stride 32 with the
    stride-2 stem); head: average pool -> dropout -> classifier `classifier.1`. `norm_layer` (`dlkit.nn.norm`) and
    `act_layer` (a name or class) replace BN and ReLU6 everywhere.
    """

    classifier_name = "classifier.1"
    head_modules = ("pool", "classifier")

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 table: tuple[tuple[int, int, int, int], ...] = MOBILENET_V2_TABLE, stem_chans: int = 32,
                 last_chans: int = 1280, stem_stride: int = 2, dropout: float = 0.2, act_layer="relu6",
                 round_nearest: int = 8, norm_layer="batch"):
        super().__init__()
        if width_mult <= 0:
            raise ConfigError(f"MobileNetV2 width_mult must be > 0; got {width_mult}")
        if not table or any(len(row) != 4 for row in table):
            raise ConfigError(f"MobileNetV2 table must be non-empty rows (t, c, n, s); got {table!r}")
        self.in_chans = in_chans
        self.default_input_shape = (in_chans, 224, 224) if stem_stride == 2 else (in_chans, 32, 32)
        chans = make_divisible(stem_chans * width_mult, round_nearest)
        layer = dict(act_layer=act_layer, norm_layer=norm_layer)
        self.stem = ConvBNAct(in_chans, chans, 3, stem_stride, **layer)
        stages, stride = [], stem_stride
        info = [FeatureInfo.entry("stem", chans, stride)]
        for t, c, n, s in table:
            stride *= s
            out = make_divisible(c * width_mult, round_nearest)
            info.append(FeatureInfo.entry(f"stages.{len(stages)}", out, stride))
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(chans, out, s if i == 0 else 1, t, **layer))
                chans = out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = make_divisible(last_chans * max(1.0, width_mult), round_nearest)
        self.head = ConvBNAct(chans, self.num_features, 1, **layer)
        self.feature_info = FeatureInfo([*info, FeatureInfo.entry("head", self.num_features, stride)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes))
        _init_weights(self)

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W]."""
        _check_input(x, self.in_chans, "MobileNetV2")

    def feature_path(self):
        """stem, stages.0 ..., head: the last map is [N, num_features, H/32, W/32]."""
        return [("stem", self.stem), *named_steps("stages", self.stages), ("head", self.head)]

    def head_path(self):
        return [self.pool, flatten, self.classifier[0]]


class MobileNetV1(Backbone):
    """MobileNet v1: a 3x3 stem, then 13 depth-wise separable convolutions. Notes: 003 §3.3.3.

    Each separable layer is depth-wise 3x3 + BN + ReLU6 then point-wise 1x1 + BN + ReLU6 (the Keras layout),
    k^2 C_in + C_in C_out weights. Channels are int(c * alpha). The classifier is a 1x1 conv (with bias) on the
    pooled features, as in Keras.

    Backbone contract: stages features.0 (the stem) and the last separable layer at every stride (features.1, 3, 5,
    11, 13 at strides 2, 4, 8, 16, 32); head: average pool -> dropout -> 1x1 convolution `classifier`. `norm_layer`
    and `act_layer` replace BN and ReLU6.
    """

    classifier_name = "classifier"
    head_modules = ("pool", "dropout", "classifier")

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, alpha: float = 1.0,
                 table: tuple[tuple[int, int], ...] = MOBILENET_V1_TABLE, dropout: float = 1e-3,
                 act_layer="relu6", bn_eps: float = 1e-3, norm_layer="batch"):
        super().__init__()
        if alpha <= 0:
            raise ConfigError(f"MobileNetV1 alpha must be > 0; got {alpha}")
        self.in_chans = in_chans
        self.default_input_shape = (in_chans, 224, 224)
        chans = int(32 * alpha)
        layer = dict(act_layer=act_layer, norm_layer=norm_layer, bn_eps=bn_eps)
        layers: list[nn.Module] = [ConvBNAct(in_chans, chans, 3, 2, **layer)]
        info, stride = [FeatureInfo.entry("features.0", chans, 2)], 2
        for c, s in table:
            out = int(c * alpha)
            if s > 1 and len(layers) > 1:
                info.append(FeatureInfo.entry(f"features.{len(layers) - 1}", chans, stride))
            stride *= s
            layers.append(nn.Sequential(
                ConvBNAct(chans, chans, 3, s, groups=chans, **layer),
                ConvBNAct(chans, out, 1, **layer),
            ))
            chans = out
        self.features = nn.Sequential(*layers)
        self.feature_info = FeatureInfo([*info, FeatureInfo.entry(f"features.{len(layers) - 1}", chans, stride)])
        self.num_features = chans
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(chans, num_classes, 1)
        _init_weights(self)

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W]."""
        _check_input(x, self.in_chans, "MobileNetV1")

    def feature_path(self):
        return named_steps("features", self.features)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Average pool -> dropout -> 1x1 convolution on the [N, C, 1, 1] map, flattened; pre_logits: [N, C]."""
        x = self.dropout(self.pool(x))
        return (x if pre_logits else self.classifier(x)).flatten(1)


@register_model(input_size=(3, 224, 224), num_params=3_504_872, params_source="torchvision")
def mobilenet_v2(**kw) -> MobileNetV2:
    """MobileNetV2 1.0 (Table 2.1), 1000 classes: 3,504,872 parameters (torchvision mobilenet_v2). Notes: 002 §2.5."""
    return MobileNetV2(**kw)


@register_model(input_size=(3, 224, 224), num_params=4_231_976, params_source="Keras MobileNet (alpha 1) trainable")
def mobilenet_v1(**kw) -> MobileNetV1:
    """MobileNet v1 alpha = 1, 1000 classes: 4,231,976 parameters + 21,888 BN statistics = Keras' 4,253,864.

    Notes: 002 §2.5.
    """
    return MobileNetV1(**kw)


@register_model(input_size=(1, 32, 32))
def mobilenet_v2_tiny_fashion(**kw) -> MobileNetV2:
    """MobileNetV2 x0.35 for 32x32 grey images, 10 classes: stem stride 1, 512-channel head (< 0.5M parameters).

    Notes: 002 §2.5.
    """
    cfg = dict(num_classes=10, in_chans=1, width_mult=0.35, stem_stride=1, last_chans=512, dropout=0.1)
    return MobileNetV2(**{**cfg, **kw})
