"""Generated detection and instance-segmentation scenes, deterministic by seed (Notes: 002 §4, §5.2).

Two families, both with boxes, labels and instance masks, served as a torch Dataset in the detection contract
(`dlkit.tasks.detection`) and written as PNG images + a COCO JSON file (`write_scenes`):

- shapes: coloured circles, squares, triangles, crosses and rings of several scales (log-uniform sizes), rotated,
  on textured backgrounds (a smooth colour field, stripes and pixel noise);
- MNIST digits on a dark canvas: real MNIST digits cropped to their ink, resized so the longer side is 12..64
  pixels (log-uniform); the mask is the ink, pixels > `ink_threshold`.

Occlusion: objects are pasted in order, a later one over earlier ones, and an instance's mask is its *visible*
part; a placement that would leave an earlier object less than `min_visible` of its pixels is retried elsewhere
(or the object skipped), so every annotated object stays recognisable and no visible object is unannotated.
Boxes are the tight boxes of the visible masks, in continuous pixels: (min col, min row, max col + 1, max row + 1).

Scene i of a set depends only on (seed, i) (numpy's `default_rng([seed, i])`), so a set can be generated lazily,
in any order, and the same seed gives the same bytes.

Panoptic targets (`semantic=True`, Notes: 002 §5.3): the target also carries `semantic` int64 [H, W], the map of
Panoptic FPN's semantic branch: 0 ("things / other") on every object's visible pixels, 1 on the background, the
one stuff class (the textured background has no discrete kinds to tell apart: its colour field, stripes and noise
are drawn together for every scene). Random flips do not flip it: train such a set without `flip`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import ConfigError
from .coco_writer import write_coco

SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring")
DIGIT_CLASSES = tuple(str(d) for d in range(10))


@dataclass
class Scene:
    """One generated scene: image uint8 [H, W, C], instance map uint8 [H, W] (0 = background, k = the k-th
    object's visible pixels), labels int64 [K] in 1..C, boxes float32 [K, 4] xyxy of the visible masks."""

    image: np.ndarray
    instances: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    def masks(self) -> np.ndarray:
        """Instance masks uint8 [K, H, W]."""
        return (self.instances[None] == np.arange(1, len(self.labels) + 1)[:, None, None]).astype(np.uint8)


class Canvas:
    """An image being composed: `paste` puts an object over what is there and keeps the instance map, refusing a
    placement that would hide more than 1 - `min_visible` of an earlier object."""

    def __init__(self, background: np.ndarray, min_visible: float = 0.5):
        self.image = background
        self.instances = np.zeros(background.shape[:2], dtype=np.uint8)
        self.min_visible = min_visible
        self.labels: list[int] = []
        self.full: list[int] = [0]  # pixels of each instance when pasted (index 0: background)
        self.visible: list[int] = [0]

    def paste(self, y0: int, x0: int, mask: np.ndarray, pixels: np.ndarray, label: int,
              write: np.ndarray | None = None) -> bool:
        """Put an object whose window [h, w] has its top-left corner at (y0, x0): instance pixels `mask`, colours
        `pixels` [h, w, C] written where `write` (default: mask). False (nothing changed) if it would occlude an
        earlier object too much, if its mask is empty or if 255 objects are there already."""
        h, w = mask.shape
        n = mask.sum()
        if n == 0 or len(self.labels) >= 255:
            return False
        ids = self.instances[y0:y0 + h, x0:x0 + w]
        hidden = np.bincount(ids[mask], minlength=len(self.full))
        left = np.asarray(self.visible) - hidden
        if np.any(left[1:] < self.min_visible * np.asarray(self.full[1:])):
            return False
        self.visible = [int(v) for v in left]
        write = mask if write is None else write
        self.image[y0:y0 + h, x0:x0 + w][write] = pixels[write]
        ids[mask] = len(self.labels) + 1
        self.labels.append(int(label))
        self.full.append(int(n))
        self.visible.append(int(n))
        return True

    def scene(self) -> Scene:
        """The finished scene; objects hidden entirely (impossible with min_visible > 0) are dropped."""
        boxes, keep = [], []
        for k in range(1, len(self.labels) + 1):
            m = self.instances == k
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            if len(rows):
                boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
                keep.append(k)
        remap = np.zeros(len(self.labels) + 1, dtype=np.uint8)
        remap[keep] = np.arange(1, len(keep) + 1)
        return Scene(self.image, remap[self.instances], np.asarray([self.labels[k - 1] for k in keep], np.int64),
                     np.asarray(boxes, np.float32).reshape(-1, 4))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3]: a smooth random colour field (a 2..5 square grid of colours, bilinear), plus stripes of
    random period and direction, plus grey pixel noise."""
    g = int(rng.integers(2, 6))
    grid = rng.integers(0, 256, (g, g, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(grid).resize((width, height), Image.BILINEAR), dtype=np.float32)
    angle, period, amp = rng.uniform(0, np.pi), rng.uniform(6, 40), rng.uniform(10, 35)
    ky, kx = np.float32(2 * np.pi * np.sin(angle) / period), np.float32(2 * np.pi * np.cos(angle) / period)
    y, x = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
    # amp sin(kx x + ky y), separated into two outer products
    stripes = np.float32(amp) * (np.outer(np.cos(ky * y), np.sin(kx * x)) + np.outer(np.sin(ky * y), np.cos(kx * x)))
    field += (stripes[..., None]
              + rng.integers(-12, 13, (height, width, 1), dtype=np.int8).astype(np.float32))
    return np.clip(field, 0, 255, out=field).astype(np.uint8)


def shape_mask(shape: str, size: int, angle: float) -> np.ndarray:
    """Boolean mask [size, size] of a shape centred in its window and rotated by `angle` (pixel centres tested)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) - size / 2
    y, x = c[:, None], c[None, :]
    u, v = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
    r = size / 2
    if shape == "circle":
        return x * x + y * y <= r * r
    if shape == "ring":
        d = x * x + y * y
        return (d <= r * r) & (d >= (0.5 * r) ** 2)
    if shape == "square":
        a = r / (abs(np.cos(angle)) + abs(np.sin(angle)))  # the rotated square fits the window
        return (np.abs(u) <= a) & (np.abs(v) <= a)
    if shape == "cross":
        a, t = 0.95 * r / (abs(np.cos(angle)) + abs(np.sin(angle))), r / 3.2
        return ((np.abs(u) <= a) & (np.abs(v) <= t)) | ((np.abs(u) <= t) & (np.abs(v) <= a))
    if shape == "triangle":  # equilateral, circumradius r: inside all three edges' half-planes
        inside = np.ones((size, size), dtype=bool)
        for k in range(3):
            a = angle + np.pi / 2 + k * 2 * np.pi / 3  # outward normal of edge k
            inside &= x * np.cos(a) + y * np.sin(a) <= r / 2
        return inside
    raise ConfigError(f"shape must be one of {SHAPE_CLASSES}; got {shape!r}")


