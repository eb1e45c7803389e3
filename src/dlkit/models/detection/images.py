"""The detectors' input images: one batch of equally sized images, and the per-channel statistics of their
normalisation (x - mean) / std on images in [0, 1] (Notes: 002 §4.3.1: the backbone sees what it was trained on)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ConfigError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def channel_stats(value: float | Sequence[float] | None, default: Sequence[float], in_chans: int,
                  what: str) -> Tensor:
    """`value` (a number, or one per channel) as a [1, C, 1, 1] tensor; None: `default` for 3 channels, its
    channel average for any other count (as timm adapts pretrained stems)."""
    if value is None:
        value = default if in_chans == 3 else [sum(default) / 3] * in_chans
    values = [float(value)] * in_chans if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != in_chans:
        raise ConfigError(f"{what} needs one value per image channel ({in_chans}); got {len(values)}: {values}")
    return torch.tensor(values).view(1, in_chans, 1, 1)


def normalize_and_pad(images: Tensor, mean: Tensor, std: Tensor, size_divisible: int) -> Tensor:
    """(images - mean) / std, zero-padded on the bottom and right to multiples of `size_divisible` (torchvision's
    GeneralizedRCNNTransform without its resizing: the strides of every pyramid level then divide the size)."""
    x = (images - mean) / std
    d = size_divisible
    return F.pad(x, (0, -x.shape[-1] % d, 0, -x.shape[-2] % d))


def weights_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The dtype of `module`'s first floating-point parameter (None without one)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


def check_pixels(images: Tensor, dtype: torch.dtype | None, who: str) -> None:
    """Refuse images that are not floating point (uint8 0..255 read as if in [0, 1] gives wrong detections) or,
    outside autocast, not of the weights' dtype `dtype`, in one line that says how to convert them."""
    if not images.is_floating_point():
        raise ConfigError(f"{who} expects float images in [0, 1]; got {images.dtype}. Convert them with "
                          "images.float() / 255 (torchvision.io.read_image gives uint8 in 0..255)")
    if dtype is not None and images.dtype != dtype and not torch.is_autocast_enabled(images.device.type):
        raise ConfigError(f"{who}'s weights are {dtype} and the images {images.dtype}; pass images.to({dtype}) (or "
                          f"convert the model with model.to({images.dtype}))")


def batch_images(images, in_chans: int, who: str, dtype: torch.dtype | None = None) -> Tensor:
    """Images [B, C, H, W], or a list of equally sized [C, H, W], as one [B, C, H, W] tensor; anything else is
    refused with a one-line error naming `who` (the detector) and what it got, as are images that are not floating
    point or (outside autocast) not of the weights' dtype `dtype`."""
    if isinstance(images, list | tuple):
        if not images:
            raise ConfigError(f"{who} takes at least one image; got an empty {type(images).__name__}")
        if not all(isinstance(i, Tensor) for i in images):
            raise ConfigError(f"{who} expects a list of [{in_chans}, H, W] image tensors; got a list of "
                              f"{sorted({type(i).__name__ for i in images})}")
        sizes = {tuple(i.shape) for i in images}
        if len(sizes) > 1:
            raise ConfigError(f"{who} takes images of one size; got sizes {sorted(sizes)}. Resize or letterbox them "
                              f"to one size (dlkit.data.box_transforms)")
        images = torch.stack(list(images))
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != in_chans:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"{who} expects images [B, {in_chans}, H, W] in [0, 1]; got {got}")
    check_pixels(images, dtype, who)
    return images
