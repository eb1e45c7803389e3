"""Darknet-53, the backbone of YOLOv3 (Redmon & Farhadi, 2018; Notes: 002 §4.3.4, 000 §3.12.1).

A fully convolutional network of 53 convolutions (52 plus the classifier): a 3x3 stem, then five stages, each a
3x3 stride-2 convolution that doubles the width followed by residual blocks x + conv3x3(conv1x1(x)), the 1x1
halving the width ("bottleneck residual blocks", 002 §4.3.4). Every convolution is conv -> batch norm -> leaky
ReLU (slope 0.1); the residual sum has no activation after it. The ImageNet classifier pools globally and applies
a dense layer (darknet's 1x1 convolution with bias, the same parameters). Stage depths are 1, 2, 8, 8, 4 and
widths 64, 128, 256, 512, 1024, so the stages end at strides 2, 4, 8, 16, 32; YOLOv3 reads the last three.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.activations import LeakyReLU
from ...nn.conv_bn_act import ConvBNAct
from ...nn.init import init_weights
from ...nn.residual import Residual
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo, flatten, named_steps

DARKNET_LEAKY_SLOPE = 0.1
DARKNET53_DEPTHS = (1, 2, 8, 8, 4)
DARKNET53_WIDTHS = (64, 128, 256, 512, 1024)

#: Darknet's activation, leaky ReLU with slope 0.1 (Redmon & Farhadi, 2018).
darknet_leaky = functools.partial(LeakyReLU, negative_slope=DARKNET_LEAKY_SLOPE)


def darknet_residual(chans: int, act_layer=darknet_leaky, norm_layer="batch") -> Residual:
    """Darknet's residual block x + conv3x3(chans/2 -> chans)(conv1x1(chans -> chans/2)(x)). Notes: 002 §4.3.4."""
    if chans % 2:
        raise ConfigError(f"a Darknet residual block halves its width in the 1x1 convolution; got an odd width {chans}")
    return Residual(nn.Sequential(ConvBNAct(chans, chans // 2, 1, act_layer=act_layer, norm_layer=norm_layer),
                                  ConvBNAct(chans // 2, chans, 3, act_layer=act_layer, norm_layer=norm_layer)))


class DarkNet(Backbone):
    """Darknet: 3x3 stem, stages of (3x3 stride-2 conv, `depths[i]` residual blocks), pooling, dense classifier.

    Notes: 002 §4.3.4. Backbone contract: stages stages.0 ... stages.4 at strides 2, 4, 8, 16, 32 (the stem, at
    stride 1, is no stage); head: average pool -> classifier `fc`. `act_layer` and `norm_layer` replace leaky ReLU
    0.1 and batch norm.
    """

    classifier_name = "fc"
    head_modules = ("pool", "fc")

    def __init__(self, depths: Sequence[int] = DARKNET53_DEPTHS, widths: Sequence[int] = DARKNET53_WIDTHS,
                 stem_chans: int = 32, num_classes: int = 1000, in_chans: int = 3, resolution: int = 256,
                 act_layer=darknet_leaky, norm_layer="batch"):
        super().__init__()
        if not depths or len(depths) != len(widths) or any(d < 0 for d in depths) or any(w < 2 for w in widths):
            raise ConfigError(f"DarkNet needs one depth >= 0 and one width >= 2 per stage; got depths {list(depths)}, "
                              f"widths {list(widths)}")
        self.in_chans, self.num_classes = in_chans, num_classes
        self.default_input_shape = (in_chans, resolution, resolution)
        self.stem = ConvBNAct(in_chans, stem_chans, 3, act_layer=act_layer, norm_layer=norm_layer)
        stages, chans = [], stem_chans
        for d, w in zip(depths, widths):
            stages.append(nn.Sequential(ConvBNAct(chans, w, 3, 2, act_layer=act_layer, norm_layer=norm_layer),
                                        *[darknet_residual(w, act_layer, norm_layer) for _ in range(d)]))
            chans = w
        self.stages = nn.Sequential(*stages)
        self.feature_info = FeatureInfo(FeatureInfo.entry(f"stages.{i}", w, 2 ** (i + 1)) for i, w in enumerate(widths))
        self.num_features = chans
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans, num_classes) if num_classes else nn.Identity()
        init_weights(self, conv="he_fan_in", linear="normal_0.01")

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(f"DarkNet expects images [N, {self.in_chans}, H, W]; got {tuple(x.shape)}")

    def feature_path(self):
        """stem, stages.0 ... stages.4: the last map is [N, num_features, H/32, W/32]."""
        return [("stem", self.stem), *named_steps("stages", self.stages)]

    def head_path(self):
        return [self.pool, flatten]


@register_model(input_size=(3, 256, 256), num_params=41_609_928,
                params_source="derived by hand from darknet53.cfg (Redmon & Farhadi 2018, Table 1)")
def darknet53(**kw) -> DarkNet:
    """Darknet-53 (stages 1, 2, 8, 8, 4 blocks; widths 64..1024): 41,609,928 parameters. Notes: 002 §4.3.4.

    40,584,928 in the 52 convolutions and their batch norms, 1,025,000 in the 1000-way classifier.
    """
    return DarkNet(**kw)


@register_model(input_size=(3, 64, 64))
def darknet_small(**kw) -> DarkNet:
    """A small Darknet for CPU recipes: stages of 1, 1, 2, 2, 1 blocks, widths 16..256, stem 16, 10 classes.

    Notes: 002 §4.3.4.
    """
    cfg = dict(depths=(1, 1, 2, 2, 1), widths=(16, 32, 64, 128, 256), stem_chans=16, num_classes=10, resolution=64)
    return DarkNet(**{**cfg, **kw})
