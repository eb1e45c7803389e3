"""Residual connections and the ResNet blocks (Notes: 000 §3.5, 002 §2.2, §2.2.1, §2.3, §2.4, §2.6.1).

A residual block outputs F(x; theta) + x: the identity costs no parameters and is learned by F -> 0, and the
gradient reaches early layers through the sum. The skip is added before the final ReLU (002 §2.2), so the block
can perturb the identity in both directions. When a block changes the shape (stride 2, more channels) the skip
is either option A, parameter-free (subsample and append zero channels), or option B, a 1x1 projection with BN
(He et al. 2016 §3.3).

`BasicBlock` is two 3x3 convolutions (ResNet-18/34, CIFAR ResNets, and with `preact=True` the pre-activation
block of Wide ResNet, BN-ReLU-conv twice with optional dropout between). `Bottleneck` is 1x1 (compress) ->
3x3 -> 1x1 (expand x4); with `groups` = cardinality G and `base_width` = d it is the ResNeXt block in its
grouped-convolution form (002 §2.3; the split-branch forms are in `dlkit.nn.resnext`), with `base_width=128`
the Wide ResNet-50-2 block. `se_reduction=r` inserts squeeze-and-excitation on the residual branch before the
addition (SE-ResNet, 002 §2.4, Fig. 2.5).

Dilated ResNet (002 §5.1.5): `dilation=r` dilates the blocks' 3x3 convolutions, and `set_stride_dilation` turns a
block's stride into dilation in place (same parameters). `ResNetStages` builds the stages of a ResNet and sets its
output stride (32, 16 or 8 for ImageNet ResNets), as torchvision's `replace_stride_with_dilation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .activations import get_act_layer, inplace_
from .conv_bn_act import ConvBNAct
from .norm import get_norm_layer
from .squeeze_excitation import SqueezeExcitation

SHORTCUTS = ("A", "B")


class Residual(nn.Module):
    """A residual connection around any module. Notes: 000 §3.5. y = F(x) + x, or [F(x), x] with merge='concat'.

    The sum needs F(x) and x of the same shape; the concatenation (the notes' alternative) stacks them along
    the channel axis (dim 1), giving C_F + C_x channels.
    """

    def __init__(self, fn: nn.Module, merge: str = "add"):
        super().__init__()
        if merge not in ("add", "concat"):
            raise ConfigError(f"Residual merge must be 'add' or 'concat'; got {merge!r}")
        self.fn, self.merge = fn, merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fx = self.fn(x)
        if self.merge == "concat":
            return torch.cat([fx, x], dim=1)
        if fx.shape != x.shape:
            raise ConfigError(f"Residual 'add' needs F(x) shaped like x {tuple(x.shape)}; got {tuple(fx.shape)}. "
                              "Use merge='concat' or a block that keeps the shape.")
        return fx + x


class PadShortcut(nn.Module):
    """Option A shortcut (Notes: 002 §2.2; He et al. 2016 §4.2): x[:, :, ::s, ::s] with zeros appended as channels.

    The zeros go after the input channels, as in the authors' Torch code (fb.resnet.torch).
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1):
        super().__init__()
        if out_chans < in_chans:
            raise ConfigError(f"option A shortcut can only add channels; got {in_chans} -> {out_chans}. "
                              "Use shortcut='B' (1x1 projection).")
        self.extra, self.stride = out_chans - in_chans, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


def make_shortcut(in_chans: int, out_chans: int, stride: int, kind: str = "B", norm_layer="batch") -> nn.Module:
    """The skip path (Notes: 002 §2.2): identity if the shape is kept, else option A (zero-pad) or B (BN(W_1x1 x)).

    `norm_layer` is the projection's normalisation (`dlkit.nn.norm`); None drops it (pre-activation blocks project
    the already normalised input).
    """
    if kind not in SHORTCUTS:
        raise ConfigError(f"shortcut must be one of {SHORTCUTS} (A: zero-padding identity, B: 1x1 projection); "
                          f"got {kind!r}")
    if in_chans == out_chans and stride == 1:
        return nn.Identity()
    if kind == "A":
        return PadShortcut(in_chans, out_chans, stride)
    conv = nn.Conv2d(in_chans, out_chans, 1, stride, bias=False)
    make_norm = get_norm_layer(norm_layer)
    return nn.Sequential(conv, make_norm(out_chans)) if make_norm is not None else nn.Sequential(conv)


