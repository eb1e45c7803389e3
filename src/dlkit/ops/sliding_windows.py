"""Multi-scale sliding windows (Notes: 002 §4.2.2 Viola-Jones' scan, §4.3.1 the sliding-window CNN detector; 003 §6).

A window of height h and width w slides over an H x W image with a stride of s pixels, its top-left corner at
(x, y) = (i s, j s) for every position that keeps it inside the image, so a scale has
`(floor((W - w) / s) + 1) * (floor((H - h) / s) + 1)` windows (003 §6: ((W - w)/s + 1)((H - h)/s + 1) when s
divides). Several sizes (scales) and aspect ratios give the multi-scale set. The aspect ratio r is h / w, as the
anchors' (`dlkit.ops.anchors`): a window of size S and ratio r is round(S sqrt(r)) high and round(S / sqrt(r))
wide, so its area is about S^2.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError


def window_scales(base: int, scale_factor: float, min_size: float, max_size: float) -> Iterator[float]:
    """The scales of a window pyramid: s_0 = max(1, min_size / base), s_{i+1} = s_i * scale_factor, while the window
    side round(base * s_i) is at most max_size (Viola-Jones' scan, 002 §4.2.2: the features are scaled, not the
    image, and never below the base window)."""
    if scale_factor <= 1:
        raise ConfigError(f"scale_factor must be > 1; got {scale_factor}")
    if base < 1:
        raise ConfigError(f"the base window must be at least 1 pixel; got {base}")
    scale = max(1.0, min_size / base)
    while round(base * scale) <= max_size:
        yield scale
        scale *= scale_factor


def sliding_windows(image_size: Sequence[int], sizes: Sequence[float], aspect_ratios: Sequence[float] = (1.0,),
                    stride: int | Sequence[int] = 1, dtype: torch.dtype = torch.float32) -> Tensor:
    """Every window [K, 4] xyxy (x2, y2 exclusive) of the given sizes and aspect ratios (r = h / w) that fits in an
    image of `image_size` (H, W), its top-left corner on a grid of `stride` pixels (one stride for all sizes, or one
    per size). Order: size, then ratio, then row by row (y outer, x inner). A window larger than the image gives
    nothing."""
    if len(image_size) != 2 or min(image_size) < 0:
        raise ConfigError(f"image_size must be (H, W) >= 0; got {tuple(image_size)}")
    sizes = [float(s) for s in sizes]
    ratios = [float(r) for r in aspect_ratios]
    if not sizes or not ratios or min(sizes) <= 0 or min(ratios) <= 0:
        raise ConfigError(f"window sizes and aspect ratios must be non-empty and positive; got sizes {tuple(sizes)}, "
                          f"aspect_ratios {tuple(ratios)}")
    strides = [stride] * len(sizes) if isinstance(stride, int) else [int(s) for s in stride]
    if len(strides) != len(sizes) or min(strides) < 1:
        raise ConfigError(f"stride must be a positive integer or one per size ({len(sizes)}); got {stride}")
    height, width = int(image_size[0]), int(image_size[1])
    out = []
    for size, step in zip(sizes, strides):
        for r in ratios:
            h = max(1, round(size * math.sqrt(r)))
            w = max(1, round(size / math.sqrt(r)))
            if h > height or w > width:
                continue
            gy, gx = torch.meshgrid(torch.arange(0, height - h + 1, step), torch.arange(0, width - w + 1, step),
                                    indexing="ij")
            x, y = gx.reshape(-1), gy.reshape(-1)
            out.append(torch.stack([x, y, x + w, y + h], 1))
    if not out:
        return torch.zeros(0, 4, dtype=dtype)
    return torch.cat(out).to(dtype)


def window_count(image_size: Sequence[int], window: Sequence[int], stride: int) -> int:
    """The number of h x w windows with stride s in an H x W image: (floor((W - w)/s) + 1)(floor((H - h)/s) + 1),
    0 when the window does not fit (003 §6)."""
    (height, width), (h, w) = image_size, window
    if h > height or w > width:
        return 0
    return ((width - w) // stride + 1) * ((height - h) // stride + 1)
