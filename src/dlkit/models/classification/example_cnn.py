"""The example CNN for image classification of the notes (Notes: 003 §3.2.5, parameter cheat sheet §3.4).

The Keras listing (64x64x3 patches, `nb_filters=8`, 5 classes) rebuilt layer by layer; "same" padding, 2x2 max-pools,
ReLU after every conv and hidden dense layer. Parameters by the cheat sheet, conv F (k_w k_h d_in + 1), dense
d_out (d_in + 1); output shapes H x W x C as Keras prints them:

    layer                      output      parameters
    conv 3x3, 8   + ReLU       64x64x8     8 (9*3 + 1)   =    224
    maxpool 2x2                32x32x8                        0
    conv 3x3, 16  + ReLU       32x32x16    16 (9*8 + 1)  =  1,168
    conv 3x3, 16  + ReLU       32x32x16    16 (9*16 + 1) =  2,320
    maxpool 2x2                16x16x16                       0
    conv 5x5, 24  + ReLU       16x16x24    24 (25*16 + 1) = 9,624
    conv 5x5, 24  + ReLU       16x16x24    24 (25*24 + 1) = 14,424
    maxpool 2x2                8x8x24                         0
    global average pool        24                             0
    dense 64 + ReLU + drop 0.5 64          64 (24 + 1)   =  1,600
    dense 16 + ReLU + drop 0.5 16          16 (64 + 1)   =  1,040
    dense 5 (+ softmax)        5           5 (16 + 1)    =     85
    total                                                  30,485, all trainable

It is not fully convolutional (it has dense layers), but thanks to the global average pool it accepts any input
size whose sides are multiples of 8 (e.g. 96x96). `forward` returns logits (for a cross-entropy on logits);
`predict_proba` applies the listing's final softmax.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.init import init_weights
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo, named_steps


class ExampleCNN(Backbone):
    """The notes' Keras example CNN: 3 conv stages (8 | 16, 16 | 24, 24 filters) -> GAP -> 64 -> 16 -> classes.

    Notes: 003 §3.2.5. `nb_filters` is the listing's base width (8); stages use 1x, 2x, 3x of it.

    Backbone contract: stages features.2, features.7, features.12 (after each max-pool: f, 2f, 3f maps at strides 2,
    4, 8); head: global average pool (the listing's, `features.13`) -> 64 -> 16 -> classifier `classifier.6`.
    """

    classifier_name = "classifier.6"
    head_modules = ("classifier",)

    def __init__(self, num_classes: int = 5, in_chans: int = 3, nb_filters: int = 8, dropout: float = 0.5):
        super().__init__()
        if num_classes < 1 or in_chans < 1 or nb_filters < 1:
            raise ConfigError(f"ExampleCNN widths must be positive; got num_classes={num_classes}, "
                              f"in_chans={in_chans}, nb_filters={nb_filters}")
        f = nb_filters
        self.in_chans = in_chans
        self.default_input_shape = (in_chans, 64, 64)
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, f, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(f, 2 * f, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * f, 2 * f, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * f, 3 * f, 5, padding=2), nn.ReLU(),
            nn.Conv2d(3 * f, 3 * f, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(3 * f, 64), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(64, 16), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(16, num_classes),
        )
        self.feature_info = FeatureInfo([FeatureInfo.entry("features.2", f, 2),
                                         FeatureInfo.entry("features.7", 2 * f, 4),
                                         FeatureInfo.entry("features.12", 3 * f, 8)])
        # Keras defaults of the listing: glorot_uniform kernels, zero biases
        init_weights(self, conv="xavier_uniform", linear="xavier_uniform")

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W] with H, W >= 8."""
        if x.dim() != 4 or x.shape[1] != self.in_chans or min(x.shape[-2:]) < 8:
            raise ConfigError(f"ExampleCNN expects images [N, {self.in_chans}, H, W] with H, W >= 8 (the notes use "
                              f"64x64); got {tuple(x.shape)}")

    def feature_path(self):
        return named_steps("features", self.features, 13)

    def head_path(self):
        return [self.features[13], self.features[14], *list(self.classifier)[:-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [N, classes] (the softmax of the listing is left to the loss or `predict_proba`)."""
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities softmax(logits), the output of the Keras model's final Activation('softmax')."""
        return torch.softmax(self(x), dim=1)


@register_model(input_size=(3, 64, 64), num_params=30_485, params_source="by hand: the notes' layer table")
def example_cnn_003(**kw) -> ExampleCNN:
    """The notes' example CNN: 64x64x3 input, 5 classes, 30,485 parameters. Notes: 003 §3.2.5."""
    return ExampleCNN(**kw)
