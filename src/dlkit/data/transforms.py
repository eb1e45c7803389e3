"""Batched image transforms and data augmentation (Notes: 003 §3.3.1; 000 §3 for image tensors).

Augmentation enlarges a data set with label-preserving transformations: geometric ones (crops,
flips, resizing) and photometric ones (brightness, contrast, saturation). Every transform takes a
float batch [N, C, H, W] or a single image [C, H, W] and draws its randomness per sample from an
optional `torch.Generator` (drawn on the CPU, so a seed gives the same result on every device).
No transform loops over samples in Python. Plumbing runs on torchvision's `transforms.v2.functional`
kernels (resizing, luma); the parameters are drawn here, so runs stay reproducible from the generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"transforms expect an image [C, H, W] or a batch [N, C, H, W]; got {got}")
    return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator).to(device)


def _pair(size, what: str) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"{what} must be a positive int or (height, width); got {size!r}")
    return int(size[0]), int(size[1])


class Transform:
    """Base class: `__call__(x, generator=None)` maps [N, C, H, W] or [C, H, W] to the same layout."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        xb, single = _as_batch(x)
        out = self.apply(xb, generator)
        return out[0] if single else out

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order; ours receive the generator, plain callables only the tensor."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator=generator) if isinstance(t, Transform) else t(x)
        return x


class JointTransform:
    """An image transform and a label-map transform driven by the same random draws (Notes: 002 §5.1, 003 §4:
    a flip or crop of a segmentation input must move its mask too).

    `image` and `mask` are transforms with the same random structure (e.g. the same flips and crops, the mask's
    crop padded with the ignore label); `mask` sees the label map [N, H, W] as one float channel and its result
    is rounded back to the labels' dtype, so it must not interpolate (flips, crops, nearest resizing).
    """

    def __init__(self, image: Transform, mask: Transform):
        self.image, self.mask = image, mask

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        if x.ndim != 4 or y.shape != (x.shape[0], *x.shape[2:]):
            raise ConfigError(f"JointTransform expects images [N, C, H, W] and label maps [N, H, W]; got "
                              f"{tuple(x.shape)} and {tuple(y.shape)}")
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        replay = torch.Generator().set_state(generator.get_state())
        x = self.image(x, generator=generator)
        y = self.mask(y[:, None].float(), generator=replay)[:, 0].round().to(y.dtype)
        return x, y

    def __repr__(self) -> str:
        return f"JointTransform(image={self.image!r}, mask={self.mask!r})"


class ToFloat(Transform):
    """uint8 pixels 0..255 to floats in [0, 1]: x / 255 (float input passes unchanged)."""

    def apply(self, x, generator=None):
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class Normalize(Transform):
    """Per-channel standardisation: (x - mean[c]) / std[c]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ConfigError(f"Normalize needs one mean and one positive std per channel; got mean "
                              f"{self.mean}, std {self.std}")

    def _stats(self, x):
        if x.shape[1] != len(self.mean):
            raise ConfigError(f"Normalize has {len(self.mean)} channels but the input has {x.shape[1]} "
                              f"(shape {tuple(x.shape)})")
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return m, torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)

    def apply(self, x, generator=None):
        m, s = self._stats(x)
        return (x - m) / s

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: x * std + mean (e.g. to draw normalised images)."""
        xb, single = _as_batch(x)
        m, s = self._stats(xb)
        out = xb * s + m
        return out[0] if single else out


class RandomHorizontalFlip(Transform):
    """Mirror each sample left-right with probability p."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"p must be a probability in [0, 1]; got {p}")
        self.p = p
        self._dim = -1

    def apply(self, x, generator=None):
        flip = _rand(x.shape[0], generator, x.device) < self.p
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(self._dim), x)


class RandomVerticalFlip(RandomHorizontalFlip):
    """Mirror each sample upside-down with probability p."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)
        self._dim = -2


class RandomCrop(Transform):
    """Pad by `padding` (int, (left/right, top/bottom) or (left, top, right, bottom)) with `fill`, then
    crop `size` at an independent uniform offset per sample (vectorised gather, no per-sample loop)."""

    def __init__(self, size: int | tuple[int, int], padding: int | Sequence[int] = 0, fill: float = 0.0):
        self.size = _pair(size, "RandomCrop size")
        p = [padding] * 4 if isinstance(padding, int) else list(padding)
        if len(p) == 2:
            p = [p[0], p[1], p[0], p[1]]
        if len(p) != 4 or min(p) < 0:
            raise ConfigError(f"padding must be an int >= 0, (lr, tb) or (left, top, right, bottom); got {padding}")
        self.padding, self.fill = tuple(int(v) for v in p), fill

    def apply(self, x, generator=None):
        left, top, right, bottom = self.padding
        if any(self.padding):
            x = F.pad(x, (left, right, top, bottom), value=self.fill)
        n, _, hp, wp = x.shape
        h, w = self.size
        if h > hp or w > wp:
            raise ConfigError(f"RandomCrop size {self.size} is larger than the padded input {(hp, wp)}")
        oy = (_rand(n, generator, x.device) * (hp - h + 1)).long().clamp_(max=hp - h)
        ox = (_rand(n, generator, x.device) * (wp - w + 1)).long().clamp_(max=wp - w)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [N, 1, h, 1]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [N, 1, 1, w]
        x = torch.gather(x, 2, rows.expand(n, x.shape[1], h, wp))
        return torch.gather(x, 3, cols.expand(n, x.shape[1], h, w))


