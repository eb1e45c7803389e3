"""Image classification data in the `root/CLASS_NAME/*.png|jpg` layout (Notes: 000 §3, 003 §3).

Class ids follow the sorted class-folder names. `load_image_folder` reads everything into one
uint8 tensor (the fast path for small sets); `ImageFolder` reads lazily, one file per item.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..errors import ConfigError, DataNotFoundError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".webp")


def read_image(path: str | os.PathLike, mode: str = "RGB") -> torch.Tensor:
    """Decode an image file into a uint8 tensor [C, H, W] (PIL `mode`: 'RGB' -> C=3, 'L' -> C=1)."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert(mode))
    if arr.dtype != np.uint8:
        raise ConfigError(f"{path}: mode {mode!r} gives {arr.dtype} pixels; use 'RGB' or 'L' for uint8")
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def resize_image(img: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize a uint8 [C, H, W] image to `size=(h, w)` bilinearly with antialiasing (no-op when None)."""
    if size is None or tuple(img.shape[-2:]) == tuple(size):
        return img
    out = F.interpolate(img[None].float(), size=tuple(size), mode="bilinear", align_corners=False,
                        antialias=True)[0]
    return out.round().clamp(0, 255).to(torch.uint8)


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"size must be (height, width) with positive values or one int; got {size!r}")
    return int(size[0]), int(size[1])


def find_images(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS):
    """(list of (path, class id), sorted class names) for the `root/CLASS/*` layout."""
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"image folder not found: {root} (expected root/CLASS_NAME/image files)")
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    samples = [(p, i) for i, c in enumerate(classes)
               for p in sorted((root / c).rglob("*")) if p.is_file() and p.suffix.lower() in exts]
    if not samples:
        raise DataNotFoundError(f"no images with extensions {list(exts)} in class folders under {root}; "
                                f"found class folders {classes[:10]}. Expected root/CLASS_NAME/*.png")
    return samples, classes


def load_image_folder(root: str | os.PathLike, size: int | tuple[int, int] | None = None,
                      extensions: Sequence[str] = IMAGE_EXTENSIONS, mode: str = "RGB"):
    """All images of `root/CLASS/*`: (uint8 [N, C, H, W], int64 labels [N], class names).

    Images of different sizes need `size=(h, w)` (bilinear, antialiased resize).
    """
    size = _check_size(size)
    samples, classes = find_images(root, extensions)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda s: resize_image(read_image(s[0], mode), size), samples))
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) != 1:
        raise ConfigError(f"images under {root} have different shapes {sorted(shapes)[:3]}; "
                          f"pass size=(h, w) to resize them")
    return torch.stack(images), torch.tensor([c for _, c in samples], dtype=torch.int64), classes


class ImageFolder(Dataset):
    """Lazy `root/CLASS/*` dataset: item i is (image uint8 [C, H, W], or `transform(image)`, class id)."""

    def __init__(self, root: str | os.PathLike, size: int | tuple[int, int] | None = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, transform: Callable | None = None,
                 mode: str = "RGB"):
        self.size = _check_size(size)
        self.samples, self.classes = find_images(root, extensions)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [c for _, c in self.samples]
        self.transform, self.mode = transform, mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        img = resize_image(read_image(path, self.mode), self.size)
        return (self.transform(img) if self.transform else img), label