def _check_common(height: int, width: int, objects: tuple[int, int], sizes: tuple[float, float],
                  min_visible: float) -> None:
    if height < 8 or width < 8:
        raise ConfigError(f"scene size must be at least 8x8; got {height}x{width}")
    if not 1 <= objects[0] <= objects[1]:
        raise ConfigError(f"objects must be (min, max) with 1 <= min <= max; got {objects}")
    if not 1 <= sizes[0] <= sizes[1] <= min(height, width):
        raise ConfigError(f"object sizes must be (lo, hi) with 1 <= lo <= hi <= {min(height, width)} (the scene's "
                          f"smaller side); got {sizes}")
    if not 0 <= min_visible <= 1:
        raise ConfigError(f"min_visible must be a fraction in [0, 1]; got {min_visible}")


def shapes_scene(rng: np.random.Generator, height: int = 256, width: int = 256, objects: tuple[int, int] = (2, 8),
                 sizes: tuple[float, float] = (16, 96), min_visible: float = 0.5, tries: int = 10) -> Scene:
    """One scene of SHAPE_CLASSES (labels 1..5) on a textured background; see the module doc."""
    _check_common(height, width, objects, sizes, min_visible)
    canvas = Canvas(textured_background(rng, height, width), min_visible)
    mean = canvas.image[::8, ::8].reshape(-1, 3).mean(0)
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        label = int(rng.integers(1, len(SHAPE_CLASSES) + 1))
        s = max(4, round(_log_uniform(rng, *sizes)))
        mask = shape_mask(SHAPE_CLASSES[label - 1], s, rng.uniform(0, 2 * np.pi))
        colour = (mean + rng.integers(80, 176, 3)) % 256  # every channel far from the background's mean
        shade = np.linspace(-20, 20, s, dtype=np.float32)[:, None, None] * rng.choice([-1, 1])
        pixels = np.clip(colour + shade + rng.normal(0, 4, (s, s, 3)), 0, 255).astype(np.uint8)
        for _ in range(tries):
            y0, x0 = int(rng.integers(0, height - s + 1)), int(rng.integers(0, width - s + 1))
            if canvas.paste(y0, x0, mask, pixels, label):
                break
    return canvas.scene()