class Resize(Transform):
    """Bilinear resize to `size=(h, w)`; an int matches the shorter side and keeps the aspect ratio.

    `antialias` low-pass filters when shrinking (as PIL does); uint8 input is resized in float and rounded.
    """

    def __init__(self, size: int | tuple[int, int], antialias: bool = True):
        if isinstance(size, int):
            if size < 1:
                raise ConfigError(f"Resize size must be positive; got {size}")
        else:
            size = _pair(size, "Resize size")
        self.size, self.antialias = size, antialias

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """The (height, width) an input of size (h, w) is resized to."""
        if not isinstance(self.size, int):
            return self.size
        s = self.size
        return (s, max(1, int(s * w / h))) if h <= w else (max(1, int(s * h / w)), s)

    def apply(self, x, generator=None):
        size = self.output_size(*x.shape[-2:])
        if size == tuple(x.shape[-2:]):
            return x
        # uint8 goes through float and is rounded: v2's own uint8 kernel differs by 1 grey level on many pixels
        y = TF.resize(x.float() if x.dtype == torch.uint8 else x, list(size), TF.InterpolationMode.BILINEAR,
                      antialias=self.antialias)
        return y.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y


def _factor_range(v, name: str) -> tuple[float, float]:
    lo, hi = (max(0.0, 1.0 - v), 1.0 + v) if isinstance(v, int | float) else tuple(map(float, v))
    if isinstance(v, int | float) and v < 0 or lo < 0 or hi < lo:
        raise ConfigError(f"ColorJitter {name} must be a number >= 0 or a range (lo, hi) with 0 <= lo <= hi; "
                          f"got {v!r}")
    return lo, hi


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of an RGB batch [N, 3, H, W] -> [N, 1, H, W]: 0.2989 R + 0.587 G + 0.114 B, torchvision's weights
    (`v2.functional.rgb_to_grayscale`; ITU-R 601 rounds 0.2989 to 0.299). One channel: itself."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ConfigError(f"grayscale needs 1 or 3 channels; got {x.shape[1]}")
    return TF.rgb_to_grayscale(x)


class ColorJitter(Transform):
    """Random photometric change per sample of float images in [0, 1], applied in this order:

    brightness x*f; contrast f*x + (1-f)*mean(gray(x)); saturation f*x + (1-f)*gray(x); clamp to [0, 1]
    after each. A number v draws f uniformly in [max(0, 1-v), 1+v]; a pair (lo, hi) in [lo, hi]. Each step
    equals `v2.functional.adjust_brightness` / `adjust_contrast` / `adjust_saturation` of one sample with its
    factor (to float rounding); here one vectorised pass serves the whole batch with per-sample factors.
    """

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0):
        self.brightness = _factor_range(brightness, "brightness")
        self.contrast = _factor_range(contrast, "contrast")
        self.saturation = _factor_range(saturation, "saturation")

    @staticmethod
    def _factors(rng: tuple[float, float], n: int, generator, x) -> torch.Tensor | None:
        if rng == (1.0, 1.0):
            return None
        f = _rand(n, generator, x.device).to(x.dtype) * (rng[1] - rng[0]) + rng[0]
        return f.view(-1, 1, 1, 1)

    def apply(self, x, generator=None):
        if not x.is_floating_point():
            raise ConfigError(f"ColorJitter expects float images in [0, 1]; got {x.dtype} (use ToFloat first)")
        n = x.shape[0]
        f = self._factors(self.brightness, n, generator, x)
        if f is not None:
            x = (x * f).clamp(0, 1)
        f = self._factors(self.contrast, n, generator, x)
        if f is not None:
            mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
            x = (f * x + (1 - f) * mean).clamp(0, 1)
        f = self._factors(self.saturation, n, generator, x)
        if f is not None:
            x = (f * x + (1 - f) * grayscale(x)).clamp(0, 1)
        return x


def normalise_images(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 images to float32, standardised: (x / 255 - mean) / std (Notes: 000 §2.6, input normalisation)."""
    return (images.float().div_(255.0) - mean).div_(std)


def pad_images(images: torch.Tensor, size: int, fill: float = 0.0) -> torch.Tensor:
    """Pad [N, C, H, W] (or [N, H, W]) images symmetrically with `fill` to size x size (extra pixel at the
    bottom/right when the margin is odd). Notes: 000 §3.1 (zero padding), 004 CNN (LeNet's 28 -> 32)."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ConfigError(f"pad_images expects images [N, C, H, W] or [N, H, W]; got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if size < max(h, w):
        raise ConfigError(f"pad_images: size {size} is smaller than the images ({h}x{w}); use a size >= {max(h, w)}")
    top, left = (size - h) // 2, (size - w) // 2
    if size == h == w:
        return images
    return F.pad(images, (left, size - w - left, top, size - h - top), value=fill)
