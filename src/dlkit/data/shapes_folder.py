"""A generated image folder of coloured shapes: `ROOT/circle|square|triangle/*.png` (Notes: 000 §3: the
class of an image is its shape, whatever its colour, size and place, which a CNN learns and a colour
histogram cannot).

It stands in for a user's own photos wherever a recipe needs an image folder and none is given, so that
`dlkit run image-folder` and its test run anywhere without a download.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ("circle", "square", "triangle")


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One size x size RGB image: a `shape` of random colour, size, position and rotation (triangles) on a
    background of another random colour."""
    bg = rng.integers(0, 256, 3)
    fg = (bg + rng.integers(80, 176, 3)) % 256  # every channel differs from the background's by 80..175
    img = Image.new("RGB", (size, size), tuple(int(v) for v in bg))
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.2, 0.4) * size
    cx, cy = rng.uniform(r, size - r, 2)
    colour = tuple(int(v) for v in fg)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        h = r / np.sqrt(2) * 1.25
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=colour)
    elif shape == "triangle":
        a = rng.uniform(0, 2 * np.pi)
        draw.polygon([(cx + r * np.cos(a + k * 2 * np.pi / 3), cy + r * np.sin(a + k * 2 * np.pi / 3))
                      for k in range(3)], fill=colour)
    else:
        raise ValueError(f"shape must be one of {SHAPE_CLASSES}; got {shape!r}")
    return img


def write_shapes_folder(root: str | os.PathLike, per_class: int = 100, size: int = 64, seed: int = 0) -> Path:
    """Write `per_class` PNG images of each of SHAPE_CLASSES under root/CLASS/ (root/circle/0000.png, ...),
    the same for the same seed; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for shape in SHAPE_CLASSES:
        (root / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_shape(shape, size, rng).save(root / shape / f"{i:04d}.png")
    return root


def temporary_shapes_folder(per_class: int = 100, size: int = 64, seed: int = 0) -> Path:
    """`write_shapes_folder` into a new temporary folder that is deleted when the process exits."""
    root = Path(tempfile.mkdtemp(prefix="dlkit-shapes-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return write_shapes_folder(root, per_class, size, seed)
