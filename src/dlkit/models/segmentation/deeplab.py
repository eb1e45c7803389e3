"""DeepLab v2, v3 and v3+ (Chen et al. 2016, 2017, 2018; Notes: 002 §5.1.5, §5.A.1, §5.A.2).

A classification ResNet has output stride 32; segmentation needs finer maps. The dilated ResNet (002 §5.1.5)
keeps the early stages and replaces the stride of the last stages by dilation: output stride 16 dilates the
last stage (r = 2), 8 the last two (r = 2, 4), each dilated stage's first block keeping the previous rate r / 2.
The parameters are those of the ResNet (its weights load unchanged: `backbone` has ResNet's `stem` and `stages`).

- DeepLab v2 (§5.A.1): dilated ResNet at output stride 8 -> ASPP-v2 (`dlkit.nn.aspp.ASPPv2`: four 3x3 atrous
  convolutions at rates 6, 12, 18, 24, each straight to class scores, the four score maps summed, not
  concatenated as in v3) -> bilinear upsampling to the input size. No BN in the head, no extra 3x3.
- DeepLab v3: dilated ResNet -> ASPP (`dlkit.nn.aspp.ASPP`) -> 3x3 conv + BN + ReLU -> 1x1 classifier ->
  bilinear upsampling to the input size (torchvision's head; the extra 3x3 is its choice). `aux=True` adds
  torchvision's auxiliary FCN head on the third stage (3x3 conv to C / 4 + BN + ReLU + dropout 0.1 + 1x1), whose
  scores `forward_maps(x)["aux"]` returns for an auxiliary loss.
- Curriculum (002 §5.1.5): train at output stride 16 (cheaper, larger batches), then fine-tune at 8 with the same
  weights; `set_output_stride(8)` dilates the third stage in place and doubles the ASPP rates (6, 12, 18 ->
  12, 24, 36).
- DeepLab v3+: the v3 encoder (ASPP, no extra 3x3) and a U-Net-like decoder: ASPP output upsampled x4 to the
  stride-4 features of the first stage, which a 1x1 conv reduces to 48 channels, concatenated, two 3x3 convs
  (256, BN + ReLU; depth-wise separable with `separable=True`), 1x1 classifier, upsampled x4.

Parameter count of `deeplabv3_resnet50` (21 classes, ASPP 256 channels, BN = 2 C, convolutions without bias):
    backbone   ResNet-50 without fc: 25,557,032 - (2048 x 1000 + 1000) = 23,508,032
    ASPP       1x1 2048->256: 524,288 + 512 = 524,800;  three 3x3 2048->256: 3 x (4,718,592 + 512) = 14,157,312;
               pooling 1x1: 524,800;  projection 1x1 1280->256: 327,680 + 512 = 328,192      -> 15,535,104
    head       3x3 256->256: 589,824 + 512 = 590,336;  classifier 256 x 21 + 21 = 5,397
    total      39,638,869; with the auxiliary head (3x3 1024->256: 2,359,296 + 512, 1x1 256->21: 5,397 =
               2,365,205) 42,004,074, torchvision's published count for deeplabv3_resnet50.
`deeplabv3_resnet101`: 44,549,160 - 2,049,000 = 42,500,160 + 15,535,104 + 590,336 + 5,397 = 58,630,997, with aux
60,996,202 (torchvision's). `deeplabv3plus_resnet50` (output stride 16; derived here, no published count):
23,508,032 + 15,535,104 + 1x1 256->48: 12,288 + 96 + 3x3 304->256: 700,416 + 512 + 3x3 256->256: 590,336 +
classifier 5,397 = 40,352,181.
`deeplabv2_resnet101` (21 classes, derived here): 42,500,160 + ASPP-v2 4 x (3x3 2048->21: 387,072 + bias 21 =
387,093) = 1,548,372 -> 44,048,532.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.aspp import ASPP, ASPPv2, atrous_conv
from ...nn.conv_bn_act import ConvBNAct
from ...nn.init import init_weights
from ...registry import create_model, register_model
from ..backbone import FeatureExtractor


def dilated_resnet(name: str = "resnet50", in_chans: int = 3, output_stride: int = 8, **overrides) -> FeatureExtractor:
    """The stages of the registered ResNet `name` (`overrides`: block, layers, widths, stem_width) at output stride 8,
    16 or 32, as a feature extractor: forward(x) is the list of every stage's map (strides 4, 8, 16, 32 undilated).

    Notes: 002 §5.1.5. Built without a classifier and with PyTorch's default initialisation (DeepLab initialises
    the whole network); its state dict is the ResNet's without `fc.*`, so a classifier's weights load into it.
    """
    resnet = create_model(name, in_chans=in_chans, num_classes=0, output_stride=output_stride, init_weights=False,
                          **overrides)
    return FeatureExtractor(resnet, range(1, len(resnet.feature_info)), name=name)  # every stage after the stem


class DeepLabV2(nn.Module):
    """DeepLab v2: dilated ResNet (output stride 8) -> ASPP-v2 (summed class scores) -> bilinear to H x W.

    Notes: 002 §5.1.5, §5.A.1. `aspp_rates` (6, 12, 18, 24) are the atrous rates of the four score branches;
    `merge='concat'` is the notes' concatenate-then-1x1 reading of ASPP. The backbone is the registered ResNet
    `backbone` (`dilated_resnet`; `block`, `layers`, `widths`, `stem_width` override it). Returns scores
    [N, num_classes, H, W]; `forward_maps` also returns the backbone's stages and the output-stride scores.
    """

    def __init__(self, num_classes: int = 21, in_chans: int = 3, backbone: str = "resnet101", block: str | None = None,
                 layers: Sequence[int] | None = None, widths: Sequence[int] | None = None,
                 stem_width: int | None = None, output_stride: int = 8,
                 aspp_rates: Sequence[int] = (6, 12, 18, 24), merge: str = "sum"):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"DeepLab output_stride must be 8, 16 or 32; got {output_stride!r}")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.default_input_shape = (in_chans, 224, 224)
        overrides = dict(block=block, layers=layers, widths=widths, stem_width=stem_width)
        self.backbone = dilated_resnet(backbone, in_chans, output_stride,
                                       **{k: v for k, v in overrides.items() if v is not None})
        init_weights(self.backbone, conv="he_fan_out")
        self.aspp = ASPPv2(self.backbone.feature_info.channels()[-1], num_classes, aspp_rates, merge=merge)

    def forward_maps(self, x: Tensor) -> dict[str, Tensor]:
        """stage1 ... stageN (the backbone's outputs), scores (ASPP-v2, at the output stride), out (H x W)."""
        _check_images(self, x)
        feats = self.backbone(x)
        maps = {f"stage{i}": f for i, f in enumerate(feats, 1)}
        maps["scores"] = self.aspp(feats[-1])
        maps["out"] = F.interpolate(maps["scores"], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return maps

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_maps(x)["out"]


def _check_images(model: nn.Module, x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != model.in_chans:
        raise ConfigError(f"{type(model).__name__} expects images [N, {model.in_chans}, H, W]; got "
                          f"{tuple(x.shape)}. Set in_chans to the number of image channels.")


class DeepLabV3(nn.Module):
    """DeepLab v3: dilated ResNet -> ASPP -> 3x3 conv -> 1x1 classifier -> bilinear x output_stride. 002 §5.1.5.

    `aspp_rates` are the rates at the given `output_stride` (default (6, 12, 18) x 16 / output_stride). Returns
    scores [N, num_classes, H, W] for any H x W; `forward_maps` returns the intermediate maps and the
    auxiliary scores. The backbone is the registered ResNet `backbone` read through the backbone contract
    (`dilated_resnet`); `block`, `layers`, `widths`, `stem_width` override its configuration. `norm_layer` (a name or
    class, `dlkit.nn.norm`) and `act_layer` replace BN and ReLU in the backbone, ASPP and heads.
    """

    def __init__(self, num_classes: int = 21, in_chans: int = 3, backbone: str = "resnet50", block: str | None = None,
                 layers: Sequence[int] | None = None, widths: Sequence[int] | None = None,
                 stem_width: int | None = None, output_stride: int = 8, aspp_rates: Sequence[int] | None = None,
                 aspp_chans: int = 256, dropout: float = 0.1, aux: bool = False, separable: bool = False,
                 norm_layer="batch", act_layer="relu"):
        super().__init__()
        self.layer_kw = layer = dict(norm_layer=norm_layer, act_layer=act_layer)
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"DeepLab output_stride must be 8, 16 or 32; got {output_stride!r}")
        if aspp_rates is None:
            aspp_rates = tuple(r * 16 // output_stride for r in (6, 12, 18))
        self.num_classes, self.in_chans = num_classes, in_chans
        self.default_input_shape = (in_chans, 224, 224)
        overrides = dict(block=block, layers=layers, widths=widths, stem_width=stem_width)
        self.backbone = dilated_resnet(backbone, in_chans, output_stride,
                                       **{k: v for k, v in overrides.items() if v is not None}, **layer)
        chans = self.backbone.feature_info.channels()
        self.aspp = ASPP(chans[-1], aspp_chans, aspp_rates, dropout=dropout, separable=separable, **layer)
        self._build_head(num_classes, aspp_chans, separable)
        if aux and len(chans) < 2:
            raise ConfigError(f"the auxiliary head reads the second-to-last stage; the backbone has {len(chans)}")
        self.aux_head = nn.Sequential(ConvBNAct(chans[-2], chans[-2] // 4, 3, **layer), nn.Dropout(0.1),
                                      nn.Conv2d(chans[-2] // 4, num_classes, 1)) if aux else None
        self.reset_parameters()

    def _build_head(self, num_classes: int, chans: int, separable: bool) -> None:
        self.head = nn.Sequential(atrous_conv(chans, chans, 1, separable, **self.layer_kw),
                                  nn.Conv2d(chans, num_classes, 1))

    def _classifiers(self) -> list[nn.Conv2d]:
        return [self.head[-1]] + ([self.aux_head[-1]] if self.aux_head is not None else [])

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Kaiming normal (fan_out) convolutions, BN (1, 0), classifiers N(0, 0.01^2) with zero bias."""
        init_weights(self, conv="he_fan_out")
        for conv in self._classifiers():
            nn.init.normal_(conv.weight, 0.0, 0.01)

    @property
    def output_stride(self) -> int:
        """Stride of the backbone's last feature map (8 or 16)."""
        return self.backbone.stages.output_stride

    def set_output_stride(self, output_stride: int) -> None:
        """Switch the output stride in place (curriculum OS 16 -> 8), rescaling the ASPP rates by old / new."""
        old = self.output_stride
        rates = [r * old / output_stride for r in self.aspp.rates]
        if any(r != int(r) for r in rates):
            raise ConfigError(f"ASPP rates {self.aspp.rates} at output stride {old} do not scale to integers at "
                              f"{output_stride}; got {rates}")
        self.backbone.stages.set_output_stride(output_stride)
        self.aspp.set_rates([int(r) for r in rates])

    def _check_input(self, x: Tensor) -> None:
        _check_images(self, x)

    def _decode(self, maps: dict[str, Tensor]) -> Tensor:
        return self.head(maps["aspp"])

    def forward_maps(self, x: Tensor) -> dict[str, Tensor]:
        """stage1 ... stageN (the backbone's outputs), aspp, scores (at the output stride), out (H x W) and,
        with aux, aux (the auxiliary head's scores at H x W)."""
        self._check_input(x)
        size = x.shape[-2:]
        feats = self.backbone(x)
        maps = {f"stage{i}": f for i, f in enumerate(feats, 1)}
        maps["aspp"] = self.aspp(feats[-1])
        maps["scores"] = self._decode(maps)
        maps["out"] = F.interpolate(maps["scores"], size=size, mode="bilinear", align_corners=False)
        if self.aux_head is not None:
            maps["aux"] = F.interpolate(self.aux_head(feats[-2]), size=size, mode="bilinear", align_corners=False)
        return maps

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_maps(x)["out"]


class DeepLabV3Plus(DeepLabV3):
    """DeepLab v3+: the v3 encoder (dilated ResNet + ASPP) and a decoder. Notes: 002 §5.1.5.

    Decoder: the ASPP map upsampled (bilinear, x4 at output stride 16) to the first stage's stride-4 features,
    reduced by a 1x1 conv + BN + ReLU to `low_chans` (48) channels, concatenated, two 3x3 convs of
    `aspp_chans` with BN + ReLU, a 1x1 classifier; the scores are upsampled x4 to the input size.
    """

    def __init__(self, num_classes: int = 21, in_chans: int = 3, output_stride: int = 16, low_chans: int = 48,
                 **kw):
        self.low_chans = low_chans
        super().__init__(num_classes, in_chans, output_stride=output_stride, **kw)
        if self.backbone.stages.stage_strides[0] != 4:
            raise ConfigError(f"DeepLab v3+ reads stride-4 features from the first stage; it has stride "
                              f"{self.backbone.stages.stage_strides[0]}")

    def _build_head(self, num_classes: int, chans: int, separable: bool) -> None:
        self.head = None
        layer = self.layer_kw
        self.reduce = ConvBNAct(self.backbone.feature_info.channels()[0], self.low_chans, 1, **layer)
        self.decoder = nn.Sequential(atrous_conv(chans + self.low_chans, chans, 1, separable, **layer),
                                     atrous_conv(chans, chans, 1, separable, **layer), nn.Conv2d(chans, num_classes, 1))

    def _classifiers(self) -> list[nn.Conv2d]:
        return [self.decoder[-1]] + ([self.aux_head[-1]] if self.aux_head is not None else [])

    def _decode(self, maps: dict[str, Tensor]) -> Tensor:
        low = maps["low"] = self.reduce(maps["stage1"])
        up = maps["aspp_up"] = F.interpolate(maps["aspp"], size=low.shape[-2:], mode="bilinear",
                                             align_corners=False)
        return self.decoder(torch.cat([up, low], dim=1))


# ----------------------------------------------------------------------------- registered configurations

TINY = dict(backbone="resnet18", layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), stem_width=16, aspp_chans=48)


def _tiny(cls: type[DeepLabV3], kw: dict, **defaults) -> DeepLabV3:
    model = cls(**(TINY | defaults | kw))
    model.default_input_shape = (model.in_chans, 96, 128)
    return model


@register_model(input_size=(3, 224, 224), num_params=42_004_074 - 2_365_205,
                params_source="torchvision (42,004,074) without its auxiliary head (2,365,205 by hand)")
def deeplabv3_resnet50(**kw) -> DeepLabV3:
    """DeepLab v3, ResNet-50 at output stride 8, 21 classes: 39,638,869 parameters (42,004,074 with aux=True).

    Notes: 002 §5.1.5.
    """
    return DeepLabV3(**kw)


@register_model(input_size=(3, 224, 224), num_params=60_996_202 - 2_365_205,
                params_source="torchvision (60,996,202) without its auxiliary head (2,365,205 by hand)")
def deeplabv3_resnet101(**kw) -> DeepLabV3:
    """DeepLab v3, ResNet-101 at output stride 8, 21 classes: 58,630,997 parameters (60,996,202 with aux=True).

    Notes: 002 §5.1.5.
    """
    return DeepLabV3(**(dict(backbone="resnet101") | kw))


@register_model(input_size=(3, 224, 224), num_params=40_352_181,
                params_source="by hand: torchvision resnet50 without fc + ASPP + the v3+ decoder")
def deeplabv3plus_resnet50(**kw) -> DeepLabV3Plus:
    """DeepLab v3+, ResNet-50 at output stride 16, 21 classes: 40,352,181 parameters (derived, not published).

    Notes: 002 §5.1.5.
    """
    return DeepLabV3Plus(**kw)


@register_model(input_size=(3, 224, 224), num_params=44_048_532,
                params_source="by hand: torchvision resnet101 without fc (42,500,160) + ASPP-v2 4 x 387,093")
def deeplabv2_resnet101(**kw) -> DeepLabV2:
    """DeepLab v2, ResNet-101 at output stride 8, ASPP-v2 rates (6, 12, 18, 24) summed, 21 classes (PASCAL VOC):
    44,048,532 parameters (derived, see the module). Notes: 002 §5.1.5, §5.A.1."""
    return DeepLabV2(**kw)


@register_model(input_size=(3, 96, 128))
def deeplabv2_tiny(**kw) -> DeepLabV2:
    """A CPU-sized DeepLab v2: the tiny basic-block backbone 16-32-64-128 at output stride 8, ASPP-v2 at rates
    (2, 4, 6, 8) (the paper's rates scaled to its 12 x 16 maps of 96 x 128 images), 11 classes (CamVid):
    360,188 parameters.

    Notes: 002 §5.1.5, §5.A.1.
    """
    tiny = {k: v for k, v in TINY.items() if k != "aspp_chans"}
    model = DeepLabV2(**(tiny | dict(num_classes=11, aspp_rates=(2, 4, 6, 8)) | kw))
    model.default_input_shape = (model.in_chans, 96, 128)
    return model


@register_model(input_size=(3, 96, 128))
def deeplabv3_tiny(**kw) -> DeepLabV3:
    """A CPU-sized DeepLab v3: basic blocks 16-32-64-128, output stride 8, ASPP 48 channels at rates (2, 4, 6)
    (the full rates scaled to its 12 x 16 maps of 96 x 128 images), 11 classes (CamVid): 521,099 parameters.

    Notes: 002 §5.1.5.
    """
    return _tiny(DeepLabV3, kw, num_classes=11, output_stride=8, aspp_rates=(2, 4, 6))


@register_model(input_size=(3, 96, 128))
def deeplabv3plus_tiny(**kw) -> DeepLabV3Plus:
    """A CPU-sized DeepLab v3+: the tiny backbone at output stride 16, ASPP 48 at rates (1, 2, 3), 16 low-level
    channels, 11 classes: 549,131 parameters. Notes: 002 §5.1.5."""
    return _tiny(DeepLabV3Plus, kw, num_classes=11, output_stride=16, aspp_rates=(1, 2, 3), low_chans=16)
