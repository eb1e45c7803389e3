"""Anchor-to-ground-truth matching by IoU (Notes: 002 §4.3.2 RPN training labels, §4.3.4 SSD/RetinaNet).

Each anchor (or default box, or proposal) takes the ground-truth box it overlaps most. With that best IoU `v`:
`v >= high` makes it a positive of that box, `v < low` a negative (background, `BELOW_LOW`), and anything between
is ignored by the loss (`BETWEEN`); Faster R-CNN's RPN uses (0.7, 0.3), RetinaNet (0.5, 0.4), SSD (0.5, 0.5).
A box that no anchor reaches with `high` would never be learnt, so `allow_low_quality_matches` also gives each
ground-truth box the anchors whose IoU with it equals its best one (the notes' "the anchor with the highest IoU
with a ground-truth box is positive"), whatever that IoU is. Ties between boxes go to the lower index, as
`torch.max` does; torchvision's `Matcher` follows the same rules.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...errors import ConfigError


class Matcher:
    """`matcher(iou [G, A])` -> int64 [A]: each anchor's matched box index, `BELOW_LOW` (-1) or `BETWEEN` (-2)."""

    BELOW_LOW = -1
    BETWEEN = -2

    def __init__(self, high: float, low: float, allow_low_quality_matches: bool = False):
        if not 0.0 <= low <= high <= 1.0:
            raise ConfigError(f"Matcher needs 0 <= low <= high <= 1; got high={high}, low={low}")
        self.high, self.low, self.allow_low_quality_matches = float(high), float(low), allow_low_quality_matches

    def __repr__(self) -> str:
        return (f"Matcher(high={self.high:g}, low={self.low:g}, "
                f"allow_low_quality_matches={self.allow_low_quality_matches})")

    def __call__(self, iou: Tensor) -> Tensor:
        if iou.dim() != 2:
            raise ConfigError(f"Matcher takes an IoU matrix [ground-truth boxes, anchors]; got shape "
                              f"{tuple(iou.shape)}")
        if iou.shape[0] == 0:  # an image without objects: every anchor is background
            return torch.full((iou.shape[1],), self.BELOW_LOW, dtype=torch.int64, device=iou.device)
        best, matches = iou.max(dim=0)
        out = matches.clone()
        out[best < self.low] = self.BELOW_LOW
        out[(best >= self.low) & (best < self.high)] = self.BETWEEN
        if self.allow_low_quality_matches:
            best_per_box = iou.max(dim=1, keepdim=True).values
            anchors = torch.nonzero(iou == best_per_box)[:, 1]  # every anchor that is some box's best (ties too)
            out[anchors] = matches[anchors]
        return out
