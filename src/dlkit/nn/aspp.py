"""Spatial pyramid pooling (SPP) and atrous spatial pyramid pooling (ASPP) (Notes: 002 §5.A, §5.A.1, §5.A.2).

SPP (He et al. 2014) max-pools a feature map of any size into fixed n x n grids (window size ~ H / n) and
concatenates the flattened grids: a fixed-length vector, an extension of global pooling that keeps some layout.
ASPP applies the same multi-scale idea with parallel atrous (dilated) convolutions at several rates on one map:

- DeepLab v2 (§5.A.1): 3x3 atrous convolutions at rates 6, 12, 18, 24 predict class scores per branch; the
  scores are summed (the paper's ASPP-S on ResNet-101). The notes describe concatenation followed by a 1x1
  convolution; that variant is `merge='concat'`. At large rates most taps fall on the zero padding (`valid_taps`):
  once r >= the map size only the centre tap remains and the 3x3 convolution degenerates to a 1x1.
- DeepLab v3 (§5.A.2): a 1x1 convolution, three 3x3 atrous convolutions (rates 6, 12, 18 at output stride 16,
  doubled to 12, 24, 36 at output stride 8) and an image-pooling branch (global average pooling -> 1x1 ->
  bilinear upsampling, which supplies the context that very large rates cannot), each with 256 channels and
  BN + ReLU, concatenated and projected by a 1x1 convolution with BN + ReLU and dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .conv_bn_act import ConvBNAct

MERGES = ("sum", "concat")


def _check_map(x: Tensor, what: str) -> None:
    if x.dim() != 4:
        raise ConfigError(f"{what} expects feature maps [N, C, H, W]; got shape {tuple(x.shape)}")


def _check_rates(rates: Sequence[int], what: str) -> tuple[int, ...]:
    rates = tuple(rates)
    if not rates or any(not isinstance(r, int) or r < 1 for r in rates):
        raise ConfigError(f"{what} rates must be integers >= 1, e.g. (6, 12, 18); got {rates}")
    return rates


class SpatialPyramidPooling(nn.Module):
    """SPP layer: max-pool into n x n grids for each level n, flatten, concatenate. Notes: 002 §5.A.

    Output [N, C sum_n n^2] for any H x W (adaptive max pooling, bins [floor(i H / n), ceil((i + 1) H / n))); the
    1 x 1 level is global max pooling. `mode='avg'` averages instead. Each level is flattened channel-major.
    """

    def __init__(self, levels: Sequence[int] = (1, 2, 4), mode: str = "max"):
        super().__init__()
        if not levels or any(not isinstance(n, int) or n < 1 for n in levels):
            raise ConfigError(f"SPP levels are grid sizes >= 1, e.g. (1, 2, 4) or (1, 2, 3, 6); got {levels}")
        if mode not in ("max", "avg"):
            raise ConfigError(f"SPP mode must be 'max' or 'avg'; got {mode!r}")
        self.levels, self.mode = tuple(levels), mode

    def out_features(self, chans: int) -> int:
        """Length of the output vector for `chans` input channels: C sum_n n^2."""
        return chans * sum(n * n for n in self.levels)

    def forward(self, x: Tensor) -> Tensor:
        _check_map(x, "SpatialPyramidPooling")
        pool = F.adaptive_max_pool2d if self.mode == "max" else F.adaptive_avg_pool2d
        return torch.cat([pool(x, n).flatten(1) for n in self.levels], dim=1)


def valid_taps(height: int, width: int, rate: int, kernel_size: int = 3) -> Tensor:
    """How many taps of a k x k kernel at rate r land inside an H x W map, per output pixel. Notes: 002 §5.A.1.

    The 'same'-padded atrous convolution of an all-ones map with an all-ones kernel; with r >= max(H, W) every
    entry is 1 (only the centre tap is valid, the 3x3 kernel acts as a 1x1).
    """
    if height < 1 or width < 1 or rate < 1 or kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"need H, W, rate >= 1 and an odd kernel_size; got H={height}, W={width}, rate={rate}, "
                          f"kernel_size={kernel_size}")
    ones = torch.ones(1, 1, height, width)
    kernel = torch.ones(1, 1, kernel_size, kernel_size)
    return F.conv2d(ones, kernel, padding=rate * (kernel_size - 1) // 2, dilation=rate)[0, 0].round().long()


def atrous_conv(in_chans: int, out_chans: int, rate: int = 1, separable: bool = False, norm_layer="batch",
                act_layer="relu") -> nn.Sequential:
    """3x3 atrous conv (padding r, dilation r) + BN + ReLU; `separable`: depth-wise atrous 3x3 + BN + ReLU, then
    point-wise 1x1 + BN + ReLU (DeepLab v3+). Notes: 002 §5.1.5. `norm_layer`/`act_layer` replace BN/ReLU."""
    layer = dict(norm_layer=norm_layer, act_layer=act_layer)
    if not separable:
        return ConvBNAct(in_chans, out_chans, 3, dilation=rate, **layer)
    return nn.Sequential(ConvBNAct(in_chans, in_chans, 3, groups=in_chans, dilation=rate, **layer),
                         ConvBNAct(in_chans, out_chans, 1, **layer))


def _set_rate(branch: nn.Module, rate: int) -> None:
    conv = next(m for m in branch.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))
    conv.dilation, conv.padding = (rate, rate), tuple((k - 1) // 2 * rate for k in conv.kernel_size)


class ASPPv2(nn.Module):
    """DeepLab v2 ASPP: parallel 3x3 atrous convolutions (rates 6, 12, 18, 24), summed. Notes: 002 §5.A.1.

    y = sum_r W_r *_r x + b_r, each branch predicting `out_chans` (class) scores, as the original (ASPP-S on
    ResNet-101). `merge='concat'` is the notes' description: concatenate the branches and mix them with a 1x1
    convolution. H x W is kept ('same' padding r).
    """

    def __init__(self, in_chans: int, out_chans: int, rates: Sequence[int] = (6, 12, 18, 24), merge: str = "sum"):
        super().__init__()
        if merge not in MERGES:
            raise ConfigError(f"ASPPv2 merge must be one of {MERGES} (the paper sums, the notes concatenate); "
                              f"got {merge!r}")
        self.rates, self.merge = _check_rates(rates, "ASPPv2"), merge
        self.branches = nn.ModuleList(nn.Conv2d(in_chans, out_chans, 3, padding=r, dilation=r) for r in self.rates)
        self.project = nn.Conv2d(len(self.rates) * out_chans, out_chans, 1) if merge == "concat" else None
        for conv in self.branches:  # DeepLab initialises its score layers N(0, 0.01^2)
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        _check_map(x, "ASPPv2")
        outs = [branch(x) for branch in self.branches]
        if self.project is None:
            return torch.stack(outs).sum(0)
        return self.project(torch.cat(outs, dim=1))


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average pooling -> 1x1 conv + BN + ReLU -> bilinear upsampling to H x W.

    Notes: 002 §5.A.2. The output is constant over H x W. Its BN sees one value per channel and image, so
    training needs batches of 2 or more images (as in torchvision; a ConfigError says so). Instance norm is refused:
    on a 1x1 map it would output the constant beta.
    """

    def __init__(self, in_chans: int, out_chans: int, norm_layer="batch", act_layer="relu"):
        super().__init__()
        self.conv = ConvBNAct(in_chans, out_chans, 1, norm_layer=norm_layer, act_layer=act_layer)
        norm = self.conv[1] if len(self.conv) > 1 else None
        if isinstance(norm, nn.InstanceNorm2d):
            raise ConfigError("ASPP's image-pooling branch normalises a 1x1 map, which instance norm turns into the "
                              "constant beta; use norm_layer='batch' or 'group', or image_pooling=False")
        self.batch_stats = isinstance(norm, nn.modules.batchnorm._BatchNorm)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.batch_stats and x.shape[0] < 2:
            raise ConfigError(f"ASPP's image-pooling branch normalises one value per channel and image, so training "
                              f"needs batches of 2 or more images; got a batch of {x.shape[0]}. Use a larger batch "
                              f"or drop_last=True in the data loader, or call model.eval() for inference.")
        y = self.conv(F.adaptive_avg_pool2d(x, 1))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """DeepLab v3 ASPP: [1x1, 3x3 atrous at each rate, image pooling] -> concat -> 1x1 + BN + ReLU -> dropout.

    Notes: 002 §5.A.2. Every branch has `out_chans` channels with BN + ReLU and keeps H x W, so there are
    len(rates) + 2 branches and the concatenation has (len(rates) + 2) out_chans channels. The rates are
    (6, 12, 18) at output stride 16 and (12, 24, 36) at output stride 8 (`set_rates` changes them in place).
    `dropout` is 0.1 as in the official code (torchvision uses 0.5); `separable` uses depth-wise separable
    atrous convolutions (DeepLab v3+). `norm_layer` and `act_layer` replace BN and ReLU in every branch.
    """

    def __init__(self, in_chans: int, out_chans: int = 256, rates: Sequence[int] = (6, 12, 18),
                 dropout: float = 0.1, image_pooling: bool = True, separable: bool = False, norm_layer="batch",
                 act_layer="relu"):
        super().__init__()
        self.rates = _check_rates(rates, "ASPP")
        layer = dict(norm_layer=norm_layer, act_layer=act_layer)
        branches: list[nn.Module] = [ConvBNAct(in_chans, out_chans, 1, **layer)]
        branches += [atrous_conv(in_chans, out_chans, r, separable, **layer) for r in self.rates]
        if image_pooling:
            branches.append(ImagePooling(in_chans, out_chans, **layer))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(ConvBNAct(len(branches) * out_chans, out_chans, 1, **layer), nn.Dropout(dropout))
        self.out_chans = out_chans

    def set_rates(self, rates: Sequence[int]) -> None:
        """Change the atrous rates in place (same parameters), e.g. doubled for output stride 8. 002 §5.1.5."""
        rates = _check_rates(rates, "ASPP")
        if len(rates) != len(self.rates):
            raise ConfigError(f"ASPP has {len(self.rates)} atrous branches (rates {self.rates}); got "
                              f"{len(rates)} rates {rates}")
        for branch, r in zip(self.branches[1:], rates):
            _set_rate(branch, r)
        self.rates = rates

    def branch_outputs(self, x: Tensor) -> list[Tensor]:
        """The branches' maps [N, out_chans, H, W], in order 1x1, atrous rates..., image pooling."""
        _check_map(x, "ASPP")
        return [branch(x) for branch in self.branches]

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat(self.branch_outputs(x), dim=1))
