"""RoI align over a feature pyramid: each region is read from the level that suits its size (Notes: 002 §4.3.3).

FPN assigns a region of w x h image pixels to level

    k = floor(k0 + log2(sqrt(w h) / 224) + 1e-6),   clamped to the pyramid's levels,

with k0 = 4 (a 224 x 224 region, ImageNet's size, is read from P4 of stride 16). The notes write the ceiling; the
FPN paper and torchvision take the floor, used here so that weights trained with torchvision behave the same (a
region of 300 pixels: floor(4.42) = 4, the notes' ceiling would read it from level 5). Each level's stride is
inferred from its size against the batch's image size (a power of two), and the region is pooled by `roi_align`
(sampling ratio 2, not aligned, as Faster R-CNN's box head).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .boxes import box_area
from .roi import roi_align, rois_tensor


def fpn_levels(boxes: Tensor, k_min: int, k_max: int, canonical_scale: float = 224.0,
               canonical_level: int = 4) -> Tensor:
    """FPN level (k_min..k_max, int64) of every xyxy box [K, 4] (module docstring)."""
    size = box_area(boxes).sqrt()
    k = torch.floor(canonical_level + torch.log2(size / canonical_scale) + torch.tensor(1e-6, dtype=size.dtype))
    return k.clamp(k_min, k_max).long()


def level_scale(feature_size: Sequence[int], image_size: Sequence[int]) -> float:
    """1 / stride of a feature map against the image size: the power of two nearest to their ratio."""
    scales = [2.0 ** round(math.log2(f / i)) for f, i in zip(feature_size, image_size)]
    if scales[0] != scales[1]:
        raise ConfigError(f"a feature map of {tuple(feature_size)} does not divide the image size {tuple(image_size)} "
                          f"by one power of two in both directions")
    return scales[0]


class MultiScaleRoIAlign(nn.Module):
    """Regions of each image pooled from the pyramid level of their size: [K, C, output, output], rows in the
    order of the regions (image by image). Notes: 002 §4.3.3."""

    def __init__(self, output_size: int | tuple[int, int] = 7, sampling_ratio: int = 2,
                 canonical_scale: float = 224.0, canonical_level: int = 4):
        super().__init__()
        self.output_size, self.sampling_ratio = output_size, sampling_ratio
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level

    def forward(self, features: Sequence[Tensor], boxes: Sequence[Tensor], image_size: Sequence[int]) -> Tensor:
        """features: the levels' maps (finest first), boxes: [L_i, 4] xyxy per image, image_size: (H, W) of the
        batch (the largest image)."""
        if not features:
            raise ConfigError("MultiScaleRoIAlign needs at least one feature map")
        scales = [level_scale(f.shape[-2:], image_size) for f in features]
        rois = rois_tensor(list(boxes), features[0].dtype)
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, scales[0], self.sampling_ratio)
        k_min, k_max = round(-math.log2(scales[0])), round(-math.log2(scales[-1]))
        levels = fpn_levels(rois[:, 1:], k_min, k_max, self.canonical_scale, self.canonical_level) - k_min
        oh, ow = (self.output_size,) * 2 if isinstance(self.output_size, int) else self.output_size
        out = features[0].new_zeros(len(rois), features[0].shape[1], oh, ow)
        for level, (feature, scale) in enumerate(zip(features, scales)):
            mine = torch.nonzero(levels == level).squeeze(1)
            if mine.numel():
                out = out.index_copy(0, mine, roi_align(feature, rois[mine], (oh, ow), scale, self.sampling_ratio))
        return out
