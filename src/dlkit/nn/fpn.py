"""Feature pyramid network (FPN, Lin et al. 2017; Notes: 002 §4.3.3).

A backbone's stage maps C_2 ... C_5 are a pyramid whose early levels are semantically weak. The FPN adds a top-down
path: each map gets a 1x1 lateral convolution to a common width, the coarser merged map is upsampled (nearest
neighbour) to its size and added, and a 3x3 convolution smooths every sum (the notes' "anti-aliasing"):

    M_L = lateral_L(C_L),   M_l = lateral_l(C_l) + nearest_upsample(M_{l+1}),   P_l = output_l(M_l)

so every level P_l has the same width (256 in the paper) and the semantics of the top. Extra coarser levels are
optional: `LastLevelMaxPool` (Faster R-CNN's RPN: P6 = P5 subsampled by 2) and `LastLevelP6P7` (RetinaNet: P6 a
3x3 stride-2 convolution, P7 another one after a ReLU, fed by P5 or by the backbone's last map C5). Equal to
torchvision's `FeaturePyramidNetwork`, `LastLevelMaxPool` and `LastLevelP6P7` with the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError


def _init_fpn_conv(conv: nn.Conv2d) -> None:
    """Kaiming uniform with a = 1 and zero bias (Detectron's and torchvision's FPN initialisation)."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)


class LastLevelMaxPool(nn.Module):
    """One extra level: P6 = P5 subsampled by 2 (max-pool, kernel 1, stride 2), as Faster R-CNN's RPN uses."""

    num_levels = 1

    def forward(self, results: list[Tensor], inputs: list[Tensor]) -> list[Tensor]:
        return [F.max_pool2d(results[-1], kernel_size=1, stride=2)]


class LastLevelP6P7(nn.Module):
    """Two extra levels (RetinaNet): P6 = conv3x3/2(src), P7 = conv3x3/2(ReLU(P6)), where src is P5
    (`source='p5'`, torchvision's retinanet_resnet50_fpn) or the backbone's last map C5 (`source='c5'`, the paper
    and torchvision's v2). `in_chans` is the width of src. Notes: 002 §4.3.4."""

    num_levels = 2

    def __init__(self, in_chans: int, out_chans: int, source: str = "p5"):
        super().__init__()
        if source not in ("p5", "c5"):
            raise ConfigError(f"LastLevelP6P7 source must be 'p5' (the last FPN level) or 'c5' (the backbone's last "
                              f"map); got {source!r}")
        if source == "p5" and in_chans != out_chans:
            raise ConfigError(f"P6 from P5 reads the FPN width {out_chans}; got in_chans={in_chans} (use source='c5' "
                              f"to read the backbone's last map)")
        self.source = source
        self.p6 = nn.Conv2d(in_chans, out_chans, 3, 2, 1)
        self.p7 = nn.Conv2d(out_chans, out_chans, 3, 2, 1)
        for conv in (self.p6, self.p7):
            _init_fpn_conv(conv)

    def forward(self, results: list[Tensor], inputs: list[Tensor]) -> list[Tensor]:
        p6 = self.p6(results[-1] if self.source == "p5" else inputs[-1])
        return [p6, self.p7(F.relu(p6))]


EXTRA_LEVELS = ("none", "pool", "p6p7")


class FeaturePyramidNetwork(nn.Module):
    """Top-down pyramid over backbone maps (shallowest first): 1x1 laterals, nearest upsampling + sum, 3x3 outputs.

    Notes: 002 §4.3.3. `in_channels` lists the widths of the input maps, `out_channels` is the width of every
    output level. `extra` adds coarser levels: 'none', 'pool' (`LastLevelMaxPool`) or 'p6p7' (`LastLevelP6P7`,
    fed by P5 or, with `p6_source='c5'`, by the last input map). `forward(maps)` returns the list P_first ... P_last
    followed by the extra levels; an input map may have any size (the upsampled map takes its lateral's size).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, extra: str = "none",
                 p6_source: str = "p5"):
        super().__init__()
        if not in_channels or min(in_channels) < 1 or out_channels < 1:
            raise ConfigError(f"FPN needs the positive widths of one or more input maps and a positive out_channels; "
                              f"got in_channels={list(in_channels)}, out_channels={out_channels}")
        if extra not in EXTRA_LEVELS:
            raise ConfigError(f"FPN extra levels must be one of {EXTRA_LEVELS}; got {extra!r}")
        self.in_channels, self.out_channels = tuple(in_channels), out_channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        for conv in [*self.lateral, *self.output]:
            _init_fpn_conv(conv)
        if extra == "pool":
            self.extra = LastLevelMaxPool()
        elif extra == "p6p7":
            src = out_channels if p6_source == "p5" else in_channels[-1]
            self.extra = LastLevelP6P7(src, out_channels, p6_source)
        else:
            self.extra = None

    @property
    def num_levels(self) -> int:
        """Number of output maps: one per input map plus the extra levels."""
        return len(self.lateral) + (self.extra.num_levels if self.extra is not None else 0)

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """P levels [N, out_channels, H_l, W_l] for the input maps (shallowest first), then the extra levels."""
        maps = list(maps)
        if len(maps) != len(self.lateral):
            raise ConfigError(f"this FPN was built for {len(self.lateral)} input maps of widths "
                              f"{list(self.in_channels)}; got {len(maps)}")
        widths = [m.shape[1] if m.dim() == 4 else None for m in maps]
        if widths != list(self.in_channels):
            raise ConfigError(f"FPN input maps must be [N, C, H, W] with C = {list(self.in_channels)}; got shapes "
                              f"{[tuple(m.shape) for m in maps]}")
        merged = self.lateral[-1](maps[-1])
        results = [self.output[-1](merged)]
        for i in range(len(maps) - 2, -1, -1):
            lateral = self.lateral[i](maps[i])
            merged = lateral + F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.output[i](merged))
        if self.extra is not None:
            results.extend(self.extra(results, maps))
        return results
