"""Fully convolutional networks FCN-32s / 16s / 8s (Long, Shelhamer and Darrell, 2015; Notes: 000 §3.11.1,
002 §5.1.3-§5.1.4, 003 §4.1).

Convolutionalisation: the dense layers of a classifier become convolutions (VGG-16's fc6 on the 7x7x512 map a 7x7
convolution, fc7 a 1x1 one; `dlkit.techniques.transfer.convolutionalize` does it for any dense layer), so the
network takes any image and returns a coarse map of class scores at stride 32. A 1x1 scoring layer gives one
channel per class and learned upsampling (transposed convolutions initialised to bilinear interpolation,
`dlkit.nn.upsample.BilinearUpsample`) brings the scores back to the input size. Skips refine the coarse map:

- FCN-32s: score(conv7) upsampled x32.
- FCN-16s: score(conv7) upsampled x2 (learned), merged with score(pool4) at stride 16, upsampled x16.
- FCN-8s: that merge upsampled x2 (learned), merged with score(pool3) at stride 8, upsampled x8.

`merge='sum'` adds the score maps, as the paper does; `merge='concat'` concatenates them, as the notes describe
(000 §3.11.1 Fig. 3.17; its "pool14"/"pool13" are pool4/pool3), and a 1x1 convolution initialised to [I I] mixes
the 2K channels back to K, so at initialisation it equals the sum. (Mixing before upsampling equals upsampling the
concatenation then mixing while the upsampler is bilinear, the same for every channel.) As in the paper the skip scorers
start at zero, so a new FCN-16s/8s starts with the predictions of FCN-32s, the intermediate upsamplers are learned
from bilinear, the final one is fixed bilinear (`learn_final_upsample` changes that).

Departure from the paper: the original pads conv1_1 by 100 pixels, applies fc6 without padding and crops the
upsampled scores ("Crop" layers) to align them. Here every 3x3 convolution and conv6 use "same" padding, so the
stride-s maps are exactly (H/s) x (W/s) and no cropping is needed; H and W must be multiples of 32 (a ConfigError
says so), or `pad_input=True` zero-pads the bottom/right to the next multiple and crops the output back to H x W.

Parameter counts (21 PASCAL VOC classes; the paper's "134M"), weights + biases of the convolutions:
backbone (VGG-16's 13 convolutions, = vgg16.features) 14,714,688; conv6 7x7 512->4096: 25,088 x 4,096 + 4,096 =
102,764,544; conv7 1x1: 4,096 x 4,096 + 4,096 = 16,781,312; score 4,096 x 21 + 21 = 86,037 -> FCN-32s 134,346,581.
score_pool4 512 x 21 + 21 = 10,773, score_pool3 256 x 21 + 21 = 5,397; each learned x2 upsampler is a 4x4
transposed convolution 21 -> 21 without bias, 7,056; the final upsampler is a frozen per-channel bilinear kernel
(21 x 2s x 2s weights that are not learned: 86,016 / 21,504 / 5,376 for s = 32 / 16 / 8). Learned parameters:
FCN-16s 134,346,581 + 10,773 + 7,056 = 134,364,410; FCN-8s 134,364,410 + 5,397 + 7,056 = 134,376,863.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.conv_bn_act import ConvBNAct
from ...nn.init import init_weights
from ...nn.upsample import BilinearUpsample
from ...registry import register_model
from ..backbone import FeatureInfo

VARIANTS = {"32s": 32, "16s": 16, "8s": 8}  # stride of the last merged map
MERGES = ("sum", "concat")
VGG16_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))  # VGG config D


class FCN(nn.Module):
    """FCN-32s/16s/8s: VGG-style backbone, convolutionalised fc6/fc7, 1x1 scorers, skip merges, learned upsampling.

    Notes: 000 §3.11.1, 002 §5.1.3. `widths` lists the 3x3 conv widths of the five stages, each ending in a 2x2
    max-pool (pool1 ... pool5 at strides 2 ... 32); conv6 has `fc_kernel` x `fc_kernel` kernels and `fc_width`
    channels, conv7 is 1x1, both with ReLU and dropout. Returns scores [N, num_classes, H, W];
    `forward_maps` returns every intermediate map by name.

    `backbone` replaces the VGG stages by a classifier's feature extractor giving three maps at strides 8, 16, 32
    (`create_model(name, features_only=True, out_indices=...)`, its `feature_info` saying their channels), which
    take the places of pool3, pool4, pool5 (an ImageNet-trained classifier's stages: the notes' "fine-tuning the
    backbone matters"); `fc_width=0` scores pool5 directly (no conv6/conv7). `norm_layer` (a name or class,
    `dlkit.nn.norm`) normalises the VGG stages' convolutions (`batch_norm=True` is `norm_layer='batch'`) and
    `act_layer` replaces their ReLU.
    """

    def __init__(self, num_classes: int = 21, variant: str = "8s", merge: str = "sum", in_chans: int = 3,
                 widths: Sequence[Sequence[int]] = VGG16_WIDTHS, fc_width: int = 4096, fc_kernel: int = 7,
                 dropout: float = 0.5, batch_norm: bool = False, learn_final_upsample: bool = False,
                 pad_input: bool = False, backbone: nn.Module | None = None, norm_layer=None, act_layer="relu"):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"FCN variant must be one of {sorted(VARIANTS)}; got {variant!r}")
        if merge not in MERGES:
            raise ConfigError(f"FCN merge must be one of {MERGES} (the paper sums, the notes concatenate); "
                              f"got {merge!r}")
        if len(widths) != 5 or any(len(w) < 1 or min(w) < 1 for w in widths):
            raise ConfigError(f"FCN widths lists the conv widths of 5 stages (pool3, pool4, pool5 end stages 3-5), "
                              f"each with at least one positive width; got {widths}")
        if fc_kernel < 1 or fc_kernel % 2 == 0:
            raise ConfigError(f"FCN fc_kernel must be odd ('same' padding keeps the stride-32 map); got {fc_kernel}")
        self.num_classes, self.variant, self.merge = num_classes, variant, merge
        self.in_chans, self.pad_input, self.stride = in_chans, pad_input, 32
        self.default_input_shape = (in_chans, 224, 224)
        self.backbone = backbone
        if backbone is not None:
            info = getattr(backbone, "feature_info", None)
            if not isinstance(info, FeatureInfo) or info.reductions() != [8, 16, 32]:
                got = info.reductions() if isinstance(info, FeatureInfo) else type(backbone).__name__
                raise ConfigError(f"an FCN backbone is a feature extractor of three maps at strides [8, 16, 32] "
                                  f"(pool3, pool4, pool5), e.g. create_model(name, features_only=True, "
                                  f"out_indices=...); got strides {got}")
            c3, c4, chans = info.channels()
            self.stages, out_chans = nn.ModuleList(), {"pool3": c3, "pool4": c4}
        else:
            stages, chans = [], in_chans
            for stage in widths:
                layers: list[nn.Module] = []
                for w in stage:
                    layers.append(ConvBNAct(chans, w, 3, act_layer=act_layer, norm_layer=norm_layer if norm_layer
                                            is not None else ("batch" if batch_norm else None)))
                    chans = w
                stages.append(nn.Sequential(*layers, nn.MaxPool2d(2, 2)))
            self.stages = nn.ModuleList(stages)
            out_chans = {"pool3": widths[2][-1], "pool4": widths[3][-1]}
        if fc_width:
            self.conv6 = nn.Sequential(nn.Conv2d(chans, fc_width, fc_kernel, padding=fc_kernel // 2),
                                       nn.ReLU(inplace=True), nn.Dropout(dropout))
            self.conv7 = nn.Sequential(nn.Conv2d(fc_width, fc_width, 1), nn.ReLU(inplace=True),
                                       nn.Dropout(dropout))
        else:
            self.conv6, self.conv7 = nn.Identity(), nn.Identity()
        k = num_classes
        self.score = nn.Conv2d(fc_width or chans, k, 1)
        skips = {"32s": [], "16s": ["pool4"], "8s": ["pool4", "pool3"]}[variant]
        self.skips = skips
        self.score_skip = nn.ModuleDict({s: nn.Conv2d(out_chans[s], k, 1) for s in skips})
        # x2 to the skip's stride: learned, a full K x K kernel initialised diagonal (FCN's form)
        self.up_skip = nn.ModuleDict({s: BilinearUpsample(k, 2, depthwise=False) for s in skips})
        self.fuse = nn.ModuleDict({s: nn.Conv2d(2 * k, k, 1) for s in skips} if merge == "concat" else {})
        # to the input size: per channel (depthwise), fixed bilinear unless learn_final_upsample
        self.upsample = BilinearUpsample(k, VARIANTS[variant], learnable=learn_final_upsample)
        self._init_weights()

    def _init_weights(self) -> None:
        # He init (fan_out) as VGG; replaced by `load_classifier`
        init_weights([self.stages, self.conv6, self.conv7], conv="he_fan_out")
        # the paper zero-initialises the scorer too; that only works from a pretrained backbone (no gradient
        # reaches it on the first step otherwise), so it gets N(0, 0.01^2) here
        nn.init.normal_(self.score.weight, 0.0, 0.01)
        nn.init.zeros_(self.score.bias)
        for conv in self.score_skip.values():  # zero: a new skip leaves the coarser net's predictions unaltered
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        k = self.num_classes
        for conv in self.fuse.values():  # [I I]: the concatenation mixed back to K channels is the sum
            with torch.no_grad():
                conv.weight.copy_(torch.eye(k).repeat(1, 2).view(k, 2 * k, 1, 1))
            nn.init.zeros_(conv.bias)

    @torch.no_grad()
    def load_classifier(self, features: nn.Module, fc6: nn.Module, fc7: nn.Module) -> FCN:
        """Initialise the backbone, conv6 and conv7 from a trained classifier (VGG's `features`, `classifier[0]`
        and `classifier[3]`); dense layers are convolutionalised by reshaping W [out, C h w] to [out, C, h, w].

        Notes: 000 §3.11.1. The convolutions of `features` are copied in order; with VGG's 7x7 adaptive pool the
        classifier's first dense layer reads a flattened C x 7 x 7 map, which is conv6 with a 7x7 kernel.
        """
        if self.backbone is not None:
            raise ConfigError("load_classifier fills the VGG backbone; this FCN was built on its own `backbone`")
        src = [m for m in features.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
        dst = [m for m in self.stages.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
        shapes = lambda ms: [tuple(t.shape) for m in ms for t in m.state_dict().values()]
        if shapes(src) != shapes(dst):
            raise ConfigError(f"the classifier's convolutions do not match the FCN backbone: expected "
                              f"{shapes(dst)}, got {shapes(src)}; build the FCN with the classifier's widths")
        for s, d in zip(src, dst):
            d.load_state_dict(s.state_dict())
        for layer, conv in ((fc6, self.conv6[0]), (fc7, self.conv7[0])):
            if layer.weight.numel() != conv.weight.numel() or layer.bias is None:
                raise ConfigError(f"a dense layer with weight {tuple(layer.weight.shape)} and a bias cannot become "
                                  f"the convolution {tuple(conv.weight.shape)}: expected "
                                  f"[{conv.out_channels}, {conv.weight[0].numel()}]")
            conv.weight.copy_(layer.weight.reshape(conv.weight.shape))
            conv.bias.copy_(layer.bias)
        return self

    def forward_maps(self, x: Tensor) -> dict[str, Tensor]:
        """Every named map: pool1 ... pool5 (strides 2 ... 32), conv7 and score (stride 32), for each skip s the
        upsampled coarse scores `up_s`, the skip scores `score_s`, the merge `merged_s` (2K channels before the 1x1
        mix with merge='concat') and `fused_s` (K channels), then `out` at the input size."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(f"FCN expects images [N, {self.in_chans}, H, W]; got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.stride or w % self.stride:
            if not self.pad_input:
                raise ConfigError(f"FCN needs H and W divisible by {self.stride} (five 2x2 max-pools); got {h}x{w}. "
                                  f"Resize or crop the input, or build the model with pad_input=True to zero-pad "
                                  f"it to {-(-h // 32) * 32}x{-(-w // 32) * 32} and crop the output back")
            x = F.pad(x, (0, -w % self.stride, 0, -h % self.stride))
        maps: dict[str, Tensor] = {}
        if self.backbone is not None:
            maps.update(zip(("pool3", "pool4", "pool5"), self.backbone(x)))
            x = maps["pool5"]
        for i, stage in enumerate(self.stages, 1):
            x = maps[f"pool{i}"] = stage(x)
        maps["conv7"] = self.conv7(self.conv6(x))
        y = maps["score"] = self.score(maps["conv7"])
        for s in self.skips:
            up = maps[f"up_{s}"] = self.up_skip[s](y)
            skip = maps[f"score_{s}"] = self.score_skip[s](maps[s])
            if self.merge == "sum":
                y = maps[f"merged_{s}"] = maps[f"fused_{s}"] = up + skip
            else:
                merged = maps[f"merged_{s}"] = torch.cat([up, skip], dim=1)
                y = maps[f"fused_{s}"] = self.fuse[s](merged)
        maps["out"] = self.upsample(y)[..., :h, :w]
        return maps

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_maps(x)["out"]