def _check_dilation(dilation: int) -> None:
    if not isinstance(dilation, int) or dilation < 1:
        raise ConfigError(f"dilation must be an integer >= 1 (1: ordinary convolution); got {dilation!r}")


def _set_conv(conv: nn.Conv2d, stride: int | None = None, dilation: int | None = None) -> None:
    """Change a convolution's stride and/or dilation in place, keeping 'same' padding (k - 1) / 2 * dilation."""
    if stride is not None:
        conv.stride = (stride, stride)
    if dilation is not None:
        conv.dilation = (dilation, dilation)
        conv.padding = tuple((k - 1) // 2 * dilation for k in conv.kernel_size)


def _set_shortcut_stride(shortcut: nn.Module, stride: int) -> None:
    if isinstance(shortcut, PadShortcut):
        shortcut.stride = stride
    elif isinstance(shortcut, nn.Sequential):
        _set_conv(shortcut[0], stride)
    elif stride != 1:
        raise ConfigError(f"this block was built with an identity shortcut (stride 1, same channels), so it cannot "
                          f"get stride {stride}; build it with the stride it should downsample by")


def _se(chans: int, se_reduction: int | None, act_layer) -> nn.Module:
    if se_reduction is None:
        return nn.Identity()
    if se_reduction < 1:
        raise ConfigError(f"se_reduction must be a ratio >= 1 (16 in SENet); got {se_reduction}")
    return SqueezeExcitation(chans, max(1, chans // se_reduction), act_layer=act_layer)


def _act(act_layer):
    """The block's activation factory; a residual block needs one (the skip is added before it)."""
    make = get_act_layer(act_layer)
    if make is None:
        raise ConfigError("a residual block's act_layer cannot be None (its output is act(F(x) + x)); pass a name "
                          "such as 'relu' or a module class")
    return make


def add_skip(act: nn.Module, fx: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """act(F(x) + shortcut(x)), the merge of a post-activation residual block (Notes: 002 §2.2). With an in-place
    `act` (the default, as torchvision's blocks), F(x) (a norm's or convolution's fresh output, read by no backward)
    takes the sum in place too when the dtypes agree: the same values, two tensors per block less to allocate; a
    forward hook on the layer that made F(x) then sees it overwritten (`disable_inplace(model)` turns both off)."""
    if getattr(act, "inplace", False) and fx.dtype == skip.dtype:
        return act(fx.add_(skip))
    return act(fx + skip)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a skip. Notes: 002 §2.2.1. y = relu(BN(W2 relu(BN(W1 x))) + shortcut(x)).

    `preact=True` is the pre-activation form (He et al. 2016b; Wide ResNet, 002 §2.6.1):
    y = W2 dropout(relu(BN(W1 a))) + shortcut, a = relu(BN(x)); a projection shortcut then reads a (not x) and
    has no BN. `drop_rate` puts dropout between the two convolutions, as in Wide ResNet. `dilation` dilates both
    3x3 convolutions (dilated residual networks, Yu et al. 2017; Notes: 002 §5.1.5). `norm_layer` and
    `act_layer` replace BN and ReLU everywhere in the block (`dlkit.nn.norm`, `get_act_layer`).
    """

    expansion = 1

    def __init__(self, in_chans: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64,
                 se_reduction: int | None = None, shortcut: str = "B", preact: bool = False, drop_rate: float = 0.0,
                 act_layer="relu", dilation: int = 1, norm_layer="batch"):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ConfigError(f"BasicBlock has no groups/base_width (got groups={groups}, base_width={base_width}); "
                              "use block='bottleneck' for ResNeXt and wide bottlenecks")
        self.preact = preact
        _check_dilation(dilation)
        make_norm, make_act = get_norm_layer(norm_layer), _act(act_layer)
        layer = dict(act_layer=act_layer, norm_layer=norm_layer)
        if preact:
            self.bn1 = make_norm(in_chans) if make_norm is not None else nn.Identity()
            self.act1 = make_act()
            self.conv1 = ConvBNAct(in_chans, planes, 3, stride, dilation=dilation, **layer)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation=dilation, bias=False)
        else:
            self.conv1 = ConvBNAct(in_chans, planes, 3, stride, dilation=dilation, **layer)
            self.conv2 = ConvBNAct(planes, planes, 3, 1, dilation=dilation, act_layer=None, norm_layer=norm_layer)
            self.act = inplace_(make_act())
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.se = _se(planes, se_reduction, act_layer)
        self.shortcut = make_shortcut(in_chans, planes, stride, shortcut, norm_layer=None if preact else norm_layer)
        self.project_activated = preact and isinstance(self.shortcut, nn.Sequential)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """F(x), the residual branch (for post-activation blocks; SE included)."""
        return self.se(self.conv2(self.drop(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.preact:
            return add_skip(self.act, self.residual(x), self.shortcut(x))
        a = self.act1(self.bn1(x))
        skip = self.shortcut(a) if self.project_activated else self.shortcut(x)
        return self.se(self.conv2(self.drop(self.conv1(a)))) + skip

    def set_stride_dilation(self, stride: int, dilation: int) -> None:
        """Set the block's stride and its 3x3 convolutions' dilation in place (parameters unchanged). 002 §5.1.5."""
        _check_dilation(dilation)
        _set_conv(self.conv1[0], stride, dilation)
        self.conv1.stride = stride
        _set_conv(self.conv2 if self.preact else self.conv2[0], dilation=dilation)
        _set_shortcut_stride(self.shortcut, stride)

    def zero_init_last(self) -> None:
        """Zero the residual branch's last scale (BN gamma; the last conv for preact) so the block starts as y = x."""
        nn.init.zeros_(self.conv2.weight if self.preact else self.conv2[-1].weight)  # the norm, or the conv without


class Bottleneck(nn.Module):
    """1x1 compress -> 3x3 -> 1x1 expand (x4) with a skip. Notes: 002 §2.2.1, §2.3 (grouped 3x3 = ResNeXt).

    width = floor(planes * base_width / 64) * groups; y = relu(BN(W3 relu(BN(W2 relu(BN(W1 x))))) + shortcut(x)).
    The notes (ResNet v1) put a stage's stride 2 on the first 1x1 (`stride_in_1x1=True`); the default is
    torchvision's v1.5, stride on the 3x3: same parameters, better accuracy, more FLOPs (spec erratum 26).
    `dilation` dilates the 3x3 (the dilated bottleneck of DeepLab's backbone, Notes: 002 §5.1.5). `norm_layer` and
    `act_layer` replace BN and ReLU everywhere in the block.
    """

    expansion = 4

    def __init__(self, in_chans: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64,
                 se_reduction: int | None = None, shortcut: str = "B", stride_in_1x1: bool = False,
                 drop_rate: float = 0.0, act_layer="relu", dilation: int = 1, norm_layer="batch"):
        super().__init__()
        _check_dilation(dilation)
        width = int(planes * base_width / 64) * groups
        if width < groups:
            raise ConfigError(f"Bottleneck width floor(planes * base_width / 64) must be >= 1; got planes={planes}, "
                              f"base_width={base_width}")
        out_chans = planes * self.expansion
        s1, s2 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.stride_in_1x1 = stride_in_1x1
        layer = dict(act_layer=act_layer, norm_layer=norm_layer)
        self.conv1 = ConvBNAct(in_chans, width, 1, s1, **layer)
        self.conv2 = ConvBNAct(width, width, 3, s2, groups=groups, dilation=dilation, **layer)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv3 = ConvBNAct(width, out_chans, 1, act_layer=None, norm_layer=norm_layer)
        self.se = _se(out_chans, se_reduction, act_layer)
        self.shortcut = make_shortcut(in_chans, out_chans, stride, shortcut, norm_layer=norm_layer)
        self.act = inplace_(_act(act_layer)())

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """F(x), the residual branch (SE included)."""
        return self.se(self.conv3(self.drop(self.conv2(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_skip(self.act, self.residual(x), self.shortcut(x))

    def set_stride_dilation(self, stride: int, dilation: int) -> None:
        """Set the block's stride and its 3x3's dilation in place (parameters unchanged). Notes: 002 §5.1.5."""
        _check_dilation(dilation)
        strided = self.conv1 if self.stride_in_1x1 else self.conv2
        _set_conv(strided[0], stride)
        strided.stride = stride
        _set_conv(self.conv2[0], dilation=dilation)
        _set_shortcut_stride(self.shortcut, stride)

    def zero_init_last(self) -> None:
        """Zero the last BN's gamma so the block starts as y = relu(shortcut(x)) (Goyal et al. 2017)."""
        nn.init.zeros_(self.conv3[-1].weight)  # the norm, or the conv without one


class ResNetStages(nn.Sequential):
    """The stages of a ResNet at a chosen output stride. Notes: 002 §2.2.1 (stages), §5.1.5 (dilated ResNet).

    Stage i is `layers[i]` blocks of width `widths[i]`; its first block has stride `strides[i]` (default 1 for
    the first stage, 2 for the others) and the rest stride 1. The input arrives at `input_stride` (4 after the
    ImageNet stem). With `output_stride` smaller than the full stride, every strided stage that would exceed it
    gets stride 1 instead and its dilation multiplies by the stride it lost: its first block keeps the previous
    dilation r/2, the other blocks use r (torchvision's `replace_stride_with_dilation`; OS 8 dilates the last two
    stages with r = 2, 4, OS 16 the last with r = 2). The parameters do not depend on the output stride, and
    `set_output_stride` switches it in place (the curriculum OS 16 -> OS 8 of DeepLab v3). `stage_strides[i]` is
    the total stride after stage i; `out_chans` the last stage's channels.
    """

    def __init__(self, block: type[nn.Module], in_chans: int, layers: Sequence[int], widths: Sequence[int],
                 strides: Sequence[int] | None = None, input_stride: int = 1, output_stride: int | None = None,
                 **block_kw):
        strides = tuple(strides) if strides is not None else tuple(1 if i == 0 else 2 for i in range(len(layers)))
        if len(layers) != len(widths) or len(strides) != len(layers) or not layers or min(layers) < 1:
            raise ConfigError(f"ResNetStages needs one block count >= 1 and one stride per stage width; got "
                              f"layers={tuple(layers)}, widths={tuple(widths)}, strides={strides}")
        stages, chans = [], in_chans
        for n, width, stride in zip(layers, widths, strides):
            blocks = []
            for j in range(n):
                blocks.append(block(chans, width, stride if j == 0 else 1, **block_kw))
                chans = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        super().__init__(*stages)
        self.strides, self.input_stride, self.out_chans = strides, input_stride, chans
        self.set_output_stride(output_stride)

    @property
    def max_output_stride(self) -> int:
        """The undilated total stride input_stride * prod(strides) (32 for ImageNet ResNets)."""
        return self.input_stride * math.prod(self.strides)

    def set_output_stride(self, output_stride: int | None = None) -> None:
        """Dilate the last stages in place so the total stride is `output_stride` (None: undilated)."""
        reachable = [self.input_stride * math.prod(self.strides[:i]) for i in range(len(self.strides) + 1)]
        output_stride = self.max_output_stride if output_stride is None else output_stride
        if output_stride not in reachable:
            raise ConfigError(f"output_stride must be one of {sorted(set(reachable))} (input stride "
                              f"{self.input_stride} times the strides {self.strides} of the stages); got "
                              f"{output_stride!r}")
        total, dilation, self.stage_strides, self.dilations = self.input_stride, 1, [], []
        for stage, stride in zip(self, self.strides):
            first_dilation = dilation
            if total * stride > output_stride:  # replace the stride by dilation
                dilation, stride = dilation * stride, 1
            total *= stride
            for j, blk in enumerate(stage):
                blk.set_stride_dilation(stride if j == 0 else 1, first_dilation if j == 0 else dilation)
            self.stage_strides.append(total)
            self.dilations.append(dilation)
        self.output_stride = total