def ink_crop(digit: np.ndarray, threshold: int) -> np.ndarray:
    """A digit image cropped to the box of its pixels > threshold (the whole image if it has none)."""
    ink = digit > threshold
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if not len(rows):
        return digit
    return digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def mnist_scene(rng: np.random.Generator, digits: np.ndarray, digit_labels: np.ndarray, height: int = 256,
                width: int = 256, objects: tuple[int, int] = (2, 8), sizes: tuple[float, float] = (12, 64),
                min_visible: float = 0.5, ink_threshold: int = 64, tries: int = 10) -> Scene:
    """One scene of MNIST digits (uint8 [N, 28, 28] and labels 0..9 [N]; label = digit + 1) on a dark noisy
    canvas, one channel; see the module doc."""
    _check_common(height, width, objects, sizes, min_visible)
    background = rng.normal(12, 6, (height, width, 1)).clip(0, 255).astype(np.uint8)
    canvas = Canvas(background, min_visible)
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        j = int(rng.integers(len(digits)))
        crop = ink_crop(np.asarray(digits[j]), ink_threshold)
        s = _log_uniform(rng, *sizes)
        h, w = crop.shape
        nh, nw = max(1, round(h * s / max(h, w))), max(1, round(w * s / max(h, w)))
        digit = np.asarray(Image.fromarray(crop).resize((nw, nh), Image.BILINEAR))
        mask = digit > ink_threshold
        for _ in range(tries):
            y0, x0 = int(rng.integers(0, height - nh + 1)), int(rng.integers(0, width - nw + 1))
            window = canvas.image[y0:y0 + nh, x0:x0 + nw, 0]
            pixels = np.where(mask, digit, np.maximum(window, digit))[..., None]  # faint edges blend over
            if canvas.paste(y0, x0, mask, pixels, int(digit_labels[j]) + 1, write=digit > 0):
                break
    return canvas.scene()


