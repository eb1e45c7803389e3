"""GoogLeNet / Inception-v1 (Szegedy et al., 2014; Notes: 002 §2.1, 003 §3.3.3, 004 CNN examples).

A network built to spend little compute: a 5-layer stem takes 224x224 down to 28x28x192 (conv 7x7/2 -> maxpool
3x3/2 -> conv 1x1 -> conv 3x3 -> maxpool 3x3/2, the largest convolution 7x7 with stride 2 as in ZFNet), then nine
Inception modules (3a, 3b | 4a-4e | 5a, 5b) separated by max-pools, then a global-average-pooling classifier
(GAP -> dropout -> FC) instead of flattening into big dense layers. Two auxiliary classifiers on 4a and 4d are used
only in training (the model returns (main, aux1, aux2) in train mode; the paper weighs their losses by 0.3).
All max-pools are 3x3/2 with ceil rounding as in the paper's Table 1 (torchvision uses 2x2/2 before 5a: the same
7x7 map at 224x224 and no parameters, so the counts agree).

Parameter counts (1000 classes), derived from the module formula in `dlkit.nn.inception` and checked in the tests:
  `googlenet` (torchvision layout: conv+BN (eps 1e-3), no conv bias, 3x3 kernel in the "5x5" branch):
      6,624,904 without the auxiliary heads; the heads add 3,188,968 (on 4a, 512 ch) + 3,191,016 (on 4d, 528 ch):
      13,004,888 with them (torchvision's published numbers).
  the same with the paper's true 5x5 kernels (`c5_kernel=5`, the default of the class): 7,005,832 without aux
      (each of the nine 5x5 convs holds 25 r5 c5 weights instead of 9 r5 c5: +16 sum r5 c5 = +380,928).
  `inception_v1` (the paper: 5x5, conv biases, no BN, local response normalisation in the stem, dropout 0.4):
      6,998,552 without aux, 13,378,280 with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.conv_bn_act import ConvBNAct
from ...nn.inception import InceptionAux, InceptionModule
from ...nn.norm import get_norm_layer
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo, flatten, named_steps

# Table 1 of the paper: (name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj); "M" = max-pool 3x3/2.
INCEPTION_V1_LAYOUT: tuple = (
    ("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), "M",
    ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64), ("4c", 128, 128, 256, 24, 64, 64),
    ("4d", 112, 144, 288, 32, 64, 64), ("4e", 256, 160, 320, 32, 128, 128), "M",
    ("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128),
)

# A CPU-sized version for 28x28 / 32x32 grey images: 3x3 stem (32) -> pool -> 2 modules -> pool -> 1 module -> GAP.
TINY_LAYOUT: tuple = (
    "M", ("3a", 16, 16, 24, 4, 8, 16), ("3b", 32, 24, 32, 8, 16, 16), "M", ("4a", 48, 32, 64, 8, 16, 32),
)


class GoogLeNet(Backbone):
    """Inception-v1: stem -> Inception modules (`layout`) -> GAP -> dropout -> FC, auxiliary heads in training.

    Notes: 002 §2.1. `stem="imagenet"` is the paper's 5-layer stem (224 -> 28), `stem="small"` a stack of 3x3
    convolutions with widths `stem_chans` and no down-sampling (for 28x28 / 32x32 inputs). `norm=True` puts
    batch normalisation (eps `bn_eps`) after every convolution as torchvision does; `norm=False` is the paper
    (conv biases; local response normalisation in the imagenet stem). `c5_kernel` 5 is the paper, 3 torchvision.
    `norm_layer` (a name or class, `dlkit.nn.norm`) chooses another normalisation than batch norm (given, it
    replaces `norm`); `act_layer` replaces the convolutions' ReLU.

    Backbone contract: stages at every stride: the imagenet stem's 7x7/2 convolution (stride 2) and its last layer
    before the max-pool (stride 4), then the last Inception module before each max-pool and the last one
    (inception3b, 4e, 5b at strides 8, 16, 32); a layout that starts with a max-pool has the stem's output as a
    stage. Head: average pool -> dropout -> classifier `fc`; the auxiliary heads are used by `forward` in training.
    """

    classifier_name = "fc"
    head_modules = ("aux", "avgpool", "dropout", "fc")

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, layout: Sequence = INCEPTION_V1_LAYOUT,
                 stem: str = "imagenet", stem_chans: Sequence[int] = (64, 64, 192), aux_logits: bool = True,
                 aux_after: Sequence[str] = ("4a", "4d"), norm: bool = True, bn_eps: float = 1e-3,
                 c5_kernel: int = 5, dropout: float = 0.4, aux_dropout: float = 0.7, norm_layer=None,
                 act_layer="relu"):
        super().__init__()
        if stem not in ("imagenet", "small"):
            raise ConfigError(f"GoogLeNet stem must be 'imagenet' or 'small'; got {stem!r}")
        if stem == "imagenet" and len(stem_chans) != 3:
            raise ConfigError(f"the imagenet stem has 3 convolutions (7x7/2, 1x1, 3x3); got stem_chans={stem_chans}")
        names = [row[0] for row in layout if row != "M"]
        missing = [a for a in aux_after if a not in names] if aux_logits else []
        if missing:
            raise ConfigError(f"aux_after names modules of the layout {names}; got unknown {missing}")
        self.in_chans, self.aux_logits = in_chans, aux_logits
        self.default_input_shape = (in_chans, 224, 224) if stem == "imagenet" else (in_chans, 32, 32)

        norm_layer = norm_layer if norm_layer is not None else ("batch" if norm else None)
        norm = get_norm_layer(norm_layer) is not None
        layer = dict(norm=norm, norm_layer=norm_layer if norm else None, bn_eps=bn_eps, act_layer=act_layer)

        def conv(cin: int, cout: int, k: int, stride: int = 1) -> ConvBNAct:
            return ConvBNAct(cin, cout, k, stride, norm_layer=layer["norm_layer"], bn_eps=bn_eps, act_layer=act_layer)

        def pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(3, stride=2, ceil_mode=True)

        if stem == "imagenet":
            c1, c2, c3 = stem_chans
            layers: list[nn.Module] = [conv(in_chans, c1, 7, 2), pool()]
            layers += [nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)] if not norm else []
            layers += [conv(c1, c2, 1), conv(c2, c3, 3)]
            layers += [nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)] if not norm else []
            layers += [pool()]
        else:
            widths = [in_chans, *stem_chans]
            layers = [conv(a, b, 3) for a, b in zip(widths[:-1], widths[1:])]
        self.stem = nn.Sequential(*layers)

        chans = stem_chans[-1]
        self.blocks = nn.ModuleDict()
        self.aux = nn.ModuleDict()
        info, stride = [], 8 if stem == "imagenet" else 1
        if stem == "imagenet":
            info += [FeatureInfo.entry("stem.0", stem_chans[0], 2),
                     FeatureInfo.entry(f"stem.{len(layers) - 2}", chans, 4)]
        last = FeatureInfo.entry(f"stem.{len(layers) - 1}", chans, stride)  # the latest map, a stage if a pool follows
        for i, row in enumerate(layout):
            if row == "M":
                self.blocks[f"maxpool{i}"] = pool()
                if last is not None:
                    info.append(last)
                last, stride = None, stride * 2
                continue
            name, *widths = row
            block = InceptionModule(chans, *widths, c5_kernel=c5_kernel, **layer)
            self.blocks[f"inception{name}"] = block
            chans = block.out_chans
            last = FeatureInfo.entry(f"blocks.inception{name}", chans, stride)
            if aux_logits and name in aux_after:
                self.aux[f"inception{name}"] = InceptionAux(chans, num_classes, dropout=aux_dropout, **layer)
        self.feature_info = FeatureInfo(info + ([last] if last is not None else []))
        self.num_features = chans
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(chans, num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(f"GoogLeNet expects images [N, {self.in_chans}, H, W] (e.g. "
                              f"{list(self.default_input_shape)}); got {tuple(x.shape)}")

    def feature_path(self):
        return named_steps("stem", self.stem) + named_steps("blocks", self.blocks)

    def head_path(self):
        return [self.avgpool, flatten, self.dropout]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Logits [N, classes]; in train mode with aux heads, the tuple (main, aux1, aux2, ...)."""
        if not (self.training and len(self.aux)):
            return self.forward_head(self.forward_features(x))
        self.check_input(x)
        aux_out = []
        for name, step in self.feature_path():
            x = step(x)
            if name.removeprefix("blocks.") in self.aux:  # an auxiliary classifier reads this module's output
                aux_out.append(self.aux[name.removeprefix("blocks.")](x))
        return (self.forward_head(x), *aux_out)


