"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012; Notes: 003 §3.3.3, 004 CNN examples).

Five convolutions and three dense layers. Against overfitting it introduced ReLU (which also trains faster than
tanh), dropout 0.5 in the dense layers, weight decay, normalisation layers (LRN, "not used anymore") and max-pooling.

This is the single-GPU form torchvision builds ("One weird trick", Krizhevsky 2014): convolutions with
64-192-384-256-256 filters (the 2012 paper: 96-256-384-384-256 split over two GPUs), no LRN, and an adaptive
6x6 average pool before the classifier so that inputs other than 224x224 work. Parameters (1000 classes):
conv 2,469,696 + FC 58,631,144 = 61,100,840, torchvision's published count.
"""

from __future__ import annotations

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
    after its max-pool; head: 6x6 average pool -> FC 4096 -> FC 4096 -> classifier `classifier.6`.
    """

    classifier_name = "classifier.6"
    head_modules = ("avgpool", "classifier")

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5, act_layer=RELU_INPLACE):
        super().__init__()
        if num_classes < 1 or in_chans < 1:
            raise ConfigError(f"AlexNet needs num_classes >= 1 and in_chans >= 1; got {num_classes}, {in_chans}")
        self.in_chans = in_chans
        self.default_input_shape = (in_chans, 224, 224)
        make_act = get_act_layer(act_layer)

        def act() -> nn.Module:
            return inplace_(make_act())

        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 64, 11, stride=4, padding=2), act(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), act(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), act(),
            nn.Conv2d(384, 256, 3, padding=1), act(),
            nn.Conv2d(256, 256, 3, padding=1), act(), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), act(),
            nn.Dropout(dropout), nn.Linear(4096, 4096), act(),
            nn.Linear(4096, num_classes),
        )

        self.feature_info = FeatureInfo([FeatureInfo.entry("features.2", 64, 8),
                                         FeatureInfo.entry("features.5", 192, 16),
                                         FeatureInfo.entry("features.12", 256, 32)])

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