def _fcn(variant: str, kw: dict) -> FCN:
    return FCN(**{"variant": variant, **kw})


@register_model(input_size=(3, 224, 224), num_params=134_346_581,
                params_source="by hand: torchvision VGG-16 features + conv6 + conv7 + scorer (learned)")
def fcn32s_vgg16(**kw) -> FCN:
    """FCN-32s on VGG-16, 21 classes (PASCAL VOC): 134,346,581 learned parameters. Notes: 002 §5.1.3."""
    return _fcn("32s", kw)


@register_model(input_size=(3, 224, 224), num_params=134_364_410,
                params_source="by hand: FCN-32s + the pool4 scorer and x2 upsampling (learned)")
def fcn16s_vgg16(**kw) -> FCN:
    """FCN-16s on VGG-16, 21 classes (PASCAL VOC): 134,364,410 learned parameters. Notes: 002 §5.1.3."""
    return _fcn("16s", kw)


@register_model(input_size=(3, 224, 224), num_params=134_376_863,
                params_source="by hand: FCN-16s + the pool3 scorer and x2 upsampling (learned)")
def fcn8s_vgg16(**kw) -> FCN:
    """FCN-8s on VGG-16, 21 classes (PASCAL VOC): 134,376,863 learned parameters. Notes: 002 §5.1.3."""
    return _fcn("8s", kw)


@register_model(input_size=(3, 64, 64))
def fcn8s_tiny(**kw) -> FCN:
    """A CPU-sized FCN-8s: one BN conv per stage (16-32-64-96-128), conv6 3x3x128, conv7 1x1x128, 64x64 inputs.

    Notes: 002 §5.1.3.
    """
    kw = {"widths": ((16,), (32,), (64,), (96,), (128,)), "fc_width": 128, "fc_kernel": 3, "dropout": 0.1,
          "batch_norm": True, **kw}
    model = _fcn("8s", kw)
    model.default_input_shape = (model.in_chans, 64, 64)
    return model
