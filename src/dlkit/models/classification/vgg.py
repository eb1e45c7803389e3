"""VGG (Simonyan and Zisserman, 2014; Notes: 003 §3.3.3, 004 CNN examples).

"Smaller filters but a deeper network": only 3x3 convolutions (stride 1, padding 1) and 2x2 max-pools. Two stacked
3x3 convolutions see a 5x5 receptive field with 18 C^2 weights instead of 25 C^2, three see 7x7 with 27 C^2 instead
of 49 C^2, and add a non-linearity per layer. The configurations A, B, D, E of the paper (11, 13, 16, 19 weight
layers) differ only in how many convolutions each of the five stages stacks, so they are one class with a table.
Head: adaptive 7x7 average pool (the identity at 224x224), FC 4096 -> FC 4096 -> FC K with ReLU and dropout 0.5.
The `_bn` variants add batch normalisation after each convolution and, as torchvision does, keep the conv bias.

Parameter counts (1000 classes; torchvision's published numbers, asserted in the tests):
vgg11 132,863,336  vgg13 133,047,848  vgg16 138,357,544 (conv 14,714,688 + FC 123,642,856)  vgg19 143,667,240;
the `_bn` variants add 2 parameters per conv channel, gamma and beta (the notes' cheat sheet counts 4 per channel
as Keras does, adding the two non-trainable running statistics, which torch keeps as buffers):
vgg11_bn 132,868,840  vgg13_bn 133,053,736  vgg16_bn 138,365,992  vgg19_bn 143,678,248.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.activations import RELU_INPLACE, get_act_layer
from ...nn.init import init_weights
from ...nn.norm import get_norm_layer
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo, flatten, named_steps

# Conv widths per layer, "M" = max-pool 2x2/2 (Table 1 of the paper).
VGG_CONFIGS: dict[str, tuple] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    "tiny": (16, "M", 32, "M", 64, 64, "M"),
}



class VGG(Backbone):
    """VGG: stacks of 3x3 conv (+BN) + ReLU separated by 2x2 max-pools, then FC-hidden-hidden-K. Notes: 003 §3.3.3.

    `cfg` is a key of `VGG_CONFIGS` ("A", "B", "D", "E", "tiny") or a sequence of widths and "M". The head pools
    adaptively to `pool_size` x `pool_size` and has two hidden dense layers of width `hidden`.

    Backbone contract: one stage per max-pool, its map taken after the pool (pool1 ... pool5 at strides 2 ... 32, the
    maps FCN reads), plus the last convolution if the configuration does not end in a pool; head: adaptive pool ->
    FC hidden -> FC hidden -> classifier `classifier.6` (pre-logits: the second hidden layer's output).

    `norm_layer` (a name or class, `dlkit.nn.norm`) puts that normalisation after every convolution;
    `batch_norm=True` is `norm_layer='batch'` (VGG-bn). `act_layer` replaces the convolutions' ReLU (the
    classifier keeps ReLU). The convolutions keep their bias either way, as torchvision's VGG-bn.
    """

    classifier_name = "classifier.6"
    head_modules = ("avgpool", "classifier")

    def __init__(self, cfg: str | Sequence = "D", num_classes: int = 1000, in_chans: int = 3, batch_norm: bool = False,
                 hidden: int = 4096, pool_size: int = 7, dropout: float = 0.5, norm_layer=None,
                 act_layer=RELU_INPLACE):
        super().__init__()
        if isinstance(cfg, str):
            if cfg not in VGG_CONFIGS:
                raise ConfigError(f"VGG cfg must be one of {sorted(VGG_CONFIGS)} or a list of widths and 'M'; "
                                  f"got {cfg!r}")
            cfg = VGG_CONFIGS[cfg]
        if not any(c != "M" for c in cfg) or any(c != "M" and (not isinstance(c, int) or c < 1) for c in cfg):
            raise ConfigError(f"VGG cfg lists positive conv widths and 'M' for max-pool; got {list(cfg)}")
        self.in_chans = in_chans
        self.min_size = 2 ** sum(c == "M" for c in cfg)
        self.default_input_shape = (in_chans, 224, 224)
        make_norm = get_norm_layer(norm_layer if norm_layer is not None else ("batch" if batch_norm else None))
        make_act = get_act_layer(act_layer)
        layers: list[nn.Module] = []
        chans, stride, info = in_chans, 1, []
        for c in cfg:
            if c == "M":
                layers.append(nn.MaxPool2d(2, 2))
                stride *= 2
                info.append(FeatureInfo.entry(f"features.{len(layers) - 1}", chans, stride))
                continue
            layers.append(nn.Conv2d(chans, c, 3, padding=1))
            if make_norm is not None:
                layers.append(make_norm(c))
            if make_act is not None:
                layers.append(make_act())
            chans = c
        self.features = nn.Sequential(*layers)
        if cfg[-1] != "M":
            info.append(FeatureInfo.entry(f"features.{len(layers) - 1}", chans, stride))
        self.feature_info = FeatureInfo(info)
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Linear(chans * pool_size * pool_size, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # as the paper's follow-ups and torchvision: He init (fan-out) for convolutions, N(0, 0.01) for dense layers
        init_weights(self, conv="he_fan_out", linear="normal_0.01")

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W] with H, W >= 2^(number of max-pools)."""
        if x.dim() != 4 or x.shape[1] != self.in_chans or min(x.shape[-2:]) < self.min_size:
            raise ConfigError(f"VGG expects images [N, {self.in_chans}, H, W] with H, W >= {self.min_size} "
                              f"(one halving per max-pool); got {tuple(x.shape)}")

    def feature_path(self):
        return named_steps("features", self.features)

    def head_path(self):
        return [self.avgpool, flatten, *list(self.classifier)[:-1]]