@register_model(input_size=(3, 224, 224), num_params=13_004_888,
                params_source="torchvision googlenet(aux_logits=True); 6,624,904 without the auxiliary heads")
def googlenet(**kw) -> GoogLeNet:
    """GoogLeNet as torchvision builds it (BN eps 1e-3, 3x3 in the "5x5" branch, dropout 0.2): 13,004,888
    parameters with the auxiliary heads, 6,624,904 with `aux_logits=False`. Notes: 002 §2.1."""
    kw = {"c5_kernel": 3, "dropout": 0.2, **kw}
    return GoogLeNet(**kw)


@register_model(input_size=(3, 224, 224), num_params=13_378_280,
                params_source="by hand: Table 1 of Szegedy et al. 2014 with biases and the two auxiliary heads")
def inception_v1(**kw) -> GoogLeNet:
    """Inception-v1 as in the paper (true 5x5, conv biases, LRN, no BN, dropout 0.4): 13,378,280 parameters with
    the auxiliary heads, 6,998,552 without. Notes: 002 §2.1."""
    kw = {"norm": False, "c5_kernel": 5, "dropout": 0.4, **kw}
    return GoogLeNet(**kw)


@register_model(input_size=(1, 28, 28))
def googlenet_tiny_fashion(**kw) -> GoogLeNet:
    """A CPU-sized GoogLeNet for 28x28 grey images, 10 classes: 3x3 stem, three Inception modules (true 5x5), GAP.

    57,090 parameters; about 0.38 GFLOPs per 32 images of 28x28. Notes: 002 §2.1."""
    kw = {"num_classes": 10, "in_chans": 1, "layout": TINY_LAYOUT, "stem": "small", "stem_chans": (32,),
          "aux_logits": False, "norm": True, "bn_eps": 1e-5, "dropout": 0.2, **kw}
    model = GoogLeNet(**kw)
    model.default_input_shape = (kw["in_chans"], 28, 28)
    return model