class SceneDataset(Dataset):
    """`n` generated scenes, scene i = make(default_rng([seed, i])), as (image float [C, H, W] in [0, 1], target)
    with target {boxes float32 [K, 4] xyxy, labels int64 [K] in 1..C, masks uint8 [K, H, W], area float32 [K]
    (mask pixels), iscrowd int64 [K] (zeros), image_id = i + 1}, plus semantic int64 [H, W] (0 on the objects, 1
    on the background; module doc) when `semantic`. `cache` keeps generated scenes in memory."""

    def __init__(self, make: Callable[[np.random.Generator], Scene], n: int, seed: int,
                 class_names: Sequence[str], cache: bool = True, semantic: bool = False):
        if n < 1:
            raise ConfigError(f"a scene set needs n >= 1 scenes; got {n}")
        self.make, self.n, self.seed, self.class_names = make, int(n), int(seed), tuple(class_names)
        self.semantic = bool(semantic)
        self._cache: dict[int, Scene] | None = {} if cache else None

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int) -> Scene:
        """Scene i (0 <= i < n), the same for the same seed."""
        if not 0 <= i < self.n:
            raise IndexError(f"scene index {i} out of range for {self.n} scenes")
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        scene = self.make(np.random.default_rng([self.seed, i]))
        if self._cache is not None:
            self._cache[i] = scene
        return scene

    def __getitem__(self, i: int):
        s = self.scene(i)
        masks = torch.from_numpy(s.masks())
        image = torch.from_numpy(s.image).permute(2, 0, 1).float().div_(255.0)
        target = {"boxes": torch.from_numpy(s.boxes.copy()), "labels": torch.from_numpy(s.labels.copy()),
                  "masks": masks, "area": masks.flatten(1).sum(1).float(),
                  "iscrowd": torch.zeros(len(s.labels), dtype=torch.int64), "image_id": i + 1}
        if self.semantic:
            target["semantic"] = torch.from_numpy(s.instances == 0).long()
        return image, target


def shapes_scenes(n: int, seed: int = 0, height: int = 256, width: int = 256, cache: bool = True,
                  semantic: bool = False, **kwargs) -> SceneDataset:
    """A set of `n` shapes scenes (`shapes_scene` keyword arguments pass through); classes SHAPE_CLASSES; with
    `semantic` the targets also carry the semantic map (module doc)."""
    shapes_scene(np.random.default_rng(0), height, width, **kwargs)  # refuses bad arguments now, not at item 0
    return SceneDataset(lambda rng: shapes_scene(rng, height, width, **kwargs), n, seed, SHAPE_CLASSES, cache,
                        semantic)


def mnist_scenes(n: int, seed: int = 0, height: int = 256, width: int = 256, digits=None, digit_labels=None,
                 split: str = "train", data_dir: str | os.PathLike | None = None, cache: bool = True,
                 **kwargs) -> SceneDataset:
    """A set of `n` MNIST-digit scenes (classes '0'..'9' = labels 1..10). Digits come from `digits` / `digit_labels`
    or else from the MNIST `split` under the data root (`load_mnist`)."""
    if digits is None:
        from .mnist import load_mnist

        images, labels = load_mnist(split, data_dir)
        digits, digit_labels = images[:, 0].numpy(), labels.numpy()
    digits, digit_labels = np.asarray(digits, dtype=np.uint8), np.asarray(digit_labels, dtype=np.int64)
    if digits.ndim != 3 or digit_labels.shape != (len(digits),) or not len(digits):
        raise ConfigError(f"digits must be uint8 [N, h, w] with labels [N]; got {digits.shape} and "
                          f"{digit_labels.shape}")
    mnist_scene(np.random.default_rng(0), digits, digit_labels, height, width, **kwargs)
    return SceneDataset(lambda rng: mnist_scene(rng, digits, digit_labels, height, width, **kwargs), n, seed,
                        DIGIT_CLASSES, cache)


def write_scenes(folder: str | os.PathLike, scenes: SceneDataset) -> Path:
    """Write every scene as `folder/images/NNNNNN.png` (N = image id) and all annotations, with RLE instance masks,
    as `folder/annotations.json` (COCO); returns the JSON's path. The same set gives the same bytes."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(len(scenes)):
        s = scenes.scene(i)
        name = f"{i + 1:06d}.png"
        image = Image.fromarray(s.image[..., 0] if s.image.shape[-1] == 1 else s.image)
        image.save(folder / "images" / name, compress_level=1)  # zlib level 1: 5x faster than 6, noise compresses
        # poorly at any level
        records.append({"image_id": i + 1, "file_name": f"images/{name}", "height": s.image.shape[0],
                        "width": s.image.shape[1], "boxes": s.boxes, "labels": s.labels, "masks": s.masks()})
    return write_coco(folder / "annotations.json", records, scenes.class_names)