def _vgg(cfg: str, batch_norm: bool, kw: dict) -> VGG:
    return VGG(**{"cfg": cfg, "batch_norm": batch_norm, **kw})


@register_model(input_size=(3, 224, 224), num_params=132_863_336, params_source="torchvision")
def vgg11(**kw) -> VGG:
    """VGG-11 (configuration A): 132,863,336 parameters. Notes: 003 §3.3.3."""
    return _vgg("A", False, kw)


@register_model(input_size=(3, 224, 224), num_params=133_047_848, params_source="torchvision")
def vgg13(**kw) -> VGG:
    """VGG-13 (configuration B): 133,047,848 parameters. Notes: 003 §3.3.3."""
    return _vgg("B", False, kw)


@register_model(input_size=(3, 224, 224), num_params=138_357_544, params_source="torchvision")
def vgg16(**kw) -> VGG:
    """VGG-16 (configuration D): 138,357,544 parameters. Notes: 003 §3.3.3."""
    return _vgg("D", False, kw)


@register_model(input_size=(3, 224, 224), num_params=143_667_240, params_source="torchvision")
def vgg19(**kw) -> VGG:
    """VGG-19 (configuration E): 143,667,240 parameters. Notes: 003 §3.3.3."""
    return _vgg("E", False, kw)


@register_model(input_size=(3, 224, 224), num_params=132_868_840, params_source="torchvision")
def vgg11_bn(**kw) -> VGG:
    """VGG-11 with batch normalisation: 132,868,840 parameters. Notes: 003 §3.3.3."""
    return _vgg("A", True, kw)


@register_model(input_size=(3, 224, 224), num_params=133_053_736, params_source="torchvision")
def vgg13_bn(**kw) -> VGG:
    """VGG-13 with batch normalisation: 133,053,736 parameters. Notes: 003 §3.3.3."""
    return _vgg("B", True, kw)


@register_model(input_size=(3, 224, 224), num_params=138_365_992, params_source="torchvision")
def vgg16_bn(**kw) -> VGG:
    """VGG-16 with batch normalisation: 138,365,992 parameters. Notes: 003 §3.3.3."""
    return _vgg("D", True, kw)


@register_model(input_size=(3, 224, 224), num_params=143_678_248, params_source="torchvision")
def vgg19_bn(**kw) -> VGG:
    """VGG-19 with batch normalisation: 143,678,248 parameters. Notes: 003 §3.3.3."""
    return _vgg("E", True, kw)


@register_model(input_size=(1, 28, 28))
def vgg_tiny_fashion(**kw) -> VGG:
    """A CPU-sized VGG for 28x28 grey images, 10 classes: conv 16 | 32 | 64, 64 with BN, 3x3 pool, FC 256-256-10.

    Notes: 003 §3.3.3.
    """
    kw = {"num_classes": 10, "in_chans": 1, "hidden": 256, "pool_size": 3, **kw}
    model = _vgg("tiny", True, kw)
    model.default_input_shape = (kw["in_chans"], 28, 28)
    return model
