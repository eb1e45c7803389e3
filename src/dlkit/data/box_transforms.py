"""Box-aware joint transforms for detection data (Notes: 003 §3.3.1 augmentation; 002 §4 boxes).

A geometric augmentation of a detection image must move its boxes (and instance masks) the same way. Every
transform here maps `(image [C, H, W], target)` to the same layout, where `target` is the detection contract's
dict (`dlkit.tasks.detection`): boxes float [M, 4] (x1, y1, x2, y2) in continuous 0-based pixels, labels [M];
optional per-box entries (`PER_BOX_KEYS`: masks [M, H, W], difficult, iscrowd, area) are moved or dropped with
their boxes, other entries pass unchanged. Random transforms draw from an optional `torch.Generator` (on the CPU),
as `dlkit.data.transforms` does, so a seed gives the same augmentation everywhere.

Box rules (torchvision.transforms.v2's, tested against it):
- flip: x1' = W - x2, x2' = W - x1;  resize to (h', w'): x * w'/W, y * h'/H;  pad: + (left, top);
- crop at (top, left, h, w): boxes shift by (-left, -top); `mode="clip"` clips them to the crop and keeps
  those with width and height >= `min_size` and clipped area >= `min_area_fraction` x their area before the
  crop (min_area_fraction=0 is `v2.functional.crop` + `SanitizeBoundingBoxes`); `mode="centre"` keeps the boxes
  whose centre lies inside the crop (SSD's rule) and clips them;
- letterbox: resize keeping the aspect ratio to fit (h', w'), then pad both sides evenly with `fill` (YOLO);
  `target["letterbox"]` records (scale x, scale y, left, top) so that `unletterbox_boxes` maps detections back;
- mosaic (YOLOv4): four images meet at a centre point of one canvas, each cut to its quadrant (boxes clipped as
  in crop, mode "clip").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError
from .transforms import ColorJitter as ImageColorJitter

PER_BOX_KEYS = ("boxes", "labels", "masks", "difficult", "iscrowd", "area", "scores")


def _size(size, what: str) -> tuple[int, int]:
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"{what} must be a positive int or (height, width); got {size!r}")
    return int(size[0]), int(size[1])


def _check(image, target) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ConfigError(f"box transforms expect one image [C, H, W] and its target dict; got image {got}")
    boxes = target.get("boxes") if isinstance(target, dict) else None
    if boxes is None or boxes.ndim != 2 or boxes.shape[1] != 4:
        got = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(target).__name__
        raise ConfigError(f"a detection target needs 'boxes' [M, 4] xyxy; got {got}")
    masks = target.get("masks")
    if masks is not None and tuple(masks.shape) != (len(boxes), *image.shape[1:]):
        raise ConfigError(f"target masks must be [M, H, W] = {(len(boxes), *image.shape[1:])}; got "
                          f"{tuple(masks.shape)}")


def _update(target: dict, keep: torch.Tensor | None = None, **changes) -> dict:
    """A copy of target with per-box entries indexed by `keep` and `changes` applied; `area` recomputed."""
    out = dict(target)
    if keep is not None:
        for k in PER_BOX_KEYS:
            if k in out and k not in changes and isinstance(out[k], torch.Tensor):
                out[k] = out[k][keep]
    out.update(changes)
    if "area" in target:
        b = out["boxes"]
        out["area"] = (out["masks"].flatten(1).sum(1).to(b.dtype) if "masks" in out
                       else (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    return out


def horizontal_flip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror left-right: x1' = W - x2, x2' = W - x1 (`v2.functional.horizontal_flip`)."""
    _check(image, target)
    w = image.shape[-1]
    b = target["boxes"]
    boxes = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
    changes = {"boxes": boxes}
    if "masks" in target:
        changes["masks"] = target["masks"].flip(-1)
    return image.flip(-1), _update(target, **changes)


def _resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    y = TF.resize(image.float() if image.dtype == torch.uint8 else image, list(size),
                  TF.InterpolationMode.BILINEAR, antialias=True)
    return y.round().clamp(0, 255).to(torch.uint8) if image.dtype == torch.uint8 else y


def _resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if len(masks) == 0:
        return masks.new_zeros((0, *size))
    return F.interpolate(masks[None].float(), size=size, mode="nearest")[0].to(masks.dtype)


