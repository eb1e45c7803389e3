"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012; Notes: 003 §3.3.3, 004 CNN examples).

Five convolutions and three dense layers. Against overfitting it introduced ReLU (which also trains faster than
tanh), dropout 0.5 in the dense layers, weight decay, normalisation layers (LRN, "not used anymore") and max-pooling.

This is the single-GPU form torchvision builds ("One weird trick", Krizhevsky 2014): convolutions with
64-192-384-256-256 filters (the 2012 paper: 96-256-384-384-256 split over two GPUs), no LRN, and an adaptive
6x6 average pool before the classifier so that inputs other than 224x224 work. Parameters (1000 classes):
conv 2,469,696 + FC 58,631,144 = 61,100,840, torchvision's published count.

`alexnet_original` has the 2012 paper's widths 96-256-384-384-256 on 227x227 inputs (conv1 unpadded) in one tower,
without LRN: conv 3,747,200 + FC 58,631,144 = 62,378,344 parameters; with `groups=2` (conv2, conv4 and conv5 read
half of their inputs, the paper's split over two GPUs) conv 2,334,080, 60,965,224 in all (the Caffe reference
count). It is the network of the notes' Table 4.1 FLOPs (Notes: 002 §4.3.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.activations import RELU_INPLACE, get_act_layer, inplace_
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo, flatten, named_steps


class AlexNet(Backbone):
    """AlexNet: conv11/4(64) pool conv5(192) pool conv3(384) conv3(256) conv3(256) pool -> 6x6 -> FC 4096-4096-K.

    Notes: 003 §3.3.3. ReLU after every layer but the last (`act_layer`: another activation, a name or class of
    `dlkit.nn.activations`), max-pool 3x3/2, dropout `dropout` (0.5) before the two hidden dense layers.

    Backbone contract: stages features.2 (64 maps, stride 8), features.5 (192, 16) and features.12 (256, 32), each
    after its max-pool, and conv5's map features.11 (256, stride 16) before pool5, the map Fast R-CNN pools its
    regions from; head: 6x6 average pool -> FC 4096 -> FC 4096 -> classifier `classifier.6`. `widths` are the five
    convolutions' filters, `stem_padding` conv1's padding (2; 0 for the paper's 227x227 input), `groups` those of
    conv2, conv4 and conv5 (2: the paper's two-GPU split).
    """

    classifier_name = "classifier.6"
    head_modules = ("avgpool", "classifier")

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5, act_layer=RELU_INPLACE,
                 widths: Sequence[int] = (64, 192, 384, 256, 256), stem_padding: int = 2, groups: int = 1):
        super().__init__()
        if num_classes < 1 or in_chans < 1:
            raise ConfigError(f"AlexNet needs num_classes >= 1 and in_chans >= 1; got {num_classes}, {in_chans}")
        w = tuple(widths)
        if len(w) != 5 or groups < 1 or any(c < 1 or c % groups for c in w):
            raise ConfigError(f"AlexNet needs five conv widths, each divisible by groups={groups}; got {list(w)}")
        self.in_chans = in_chans
        self.default_input_shape = (in_chans, 224, 224)
        make_act = get_act_layer(act_layer)

        def act() -> nn.Module:
            return inplace_(make_act())

        self.features = nn.Sequential(
            nn.Conv2d(in_chans, w[0], 11, stride=4, padding=stem_padding), act(), nn.MaxPool2d(3, 2),
            nn.Conv2d(w[0], w[1], 5, padding=2, groups=groups), act(), nn.MaxPool2d(3, 2),
            nn.Conv2d(w[1], w[2], 3, padding=1), act(),
            nn.Conv2d(w[2], w[3], 3, padding=1, groups=groups), act(),
            nn.Conv2d(w[3], w[4], 3, padding=1, groups=groups), act(), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(w[4] * 6 * 6, 4096), act(),
            nn.Dropout(dropout), nn.Linear(4096, 4096), act(),
            nn.Linear(4096, num_classes),
        )

        self.feature_info = FeatureInfo([FeatureInfo.entry("features.2", w[0], 8),
                                         FeatureInfo.entry("features.5", w[1], 16),
                                         FeatureInfo.entry("features.11", w[4], 16),
                                         FeatureInfo.entry("features.12", w[4], 32)])

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W], H, W >= 63."""
        if x.dim() != 4 or x.shape[1] != self.in_chans or min(x.shape[-2:]) < 63:
            raise ConfigError(f"AlexNet expects images [N, {self.in_chans}, H, W] with H, W >= 63 (224 for "
                              f"ImageNet); got {tuple(x.shape)}")

    def feature_path(self):
        return named_steps("features", self.features)

    def head_path(self):
        return [self.avgpool, flatten, *list(self.classifier)[:-1]]


@register_model(input_size=(3, 224, 224), num_params=61_100_840, params_source="torchvision")
def alexnet(**kw) -> AlexNet:
    """AlexNet (torchvision form, 64-192-384-256-256): 61,100,840 parameters. Notes: 003 §3.3.3."""
    return AlexNet(**kw)


@register_model(input_size=(3, 227, 227), num_params=62_378_344,
                params_source="hand-derived: conv 96(11*11*3+1) + 256(5*5*96+1) + 384(3*3*256+1) + 384(3*3*384+1) + "
                              "256(3*3*384+1) = 3,747,200; FC 58,631,144 as torchvision's")
def alexnet_original(**kw) -> AlexNet:
    """AlexNet with the 2012 paper's widths 96-256-384-384-256 on 227x227, one tower (ungrouped), no LRN:
    62,378,344 parameters (`groups=2`: the paper's two-GPU form, 60,965,224). Notes: 003 §3.3.3, 002 §4.3.2."""
    model = AlexNet(**{"widths": (96, 256, 384, 384, 256), "stem_padding": 0, **kw})
    model.default_input_shape = (model.in_chans, 227, 227)
    return model
