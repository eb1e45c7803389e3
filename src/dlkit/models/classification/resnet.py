"""Residual networks: ResNet, CIFAR ResNets, Wide ResNet, ResNeXt, SE-ResNet (Notes: 002 §2.2-§2.4, §2.6.1, 000 §3.5).

A residual block learns F(x) and outputs F(x) + x, so the identity is easy to represent and gradients reach early
layers. ResNet (002 §2.2.1) is a VGG-like stem, stages of residual blocks whose first block halves H, W and
widens the channels (no pooling inside), global average pooling and one dense layer. ResNeXt (002 §2.3) is the
same network with grouped bottlenecks (cardinality); SE-ResNet (002 §2.4) adds squeeze-and-excitation to each
block; Wide ResNet (002 §2.6.1) widens it. All are one class, `ResNet`, with the variant as arguments:

- ImageNet models (stem conv 7x7/2 + max-pool 3x3/2, widths 64-128-256-512): torchvision's configurations and
  exact parameter counts; bottlenecks put the stride on the 3x3 (v1.5, torchvision's choice).
- CIFAR ResNets (He et al. 2016 §4.2): stem conv 3x3 16, three stages of n basic blocks with 16-32-64 channels,
  depth 6n + 2, option A (parameter-free zero-padding) shortcuts as in the paper, 32x32 inputs.
- Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016): the CIFAR layout with pre-activation basic blocks, widths
  16k-32k-64k, (d - 4) / 6 blocks per stage, 1x1 projection shortcuts, dropout between the convolutions, a final
  BN-ReLU before pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.activations import get_act_layer
from ...nn.conv_bn_act import ConvBNAct
from ...nn.init import init_weights as init_layers
from ...nn.norm import get_norm_layer
from ...nn.residual import BasicBlock, Bottleneck, ResNetStages
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo, flatten

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
STEMS = ("imagenet", "cifar")


class ResNet(Backbone):
    """Residual network: stem -> stages of residual blocks -> global average pooling -> fc. Notes: 002 §2.2.1.

    Stage i has `layers[i]` blocks of width `widths[i]` (times 4 output channels for bottlenecks); the first block
    of every stage but the first has stride 2. `groups`/`base_width` make bottlenecks ResNeXt (G x d) or wide
    (base_width 128); `se_reduction` adds SE; `preact` uses pre-activation basic blocks (Wide ResNet); `shortcut`
    is 'A' (zero-padding) or 'B' (projection). Convolutions get Kaiming normal init (fan_out, ReLU gain), BN
    gamma 1 and beta 0; `zero_init_residual` zeroes each block's last BN gamma, so every block starts as the
    identity (torchvision's option). `output_stride` (8 or 16; default 32, 4 with the CIFAR stem) replaces the
    stride of the last stages by dilation (dilated ResNet, Notes: 002 §5.1.5; torchvision's
    `replace_stride_with_dilation`), with the same parameters; `set_output_stride` switches it in place.
    `num_classes=0` builds no classifier (the pooled features); `init_weights=False` keeps PyTorch's default
    initialisation, for a network that initialises itself as a whole (DeepLab). `norm_layer` ('batch', 'group',
    'instance', 'frozen_batch', a class; `dlkit.nn.norm`) and `act_layer` (a name or class) replace BN and ReLU
    everywhere.

    Backbone contract (`dlkit.models.backbone`): stages stem (stride 2 after the 7x7 convolution of the ImageNet stem;
    the CIFAR stem at stride 1) and stages.0 ... (strides `stage_strides`, following dilation), the last one after
    `head_norm` for pre-activation networks; head: average pool -> fc.
    """

    classifier_name = "fc"
    head_modules = ("pool", "fc")

    def __init__(self, block: str = "basic", layers: Sequence[int] = (2, 2, 2, 2), num_classes: int = 1000,
                 in_chans: int = 3, widths: Sequence[int] = (64, 128, 256, 512), stem: str = "imagenet",
                 stem_width: int = 64, groups: int = 1, base_width: int = 64, se_reduction: int | None = None,
                 shortcut: str = "B", preact: bool = False, drop_rate: float = 0.0, stride_in_1x1: bool = False,
                 zero_init_residual: bool = False, act_layer="relu", output_stride: int | None = None,
                 init_weights: bool = True, norm_layer="batch"):
        super().__init__()
        if block not in BLOCKS:
            raise ConfigError(f"ResNet block must be one of {sorted(BLOCKS)}; got {block!r}")
        if stem not in STEMS:
            raise ConfigError(f"ResNet stem must be one of {STEMS}; got {stem!r}")
        if len(layers) != len(widths) or not layers or min(layers) < 1:
            raise ConfigError(f"ResNet needs one block count >= 1 per stage width; got layers={tuple(layers)}, "
                              f"widths={tuple(widths)}")
        if preact and block != "basic":
            raise ConfigError("preact=True is implemented for basic blocks (Wide ResNet); use block='basic'")
        self.in_chans, self.num_classes, self.preact, self.stem_kind = in_chans, num_classes, preact, stem
        self.stem_width, self.stage_chans = stem_width, [w * BLOCKS[block].expansion for w in widths]
        self.default_input_shape = (in_chans, 224, 224) if stem == "imagenet" else (in_chans, 32, 32)

        layer = dict(act_layer=act_layer, norm_layer=norm_layer)
        if stem == "imagenet":
            self.stem = nn.Sequential(ConvBNAct(in_chans, stem_width, 7, 2, **layer), nn.MaxPool2d(3, 2, 1))
        elif preact:  # the first block normalises and activates its input itself
            self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False))
        else:
            self.stem = nn.Sequential(ConvBNAct(in_chans, stem_width, 3, 1, **layer))

        block_cls = BLOCKS[block]
        kw: dict = dict(se_reduction=se_reduction, shortcut=shortcut, drop_rate=drop_rate, **layer)
        if block == "basic":
            kw |= dict(preact=preact, groups=groups, base_width=base_width)
        else:
            kw |= dict(groups=groups, base_width=base_width, stride_in_1x1=stride_in_1x1)
        self.stages = ResNetStages(block_cls, stem_width, layers, widths, input_stride=4 if stem == "imagenet" else 1,
                                   output_stride=output_stride, **kw)
        self.num_features = chans = self.stages.out_chans
        make_norm = get_norm_layer(norm_layer)
        self.head_norm = (nn.Sequential(make_norm(chans) if make_norm else nn.Identity(), get_act_layer(act_layer)())
                          if preact else nn.Identity())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans, num_classes) if num_classes else nn.Identity()
        if init_weights:
            self.reset_parameters(zero_init_residual)

    @torch.no_grad()
    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """Kaiming normal N(0, 2 / fan_out) for convolutions (He et al. 2015), BN (1, 0), optional zero last gamma."""
        init_layers(self, conv="he_fan_out")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last()

    @property
    def output_stride(self) -> int:
        """Total stride of the feature map (32 for ImageNet ResNets, 4 for CIFAR ones, unless dilated)."""
        return self.stages.output_stride

    def set_output_stride(self, output_stride: int | None = None) -> None:
        """Dilate the last stages in place so the features have stride `output_stride` (None: undilated)."""
        self.stages.set_output_stride(output_stride)

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            h, w = self.default_input_shape[1:]
            raise ConfigError(f"ResNet expects images [N, {self.in_chans}, H, W] (default {h}x{w}); got "
                              f"{tuple(x.shape)}. Set in_chans to the number of image channels.")

    @property
    def feature_info(self) -> FeatureInfo:
        """stem (ImageNet: its 7x7/2 convolution, stride 2; CIFAR: stride 1) and every stage, at its current stride."""
        if self.stem_kind == "imagenet":
            info = [FeatureInfo.entry("stem.0", self.stem_width, 2)]
        else:
            info = [FeatureInfo.entry(f"stem.{len(self.stem) - 1}", self.stem_width, 1)]
        for i, (chans, stride) in enumerate(zip(self.stage_chans, self.stages.stage_strides)):
            info.append(FeatureInfo.entry(f"stages.{i}", chans, stride))
        if self.preact:
            info[-1]["module"] = "head_norm"
        return FeatureInfo(info)

    def feature_path(self):
        """stem.0, stem.1 (max-pool), stages.0 ..., head_norm: the last map is [N, num_features, H/s, W/s]."""
        return ([(f"stem.{i}", m) for i, m in enumerate(self.stem)]
                + [(f"stages.{i}", m) for i, m in enumerate(self.stages)] + [("head_norm", self.head_norm)])

    def head_path(self):
        return [self.pool, flatten]


# ----------------------------------------------------------------------------- builders


def cifar_resnet(depth: int = 20, **kw) -> ResNet:
    """CIFAR ResNet-depth (He et al. 2016 §4.2): 3 stages of n = (depth - 2) / 6 basic blocks, 16-32-64 wide."""
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...); got {depth}")
    n = (depth - 2) // 6
    args = dict(block="basic", layers=(n, n, n), widths=(16, 32, 64), stem="cifar", stem_width=16, num_classes=10,
                shortcut="A")
    return ResNet(**(args | kw))


def wide_resnet(depth: int = 28, widen_factor: int = 10, drop_rate: float = 0.0, **kw) -> ResNet:
    """Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016): pre-activation, (depth - 4) / 6 blocks per stage."""
    if depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"Wide ResNet depth must be 6n + 4 (10, 16, 22, 28, 40, ...); got {depth}")
    if widen_factor < 1:
        raise ConfigError(f"Wide ResNet widen_factor k must be >= 1; got {widen_factor}")
    n, k = (depth - 4) // 6, widen_factor
    args = dict(block="basic", layers=(n, n, n), widths=(16 * k, 32 * k, 64 * k), stem="cifar", stem_width=16,
                num_classes=10, preact=True, shortcut="B", drop_rate=drop_rate)
    return ResNet(**(args | kw))


def _imagenet(block: str, layers: tuple[int, ...], kw: dict, **defaults) -> ResNet:
    return ResNet(**(dict(block=block, layers=layers) | defaults | kw))


# ----------------------------------------------------------------------------- ImageNet (torchvision counts)


@register_model(input_size=(3, 224, 224), num_params=11_689_512, params_source="torchvision")
def resnet18(**kw) -> ResNet:
    """ResNet-18: basic blocks [2, 2, 2, 2]; 11,689,512 parameters (1000 classes). Notes: 002 §2.2.1."""
    return _imagenet("basic", (2, 2, 2, 2), kw)


@register_model(input_size=(3, 224, 224), num_params=21_797_672, params_source="torchvision")
def resnet34(**kw) -> ResNet:
    """ResNet-34: basic blocks [3, 4, 6, 3]; 21,797,672 parameters. Notes: 002 §2.2.1."""
    return _imagenet("basic", (3, 4, 6, 3), kw)


@register_model(input_size=(3, 224, 224), num_params=25_557_032, params_source="torchvision")
def resnet50(**kw) -> ResNet:
    """ResNet-50: bottlenecks [3, 4, 6, 3]; 25,557,032 parameters. Notes: 002 §2.2.1."""
    return _imagenet("bottleneck", (3, 4, 6, 3), kw)


@register_model(input_size=(3, 224, 224), num_params=44_549_160, params_source="torchvision")
def resnet101(**kw) -> ResNet:
    """ResNet-101: bottlenecks [3, 4, 23, 3]; 44,549,160 parameters. Notes: 002 §2.2.1."""
    return _imagenet("bottleneck", (3, 4, 23, 3), kw)


@register_model(input_size=(3, 224, 224), num_params=60_192_808, params_source="torchvision")
def resnet152(**kw) -> ResNet:
    """ResNet-152: bottlenecks [3, 8, 36, 3]; 60,192,808 parameters. Notes: 002 §2.2.1."""
    return _imagenet("bottleneck", (3, 8, 36, 3), kw)


@register_model(input_size=(3, 224, 224), num_params=68_883_240, params_source="torchvision")
def wide_resnet50_2(**kw) -> ResNet:
    """Wide ResNet-50-2 (torchvision): ResNet-50 with twice the bottleneck width; 68,883,240 parameters.

    Notes: 002 §2.6.1.
    """
    return _imagenet("bottleneck", (3, 4, 6, 3), kw, base_width=128)


@register_model(input_size=(3, 224, 224), num_params=25_028_904, params_source="torchvision")
def resnext50_32x4d(**kw) -> ResNet:
    """ResNeXt-50 32x4d: cardinality 32, branch width 4; 25,028,904 parameters. Notes: 002 §2.3."""
    return _imagenet("bottleneck", (3, 4, 6, 3), kw, groups=32, base_width=4)


@register_model(input_size=(3, 224, 224), num_params=88_791_336, params_source="torchvision")
def resnext101_32x8d(**kw) -> ResNet:
    """ResNeXt-101 32x8d: cardinality 32, branch width 8; 88,791,336 parameters. Notes: 002 §2.3."""
    return _imagenet("bottleneck", (3, 4, 23, 3), kw, groups=32, base_width=8)


@register_model(input_size=(3, 224, 224), num_params=25_557_032 + 2_530_992,
                params_source="by hand: torchvision resnet50 + the SE layers (Hu et al. 2018: 28.1M)")
def se_resnet50(**kw) -> ResNet:
    """SE-ResNet-50: SE (r = 16, fc with bias) on every bottleneck; 28,088,024 parameters. Notes: 002 §2.4."""
    return _imagenet("bottleneck", (3, 4, 6, 3), kw, se_reduction=16)


# ----------------------------------------------------------------------------- CIFAR (32x32; in_chans=1 for MNIST)


@register_model(input_size=(3, 32, 32), num_params=97_216 * 3 - 21_926,
                params_source="by hand: 97,216 n - 21,926 for 6n + 2 layers (He et al. 2016: 0.27M)")
def resnet_cifar20(**kw) -> ResNet:
    """CIFAR ResNet-20, option A shortcuts: 269,722 parameters (0.27M; 272,474 with option B projections).

    Notes: 002 §2.2.1.
    """
    return cifar_resnet(20, **kw)


@register_model(input_size=(3, 32, 32), num_params=97_216 * 5 - 21_926,
                params_source="by hand: 97,216 n - 21,926 for 6n + 2 layers (He et al. 2016: 0.46M)")
def resnet_cifar32(**kw) -> ResNet:
    """CIFAR ResNet-32, option A: 464,154 parameters (0.46M). Notes: 002 §2.2.1."""
    return cifar_resnet(32, **kw)


@register_model(input_size=(3, 32, 32), num_params=97_216 * 7 - 21_926,
                params_source="by hand: 97,216 n - 21,926 for 6n + 2 layers (He et al. 2016: 0.66M)")
def resnet_cifar44(**kw) -> ResNet:
    """CIFAR ResNet-44, option A: 658,586 parameters (0.66M). Notes: 002 §2.2.1."""
    return cifar_resnet(44, **kw)


@register_model(input_size=(3, 32, 32), num_params=97_216 * 9 - 21_926,
                params_source="by hand: 97,216 n - 21,926 for 6n + 2 layers (He et al. 2016: 0.85M)")
def resnet_cifar56(**kw) -> ResNet:
    """CIFAR ResNet-56, option A: 853,018 parameters (0.85M). Notes: 002 §2.2.1."""
    return cifar_resnet(56, **kw)


@register_model(input_size=(3, 32, 32), num_params=97_216 * 18 - 21_926,
                params_source="by hand: 97,216 n - 21,926 for 6n + 2 layers (He et al. 2016: 1.7M)")
def resnet_cifar110(**kw) -> ResNet:
    """CIFAR ResNet-110, option A: 1,727,962 parameters (1.7M). Notes: 002 §2.2.1."""
    return cifar_resnet(110, **kw)


@register_model(input_size=(3, 32, 32), num_params=97_216 * 3 - 21_926 + 3 * (49 + 162 + 580),
                params_source="by hand: ResNet-20 + SE of 49, 162, 580 per block of 16, 32, 64 channels")
def se_resnet_cifar20(**kw) -> ResNet:
    """CIFAR ResNet-20 with SE (r = 16, hidden max(1, C // 16)) in every basic block: 272,095 parameters.

    Notes: 002 §2.4.
    """
    return cifar_resnet(20, **(dict(se_reduction=16) | kw))


@register_model(input_size=(3, 32, 32), num_params=36_479_194, params_source="by hand (the paper: 36.5M)")
def wrn_28_10(**kw) -> ResNet:
    """WRN-28-10: 36,479,194 parameters for 10 classes (the paper's 36.5M). Notes: 002 §2.6.1."""
    return wide_resnet(28, 10, **kw)


@register_model(input_size=(3, 32, 32), num_params=2_748_890, params_source="by hand (the paper: 2.7M)")
def wrn_16_4(**kw) -> ResNet:
    """WRN-16-4: 2,748,890 parameters for 10 classes (the paper's 2.7M). Notes: 002 §2.6.1."""
    return wide_resnet(16, 4, **kw)


@register_model(input_size=(3, 32, 32), num_params=691_674, params_source="by hand: Zagoruyko & Komodakis 2016 layout")
def wrn_16_2(**kw) -> ResNet:
    """WRN-16-2, a small Wide ResNet for Fashion-MNIST/CIFAR on a CPU: 691,674 parameters. Notes: 002 §2.6.1."""
    return wide_resnet(16, 2, **kw)


@register_model(input_size=(1, 32, 32))
def resnext_tiny_fashion(**kw) -> ResNet:
    """CIFAR-style ResNeXt (G = 8, d = 4-8-16, 2 bottlenecks per stage) for Fashion-MNIST: 247,610 parameters.

    Notes: 002 §2.3.
    """
    args = dict(block="bottleneck", layers=(2, 2, 2), widths=(16, 32, 64), stem="cifar", stem_width=16,
                groups=8, base_width=16, num_classes=10, in_chans=1)
    return ResNet(**(args | kw))