def resize(image: torch.Tensor, target: dict, size) -> tuple[torch.Tensor, dict]:
    """Resize to `size=(h, w)` (bilinear, antialiased; masks nearest): boxes x * w/W, y * h/H
    (`v2.functional.resize`)."""
    _check(image, target)
    h, w = _size(size, "resize size")
    sy, sx = h / image.shape[-2], w / image.shape[-1]
    boxes = target["boxes"] * target["boxes"].new_tensor([sx, sy, sx, sy])
    changes = {"boxes": boxes}
    if "masks" in target:
        changes["masks"] = _resize_masks(target["masks"], (h, w))
    return _resize_image(image, (h, w)), _update(target, **changes)


def pad(image: torch.Tensor, target: dict, padding: Sequence[int], fill: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Pad by `padding=(left, top, right, bottom)` pixels of `fill`: boxes + (left, top) (`v2.functional.pad`)."""
    _check(image, target)
    left, top, right, bottom = (int(p) for p in padding)
    if min(left, top, right, bottom) < 0:
        raise ConfigError(f"pad takes (left, top, right, bottom) >= 0; got {tuple(padding)}")
    boxes = target["boxes"] + target["boxes"].new_tensor([left, top, left, top])
    changes = {"boxes": boxes}
    if "masks" in target:
        changes["masks"] = F.pad(target["masks"], (left, right, top, bottom))
    return F.pad(image, (left, right, top, bottom), value=fill), _update(target, **changes)


def crop(image: torch.Tensor, target: dict, top: int, left: int, height: int, width: int, mode: str = "clip",
         min_area_fraction: float = 0.0, min_size: float = 1.0) -> tuple[torch.Tensor, dict]:
    """The window rows top..top+height, columns left..left+width (inside the image); boxes per `mode` (module doc).

    mode "clip" with min_area_fraction=0 equals `v2.functional.crop` followed by `SanitizeBoundingBoxes(min_size)`.
    """
    _check(image, target)
    H, W = image.shape[-2:]
    if not (0 <= top and 0 <= left and height >= 1 and width >= 1 and top + height <= H and left + width <= W):
        raise ConfigError(f"crop window (top={top}, left={left}, height={height}, width={width}) must lie inside "
                          f"the {H}x{W} image")
    if mode not in ("clip", "centre"):
        raise ConfigError(f"crop mode must be 'clip' or 'centre'; got {mode!r}")
    b = target["boxes"]
    shifted = b - b.new_tensor([left, top, left, top])
    clipped = torch.stack([shifted[:, 0].clamp(0, width), shifted[:, 1].clamp(0, height),
                           shifted[:, 2].clamp(0, width), shifted[:, 3].clamp(0, height)], dim=1)
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    if mode == "clip":
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        keep = (cw >= min_size) & (ch >= min_size) & (cw * ch >= min_area_fraction * area)
    else:
        cx, cy = (shifted[:, 0] + shifted[:, 2]) / 2, (shifted[:, 1] + shifted[:, 3]) / 2
        keep = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height) & (cw > 0) & (ch > 0)
    changes = {"boxes": clipped[keep]}
    if "masks" in target:
        changes["masks"] = target["masks"][keep][:, top:top + height, left:left + width]
    return image[:, top:top + height, left:left + width], _update(target, keep, **changes)


def _pixel(fill: float, dtype: torch.dtype) -> float:
    """A grey level `fill` in [0, 1] in an image's own units: x 255 for integer images (uint8 0..255)."""
    return fill if dtype.is_floating_point else round(fill * 255)


def letterbox(image: torch.Tensor, target: dict, size, fill: float = 114 / 255) -> tuple[torch.Tensor, dict]:
    """Resize keeping the aspect ratio, r = min(h'/H, w'/W), to (round(H r), round(W r)), then pad evenly (the
    odd pixel at the bottom / right) to `size=(h', w')` with `fill` (a grey level in [0, 1], 0..255 for uint8
    images); target["letterbox"] = (sx, sy, left, top)."""
    _check(image, target)
    h, w = _size(size, "letterbox size")
    H, W = image.shape[-2:]
    r = min(h / H, w / W)
    nh, nw = min(h, max(1, round(H * r))), min(w, max(1, round(W * r)))
    image, target = resize(image, target, (nh, nw))
    left, top = (w - nw) // 2, (h - nh) // 2
    image, target = pad(image, target, (left, top, w - nw - left, h - nh - top), _pixel(fill, image.dtype))
    target["letterbox"] = torch.tensor([nw / W, nh / H, left, top], dtype=torch.float32)
    return image, target


def unletterbox_boxes(boxes: torch.Tensor, info: torch.Tensor) -> torch.Tensor:
    """Map boxes from a letterboxed image back to the original: (x - left) / sx, (y - top) / sy."""
    sx, sy, left, top = (float(v) for v in info)
    return (boxes - boxes.new_tensor([left, top, left, top])) / boxes.new_tensor([sx, sy, sx, sy])


def mosaic(samples: Sequence[tuple[torch.Tensor, dict]], centre: tuple[int, int], size, fill: float = 114 / 255,
           min_area_fraction: float = 0.0, min_size: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Four (image, target) pairs on one canvas of `size=(h, w)` (YOLOv4's mosaic): they meet at `centre=(cy, cx)`,
    the first with its bottom-right corner there, the second bottom-left, the third top-right, the fourth top-left;
    each is cut to its quadrant and its boxes clipped and kept as in `crop(mode="clip")`. Entries other than the
    per-box ones come from the first sample. `fill`, the empty canvas's grey level, is in [0, 1] (0..255 for uint8
    images)."""
    if len(samples) != 4:
        raise ConfigError(f"mosaic takes 4 (image, target) samples; got {len(samples)}")
    h, w = _size(size, "mosaic size")
    cy, cx = int(centre[0]), int(centre[1])
    if not (0 < cy < h and 0 < cx < w):
        raise ConfigError(f"mosaic centre (cy, cx) must lie strictly inside the {h}x{w} canvas; got {centre}")
    first = samples[0][0]
    canvas = torch.full((first.shape[0], h, w), _pixel(fill, first.dtype), dtype=first.dtype)
    quadrants = ((0, 0, cy, cx), (0, cx, cy, w), (cy, 0, h, cx), (cy, cx, h, w))  # y0, x0, y1, x1
    parts = []
    for k, ((image, target), (qy0, qx0, qy1, qx1)) in enumerate(zip(samples, quadrants)):
        _check(image, target)
        ih, iw = image.shape[-2:]
        oy = cy - ih if k < 2 else cy  # where the image's top-left corner lands
        ox = cx - iw if k % 2 == 0 else cx
        vy0, vx0, vy1, vx1 = max(oy, qy0), max(ox, qx0), min(oy + ih, qy1), min(ox + iw, qx1)
        if vy1 <= vy0 or vx1 <= vx0:
            raise ConfigError(f"mosaic: sample {k} ({ih}x{iw}) does not reach its quadrant; resize it first")
        piece, t = crop(image, target, vy0 - oy, vx0 - ox, vy1 - vy0, vx1 - vx0, "clip", min_area_fraction, min_size)
        canvas[:, vy0:vy1, vx0:vx1] = piece
        t = _update(t, boxes=t["boxes"] + t["boxes"].new_tensor([vx0, vy0, vx0, vy0]))
        if "masks" in t:
            t["masks"] = F.pad(t["masks"], (vx0, w - vx1, vy0, h - vy1))
        parts.append(t)
    out = dict(samples[0][1])
    for key in PER_BOX_KEYS:
        if all(key in t for t in parts):
            out[key] = torch.cat([t[key] for t in parts])
        else:
            out.pop(key, None)
    out.pop("letterbox", None)
    return canvas, out


class BoxTransform:
    """Base class: `__call__(image, target, generator=None) -> (image, target)`."""

    def __call__(self, image: torch.Tensor, target: dict, generator: torch.Generator | None = None):
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(BoxTransform):
    """Apply box transforms in order, each with the same generator."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, target, generator=None):
        for t in self.transforms:
            image, target = t(image, target, generator=generator)
        return image, target


class RandomHorizontalFlip(BoxTransform):
    """`horizontal_flip` with probability p."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"p must be a probability in [0, 1]; got {p}")
        self.p = p

    def __call__(self, image, target, generator=None):
        if torch.rand((), generator=generator).item() < self.p:
            return horizontal_flip(image, target)
        return image, target


class Resize(BoxTransform):
    """`resize` to a fixed (h, w)."""

    def __init__(self, size):
        self.size = _size(size, "Resize size")

    def __call__(self, image, target, generator=None):
        return resize(image, target, self.size)


class Letterbox(BoxTransform):
    """`letterbox` to a fixed (h, w) with `fill` (YOLO's grey 114/255 by default)."""

    def __init__(self, size, fill: float = 114 / 255):
        self.size, self.fill = _size(size, "Letterbox size"), fill

    def __call__(self, image, target, generator=None):
        return letterbox(image, target, self.size, self.fill)


class RandomCrop(BoxTransform):
    """`crop` a window whose height and width are uniform fractions in `scale` of the image's (or a fixed
    `size=(h, w)`), at a uniform position; boxes per `mode` / `min_area_fraction` (module doc)."""

    def __init__(self, scale: tuple[float, float] = (0.5, 1.0), size=None, mode: str = "clip",
                 min_area_fraction: float = 0.25, min_size: float = 1.0):
        lo, hi = (float(v) for v in scale)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"RandomCrop scale must be (lo, hi) with 0 < lo <= hi <= 1; got {scale!r}")
        if mode not in ("clip", "centre"):
            raise ConfigError(f"RandomCrop mode must be 'clip' or 'centre'; got {mode!r}")
        self.scale, self.size, self.mode = (lo, hi), None if size is None else _size(size, "RandomCrop size"), mode
        self.min_area_fraction, self.min_size = min_area_fraction, min_size

    def __call__(self, image, target, generator=None):
        H, W = image.shape[-2:]
        u = torch.rand(4, generator=generator).tolist()
        if self.size is None:
            lo, hi = self.scale
            h, w = max(1, round(H * (lo + (hi - lo) * u[0]))), max(1, round(W * (lo + (hi - lo) * u[1])))
        else:
            h, w = self.size
            if h > H or w > W:
                raise ConfigError(f"RandomCrop size {self.size} is larger than the image {(H, W)}")
        top, left = min(int(u[2] * (H - h + 1)), H - h), min(int(u[3] * (W - w + 1)), W - w)
        return crop(image, target, top, left, h, w, self.mode, self.min_area_fraction, self.min_size)


class ColorJitter(BoxTransform):
    """Photometric jitter of the image (`dlkit.data.transforms.ColorJitter`, float images in [0, 1]); boxes and
    masks are untouched."""

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0):
        self.jitter = ImageColorJitter(brightness, contrast, saturation)

    def __call__(self, image, target, generator=None):
        return self.jitter(image, generator=generator), target


class Mosaic:
    """`mosaic` of four samples with the centre drawn uniformly in `centre_range` (fractions of h and w)."""

    def __init__(self, size, centre_range: tuple[float, float] = (0.25, 0.75), fill: float = 114 / 255,
                 min_area_fraction: float = 0.25, min_size: float = 1.0):
        lo, hi = (float(v) for v in centre_range)
        if not 0 < lo <= hi < 1:
            raise ConfigError(f"Mosaic centre_range must be (lo, hi) with 0 < lo <= hi < 1; got {centre_range!r}")
        self.size, self.centre_range, self.fill = _size(size, "Mosaic size"), (lo, hi), fill
        self.min_area_fraction, self.min_size = min_area_fraction, min_size

    def __call__(self, samples, generator: torch.Generator | None = None):
        (lo, hi), (h, w) = self.centre_range, self.size
        u = torch.rand(2, generator=generator).tolist()
        cy = min(h - 1, max(1, round(h * (lo + (hi - lo) * u[0]))))
        cx = min(w - 1, max(1, round(w * (lo + (hi - lo) * u[1]))))
        return mosaic(samples, (cy, cx), self.size, self.fill, self.min_area_fraction, self.min_size)


class MosaicDataset(torch.utils.data.Dataset):
    """Items of `dataset` (of (image, target) pairs of one size), each combined with probability `p` with three
    other random items into a `Mosaic`; randomness from a generator seeded by `seed` (each DataLoader worker
    holds a copy of it: use it in the main process, the fast path for in-memory sets)."""

    def __init__(self, dataset, mosaic: Mosaic, p: float = 1.0, seed: int = 0):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"p must be a probability in [0, 1]; got {p}")
        self.dataset, self.mosaic, self.p = dataset, mosaic, p
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        if torch.rand((), generator=self.generator).item() >= self.p:
            return self.dataset[i]
        others = torch.randint(len(self.dataset), (3,), generator=self.generator).tolist()
        return self.mosaic([self.dataset[j] for j in (i, *others)], self.generator)
