"""LeNet-5 (LeCun et al., 1998; Notes: 004 CNN, 000 §3).

Two convolution + pooling stages and three dense layers on a 32x32 input (28x28 MNIST images
are padded by 2): conv 5x5 6 -> pool -> conv 5x5 16 -> pool -> 120 -> 84 -> classes. With full
connectivity between C1 and C3 it has 61,706 parameters (the modern form; the 1998 paper's
partial C3 connections and RBF output layer are not reproduced). The notes date it 1988: it is 1998.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.activations import get_activation
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo, named_steps

_MONOTONE = ("relu", "leaky_relu", "elu", "relu6", "tanh", "sigmoid", "softplus")


class LeNet5(Backbone):
    """LeNet-5; `activation` tanh with average pooling is the original, relu with max pooling the modern.

    Backbone contract: stages features.2 (6 maps, stride 2) and features.5 (16 maps, stride 4; 5x5 for 28x28
    inputs, the 5x5 convolutions being unpadded); the head is the dense stack 120 -> 84 -> classes, whose last
    layer `classifier.5` is the classifier (pre-logits: the 84 features).
    """

    classifier_name = "classifier.5"
    head_modules = ("classifier",)

    def __init__(self, num_classes: int = 10, in_chans: int = 1, activation: str = "relu", pool: str = "max",
                 pad_input: bool = True):
        super().__init__()
        if pool not in ("max", "avg"):
            raise ConfigError(f"LeNet5 pool must be 'max' or 'avg'; got {pool!r}")
        pool_layer = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
        self.in_chans = in_chans
        self.default_input_shape = (in_chans, 28, 28) if pad_input else (in_chans, 32, 32)
        c1, c3 = nn.Conv2d(in_chans, 6, 5, padding=2 if pad_input else 0), nn.Conv2d(6, 16, 5)
        if pool == "max" and activation in _MONOTONE:
            # max pooling commutes with a non-decreasing activation: act(max(x)) = max(act(x)), so pool first and
            # apply the activation to 4x fewer values (same function, tested)
            self.features = nn.Sequential(c1, pool_layer(2), get_activation(activation),
                                          c3, pool_layer(2), get_activation(activation))
        else:
            self.features = nn.Sequential(c1, get_activation(activation), pool_layer(2),
                                          c3, get_activation(activation), pool_layer(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), get_activation(activation),
            nn.Linear(120, 84), get_activation(activation), nn.Linear(84, num_classes),
        )

        self.feature_info = FeatureInfo([FeatureInfo.entry("features.2", 6, 2), FeatureInfo.entry("features.5", 16, 4)])

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(f"LeNet5 expects images [N, {self.in_chans}, 28, 28] (or 32x32 with pad_input=False); "
                              f"got {tuple(x.shape)}")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The dense stack reads the 16 x 5 x 5 map that 28x28 images give (32x32 with pad_input=False)."""
        if x.shape[-3:] != (16, 5, 5):
            side = 28 if self.default_input_shape[-1] == 28 else 32
            raise ConfigError(f"LeNet5's dense layers read the 16x5x5 map of {side}x{side} images; got a "
                              f"{'x'.join(map(str, x.shape[-3:]))} map. Resize the images to {side}x{side}, or use "
                              "forward_features / feature_maps, which take any size")
        return super().forward_head(x, pre_logits)

    def feature_path(self):
        return named_steps("features", self.features)

    def head_path(self):
        return list(self.classifier)[:-1]


@register_model(input_size=(1, 28, 28), num_params=61_706,
                params_source="by hand: conv 156 + 2,416, dense 48,120 + 10,164 + 850")
def lenet5(**kw) -> LeNet5:
    """LeNet-5 for 28x28 grey images, 10 classes: 61,706 parameters. Notes: 004 CNN."""
    return LeNet5(**kw)
