"""Random geometric, photometric and label-mixing augmentation of batches (Notes: 003 §3.3.1).

Augmentation enlarges a data set with transformations that keep the label and the key features. Geometric ones
(rotation, scale, shift, shear: `RandomAffine` and its special cases, `RandomResizedCrop`) resample every image
through its own affine map with one `affine_grid` / `grid_sample` call; photometric ones add noise or shift the
intensity (`GaussianNoise`, `RandomIntensityShift`; contrast and brightness are in `transforms.ColorJitter`).
`Cutout` erases a square; `Mixup` and `CutMix` mix pairs of images and their labels, and `mixup_cross_entropy`
is the matching loss. Like `dlkit.data.transforms`, everything works on float batches [N, C, H, W] (or one
image [C, H, W]), draws its randomness per sample from an optional CPU `torch.Generator`, and has no Python loop
over samples. Augmentations have `train()` / `eval()`; in eval mode they return their input unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .transforms import Transform, _as_batch, _pair, _rand

_MODES = ("bilinear", "nearest")


class _TrainEval:
    training = True

    def train(self, mode: bool = True):
        """Switch randomisation on (training) or off (evaluation: the input passes unchanged)."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Evaluation mode: the augmentation becomes the identity."""
        return self.train(False)


class RandomAugment(_TrainEval, Transform):
    """Base class of random augmentations: a `Transform` with `train()`/`eval()`; identity in eval mode."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return super().__call__(x, generator) if self.training else x


def _range(v, name: str, center: float = 0.0, low: float = -math.inf) -> tuple[float, float]:
    """A number v means [center - v, center + v]; a pair (lo, hi) is taken as is; lo >= low is required."""
    if isinstance(v, int | float):
        lo, hi, ok = center - v, center + v, v >= 0
    else:
        try:
            lo, hi = (float(t) for t in v)
            ok = True
        except (TypeError, ValueError):
            lo = hi = math.nan
            ok = False
    if not ok or not low <= lo <= hi:
        raise ConfigError(f"{name} must be a number >= 0 or a range (lo, hi) with {low} <= lo <= hi; got {v!r}")
    return float(lo), float(hi)


def _uniform(rng: tuple[float, float], n: int, generator, x: torch.Tensor) -> torch.Tensor:
    return _rand(n, generator, x.device).to(x.dtype) * (rng[1] - rng[0]) + rng[0]


def _per_sample(v, n: int, x: torch.Tensor, width: int = 1) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return t.expand(n, width).clone() if width > 1 else t.expand(n).clone()


def _check_float(x: torch.Tensor, what: str) -> None:
    if not x.is_floating_point():
        raise ConfigError(f"{what} expects float images; got {x.dtype} (use transforms.ToFloat first)")


def sample_affine(x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor, interpolation: str = "bilinear",
                  fill: float = 0.0) -> torch.Tensor:
    """Resample each image of x [N, C, H, W] at src = A p + t (pixel units, origin at the image centre).

    Notes: 003 §3.3.1. p = (u, v) is an output pixel centre (u to the right, v down, both measured from the centre
    ((W-1)/2, (H-1)/2)); `matrix` A is [N, 2, 2], `offset` t is [N, 2]. Positions outside the image read `fill`.
    In the normalised coordinates of `affine_grid` (align_corners=False, u = W x_n / 2, v = H y_n / 2) this is
    theta = [D^-1 A D | D^-1 t] with D = diag(W/2, H/2).
    """
    if interpolation not in _MODES:
        raise ConfigError(f"interpolation must be one of {_MODES}; got {interpolation!r}")
    n, _, h, w = x.shape
    d = torch.tensor([w / 2.0, h / 2.0], dtype=x.dtype, device=x.device)
    theta = torch.cat([matrix * d.view(1, 1, 2) / d.view(1, 2, 1), (offset / d).unsqueeze(-1)], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    shifted = x - fill if fill else x  # zero padding of (x - fill), plus fill, pads with fill
    out = F.grid_sample(shifted, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    return out + fill if fill else out


def affine(x: torch.Tensor, angle=0.0, translate=(0.0, 0.0), scale=1.0, shear=0.0,
           interpolation: str = "bilinear", fill: float = 0.0) -> torch.Tensor:
    """Move the content of each image by p' = R(angle) Sh(shear) (scale p) + translate around the image centre.

    Notes: 003 §3.3.1 (rotation, scale, shift, shear). angle (degrees, counter-clockwise as displayed), scale,
    shear (degrees, x-shear u' = u + tan(shear) v) are numbers or tensors [N]; translate (pixels, (right, down))
    a pair or [N, 2]. In pixel coordinates with v pointing down, R = [[cos a, sin a], [-sin a, cos a]]; each output
    pixel p reads the input at M^-1 (p - translate) with M = R Sh scale, bilinearly (`sample_affine`). A 90 degree
    rotation of a square image equals torch.rot90(x, 1, dims=(-2, -1)).
    """
    xb, single = _as_batch(x)
    _check_float(xb, "affine")
    n = xb.shape[0]
    a = torch.deg2rad(_per_sample(angle, n, xb))
    s = _per_sample(scale, n, xb)
    if torch.any(s <= 0):
        raise ConfigError(f"affine scale must be > 0; got {scale!r}")
    k = torch.tan(torch.deg2rad(_per_sample(shear, n, xb)))
    t = _per_sample(translate, n, xb, width=2)
    cos, sin = torch.cos(a), torch.sin(a)
    # M = R Sh s = s [[c, c k + s_], [-s_, -s_ k + c]] and its inverse M^-1 = [[m11, -m01], [-m10, m00]] / det.
    m00, m01, m10, m11 = s * cos, s * (cos * k + sin), -s * sin, s * (cos - sin * k)
    det = m00 * m11 - m01 * m10
    inv = torch.stack([torch.stack([m11, -m01], -1), torch.stack([-m10, m00], -1)], 1) / det.view(-1, 1, 1)
    out = sample_affine(xb, inv, -(inv @ t.unsqueeze(-1)).squeeze(-1), interpolation, fill)
    return out[0] if single else out


class RandomAffine(RandomAugment):
    """Random rotation, shift, scale and shear per sample (Notes: 003 §3.3.1, geometric augmentation).

    degrees: d draws the angle uniformly in [-d, d] (or a range); translate (fx, fy): shifts uniform in
    [-fx W, fx W] x [-fy H, fy H] pixels; scale (lo, hi): zoom factor uniform in [lo, hi]; shear: x-shear angle
    like degrees. The content moves by `affine` (bilinear, `fill` outside the image).
    """

    def __init__(self, degrees=0.0, translate: Sequence[float] | None = None, scale: Sequence[float] | None = None,
                 shear=0.0, interpolation: str = "bilinear", fill: float = 0.0):
        self.degrees = _range(degrees, "degrees")
        self.translate = None if translate is None else tuple(float(t) for t in translate)
        if self.translate is not None and (len(self.translate) != 2 or not all(0 <= t <= 1 for t in self.translate)):
            raise ConfigError(f"translate must be fractions (fx, fy) in [0, 1] of width and height; got {translate}")
        self.scale = None if scale is None else _range(scale, "scale", 1.0, low=1e-6)
        self.shear = _range(shear, "shear", low=-89.0)
        if self.shear[1] >= 90:
            raise ConfigError(f"shear must stay inside (-90, 90) degrees; got {shear!r}")
        if interpolation not in _MODES:
            raise ConfigError(f"interpolation must be one of {_MODES}; got {interpolation!r}")
        self.interpolation, self.fill = interpolation, float(fill)

    def sample_params(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-sample parameters of `affine` for the batch x: angle, translate, scale, shear."""
        n, _, h, w = x.shape
        p = {"angle": _uniform(self.degrees, n, generator, x), "shear": _uniform(self.shear, n, generator, x)}
        p["scale"] = _uniform(self.scale, n, generator, x) if self.scale else torch.ones(n, dtype=x.dtype,
                                                                                           device=x.device)
        if self.translate:
            fx, fy = self.translate
            p["translate"] = torch.stack([_uniform((-fx * w, fx * w), n, generator, x),
                                          _uniform((-fy * h, fy * h), n, generator, x)], 1)
        else:
            p["translate"] = torch.zeros(n, 2, dtype=x.dtype, device=x.device)
        return p

    def apply(self, x, generator=None):
        _check_float(x, type(self).__name__)
        return affine(x, **self.sample_params(x, generator), interpolation=self.interpolation, fill=self.fill)


class RandomRotation(RandomAffine):
    """Rotate each sample by an angle uniform in [-degrees, degrees] (or a range), bilinearly, about its centre.

    Notes: 003 §3.3.1. Positive angles turn the content counter-clockwise as displayed; corners read `fill`.
    """

    def __init__(self, degrees, interpolation: str = "bilinear", fill: float = 0.0):
        super().__init__(degrees=degrees, interpolation=interpolation, fill=fill)


class RandomScale(RandomAffine):
    """Zoom each sample about its centre by a factor uniform in `scale` = (lo, hi), keeping the image size.

    Notes: 003 §3.3.1. Factors > 1 enlarge the content (its border is cut), < 1 shrink it (the border reads `fill`).
    """

    def __init__(self, scale=(0.8, 1.2), interpolation: str = "bilinear", fill: float = 0.0):
        super().__init__(scale=scale, interpolation=interpolation, fill=fill)


class RandomResizedCrop(RandomAugment):
    """Crop a random box of area fraction in `scale` and aspect w/h in `ratio`, resized to `size` (Inception crop).

    Notes: 003 §3.3.1. Area a = s H W with s ~ U(scale), log r ~ U(log ratio), box w = sqrt(a r), h = sqrt(a / r)
    clipped to the image, top-left corner uniform; the box is sampled bilinearly in one `grid_sample`. Unlike
    torchvision the box is continuous (no rounding, no retries) and no anti-aliasing is applied: the full box
    (scale (1, 1), ratio W/H) equals F.interpolate(bilinear, align_corners=False, antialias=False).
    """

    def __init__(self, size: int | tuple[int, int], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 interpolation: str = "bilinear"):
        self.size = _pair(size, "RandomResizedCrop size")
        self.scale = _range(scale, "RandomResizedCrop scale", low=1e-6)
        self.ratio = _range(ratio, "RandomResizedCrop ratio", low=1e-6)
        if self.scale[1] > 1:
            raise ConfigError(f"RandomResizedCrop scale is a fraction of the image area, at most 1; got {scale!r}")
        if interpolation not in _MODES:
            raise ConfigError(f"interpolation must be one of {_MODES}; got {interpolation!r}")
        self.interpolation = interpolation

    def sample_boxes(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample crop boxes [N, 4] as (x0, y0, width, height) in pixels (continuous)."""
        n, _, h, w = x.shape
        area = _uniform(self.scale, n, generator, x) * (h * w)
        r = torch.exp(_uniform((math.log(self.ratio[0]), math.log(self.ratio[1])), n, generator, x))
        bw, bh = torch.sqrt(area * r).clamp(max=w), torch.sqrt(area / r).clamp(max=h)
        x0 = _rand(n, generator, x.device).to(x.dtype) * (w - bw)
        y0 = _rand(n, generator, x.device).to(x.dtype) * (h - bh)
        return torch.stack([x0, y0, bw, bh], 1)

    def apply(self, x, generator=None):
        _check_float(x, "RandomResizedCrop")
        return resized_crop(x, self.sample_boxes(x, generator), self.size, self.interpolation)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int],
                 interpolation: str = "bilinear") -> torch.Tensor:
    """Crop box i = (x0, y0, width, height) (pixels, continuous) of image i of x [N, C, H, W] and resize it to
    `size`, all in one `grid_sample` (Notes: 003 §3.3.1). For whole-pixel boxes at least as large as `size` this
    equals torchvision's `v2.functional.resized_crop(..., antialias=False)` of each image; a box smaller than
    `size` differs in its outer half pixel, which blends with the image around the box where torchvision repeats
    the box's edge."""
    n, c, h, w = x.shape
    x0, y0, bw, bh = boxes.to(x.dtype).unbind(1)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = bw / w, (2 * x0 + bw) / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = bh / h, (2 * y0 + bh) / h - 1
    grid = F.affine_grid(theta, [n, c, *size], align_corners=False)
    return F.grid_sample(x, grid, mode=interpolation, padding_mode="border", align_corners=False)


class Cutout(RandomAugment):
    """Cutout (DeVries and Taylor, 2017): set one `size` x `size` square per image to `fill` (Notes: 003 §3.3.1).

    The square's centre is uniform over the pixels, so near a border it is clipped: rows [cy - size//2,
    cy - size//2 + size) intersected with [0, H), columns likewise.
    """

    def __init__(self, size: int, fill: float = 0.0):
        if not isinstance(size, int) or size < 1:
            raise ConfigError(f"Cutout size must be a positive int (the side of the square); got {size!r}")
        self.size, self.fill = size, float(fill)

    def sample_boxes(self, n: int, h: int, w: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
        """Clipped squares [N, 4] as (y0, x0, y1, x1), end exclusive."""
        cy = (_rand(n, generator, device) * h).long().clamp_(max=h - 1)
        cx = (_rand(n, generator, device) * w).long().clamp_(max=w - 1)
        y0, x0 = cy - self.size // 2, cx - self.size // 2
        return torch.stack([y0.clamp(0, h), x0.clamp(0, w), (y0 + self.size).clamp(0, h), (x0 + self.size).clamp(0, w)],
                           1)

    def apply(self, x, generator=None):
        n, _, h, w = x.shape
        y0, x0, y1, x1 = self.sample_boxes(n, h, w, generator, x.device).unbind(1)
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        in_rows = (rows >= y0[:, None]) & (rows < y1[:, None])
        in_cols = (cols >= x0[:, None]) & (cols < x1[:, None])
        mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]
        return x.masked_fill(mask, self.fill)


class GaussianNoise(RandomAugment):
    """Additive Gaussian noise x + std * eps, eps ~ N(0, 1) per pixel, clipped to `clip` (Notes: 003 §3.3.1)."""

    def __init__(self, std: float, clip: tuple[float, float] | None = (0.0, 1.0)):
        if std < 0:
            raise ConfigError(f"GaussianNoise std must be >= 0; got {std}")
        self.std, self.clip = float(std), clip

    def apply(self, x, generator=None):
        _check_float(x, "GaussianNoise")
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        out = x + self.std * noise
        return out.clamp(*self.clip) if self.clip is not None else out


class RandomIntensityShift(RandomAugment):
    """Shift the average intensity of each sample: x + delta, delta uniform in [-d, d] (or a range), clipped.

    Notes: 003 §3.3.1 ("modifying average intensity").
    """

    def __init__(self, delta, clip: tuple[float, float] | None = (0.0, 1.0)):
        self.delta, self.clip = _range(delta, "RandomIntensityShift delta"), clip

    def apply(self, x, generator=None):
        _check_float(x, "RandomIntensityShift")
        out = x + _uniform(self.delta, x.shape[0], generator, x).view(-1, 1, 1, 1)
        return out.clamp(*self.clip) if self.clip is not None else out


class MixedBatch(NamedTuple):
    """A mixed batch: images, the two label sets and the weight lam of the first (a float or a tensor [N])."""

    x: torch.Tensor
    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: float | torch.Tensor

    def soft_targets(self, num_classes: int) -> torch.Tensor:
        """lam one_hot(y_a) + (1 - lam) one_hot(y_b) [N, classes] (labels may already be probabilities)."""
        a, b = (_probs(y, num_classes, self.x.dtype) for y in (self.y_a, self.y_b))
        lam = self.lam.view(-1, 1) if isinstance(self.lam, torch.Tensor) else self.lam
        return lam * a + (1 - lam) * b


def _probs(y: torch.Tensor, num_classes: int, dtype) -> torch.Tensor:
    return y.to(dtype) if y.is_floating_point() else F.one_hot(y, num_classes).to(dtype)


def sample_beta(alpha: float, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws of lam ~ Beta(alpha, alpha) as float64, reproducible from the torch generator (or global seed).

    torch's Beta cannot take a generator, so a seed drawn from it drives numpy's Beta sampler.
    """
    if alpha <= 0:
        raise ConfigError(f"Beta(alpha, alpha) needs alpha > 0; got {alpha}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=n))


def mixup(x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor, perm: torch.Tensor) -> MixedBatch:
    """Mix each sample with sample perm[i]: x' = lam x + (1 - lam) x[perm]; labels y and y[perm] (Zhang et al., 2018).

    Notes: 003 §3.3.1 (augmentation). `lam` is a number or a tensor [N] (one weight per sample).
    """
    lam_x = lam.to(x.dtype).view(-1, *([1] * (x.ndim - 1))) if isinstance(lam, torch.Tensor) else lam
    return MixedBatch(lam_x * x + (1 - lam_x) * x[perm], y, y[perm], lam)


class Mixup(_TrainEval):
    """Mixup: x' = lam x_i + (1 - lam) x_j, y' = lam y_i + (1 - lam) y_j, lam ~ Beta(alpha, alpha), j a permutation.

    Notes: 003 §3.3.1. Call `Mixup(alpha)(x, y, generator)` -> `MixedBatch(x, y_a, y_b, lam)`; train with
    `mixup_cross_entropy(logits, y_a, y_b, lam)`. One lam per batch as in the paper, or one per sample with
    `per_sample=True`. alpha = 0 disables mixing; in eval mode the batch passes unchanged (lam = 1).
    """

    def __init__(self, alpha: float = 1.0, per_sample: bool = False):
        if alpha < 0:
            raise ConfigError(f"Mixup alpha must be >= 0 (0 disables mixing); got {alpha}")
        self.alpha, self.per_sample = float(alpha), per_sample

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> MixedBatch:
        if x.ndim < 2 or y.shape[0] != x.shape[0]:
            raise ConfigError(f"Mixup expects a batch x [N, ...] and labels y [N] or [N, classes]; got "
                              f"{tuple(x.shape)} and {tuple(y.shape)}")
        if not self.training or self.alpha == 0:
            return MixedBatch(x, y, y, 1.0)
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        lam = sample_beta(self.alpha, x.shape[0] if self.per_sample else 1, generator)
        lam = lam.to(x.device, torch.float32) if self.per_sample else float(lam[0])
        return mixup(x, y, lam, perm)

    def __repr__(self) -> str:
        return f"Mixup(alpha={self.alpha}, per_sample={self.per_sample})"


class CutMix(_TrainEval):
    """CutMix (Yun et al., 2019): paste a box of x_j into x_i; labels weighted by the kept area fraction.

    Notes: 003 §3.3.1 (augmentation, like Mixup). lam ~ Beta(alpha, alpha); a box of sides sqrt(1 - lam) (H, W)
    with a uniform centre, clipped, is copied from the permuted batch; the returned lam is the exact kept fraction
    1 - box area / (H W). One box per batch, as in the paper.
    """

    def __init__(self, alpha: float = 1.0):
        if alpha < 0:
            raise ConfigError(f"CutMix alpha must be >= 0 (0 disables mixing); got {alpha}")
        self.alpha = float(alpha)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> MixedBatch:
        if x.ndim != 4 or y.shape[0] != x.shape[0]:
            raise ConfigError(f"CutMix expects images [N, C, H, W] and labels y [N] or [N, classes]; got "
                              f"{tuple(x.shape)} and {tuple(y.shape)}")
        if not self.training or self.alpha == 0:
            return MixedBatch(x, y, y, 1.0)
        n, _, h, w = x.shape
        perm = torch.randperm(n, generator=generator).to(x.device)
        r = math.sqrt(1.0 - float(sample_beta(self.alpha, 1, generator)[0]))
        cy, cx = (int(v) for v in (torch.rand(2, generator=generator) * torch.tensor([h, w])).long())
        y0, y1 = max(cy - int(h * r) // 2, 0), min(cy - int(h * r) // 2 + int(h * r), h)
        x0, x1 = max(cx - int(w * r) // 2, 0), min(cx - int(w * r) // 2 + int(w * r), w)
        return cutmix(x, y, (y0, x0, y1, x1), perm)

    def __repr__(self) -> str:
        return f"CutMix(alpha={self.alpha})"


def cutmix(x: torch.Tensor, y: torch.Tensor, box: tuple[int, int, int, int], perm: torch.Tensor) -> MixedBatch:
    """Paste rows y0:y1, columns x0:x1 (`box` = (y0, x0, y1, x1)) of x[perm] into x; labels y and y[perm] with
    lam = 1 - box area / (H W), the fraction of each image that is kept (Notes: 003 §3.3.1, Yun et al., 2019)."""
    h, w = x.shape[-2:]
    y0, x0, y1, x1 = (int(v) for v in box)
    if not (0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w):
        raise ConfigError(f"cutmix box (y0, x0, y1, x1) must lie inside the {h}x{w} images; got {box}")
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[perm, ..., y0:y1, x0:x1]
    return MixedBatch(out, y, y[perm], 1.0 - (y1 - y0) * (x1 - x0) / (h * w))


def mixup_cross_entropy(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor,
                        lam: float | torch.Tensor) -> torch.Tensor:
    """Loss of a mixed batch: mean of lam CE(logits, y_a) + (1 - lam) CE(logits, y_b) (Notes: 003 §3.3.1).

    CE is linear in the target, so this equals the cross-entropy with the soft targets lam y_a + (1 - lam) y_b.
    Labels are class indices [N] or probabilities [N, classes]; lam is a number or a tensor [N].
    """
    ce_a = F.cross_entropy(logits, y_a, reduction="none")
    ce_b = F.cross_entropy(logits, y_b, reduction="none")
    lam = lam.to(logits.dtype) if isinstance(lam, torch.Tensor) else lam
    return (lam * ce_a + (1 - lam) * ce_b).mean()
