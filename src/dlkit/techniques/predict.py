"""Prediction with a trained run on image files: the top classes of a classifier, the mask of a segmenter
(Notes: 000 §1.3 softmax output, §2.6 input normalisation, §3.11 semantic segmentation).

An image file is prepared exactly as the run's training data was (model.json's "input"): decoded as grey or
RGB, resized to the training size (bilinear, antialiased), padded with black where training padded, then
standardised, (x / 255 - mean[c]) / std[c]. A classifier's softmax p_k = exp(z_k) / sum_j exp(z_j) gives the
class probabilities; a segmenter's logits are resized back to the image's own size and each pixel takes its
arg-max class.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..data.image_folder import read_image, resize_image
from ..errors import ConfigError
from ..runs import TASKS, LoadedRun


def _input(run: LoadedRun) -> dict:
    spec = run.input
    if not spec:
        raise ConfigError(f"{run.run_dir}/model.json has no \"input\" record (channels, size, mean, std), so image "
                          "files cannot be prepared as in training; the recipe must set it in its model_spec")
    return spec


def load_image_files(paths: Sequence[str | os.PathLike], input_spec: dict) -> tuple[torch.Tensor, list]:
    """Image files prepared as model.json's `input` says: (float [N, C, H, W], each file's original (h, w))."""
    mode = {1: "L", 3: "RGB"}[input_spec["channels"]]
    size = tuple(input_spec["size"])
    images, sizes = [], []
    for p in paths:
        p = Path(p)
        if os.path.isdir(p):
            raise ConfigError(f"{p} is a folder; pass image files (for example {p}/*.png)")
        if not p.is_file():
            raise ConfigError(f"image file not found: {p}")
        img = read_image(p, mode, fix="pass an intact PNG or JPEG image")  # DataError names a damaged file
        sizes.append(tuple(img.shape[-2:]))
        images.append(resize_image(img, size))
    return preprocess(torch.stack(images), input_spec), sizes


def preprocess(images: torch.Tensor, input_spec: dict) -> torch.Tensor:
    """uint8 images [N, C, H, W] of the training size to the network's input: padded to `pad_to` with black
    where training padded, then (x / 255 - mean[c]) / std[c] (Notes: 000 §2.6)."""
    x = images.float().div(255.0)
    if input_spec.get("pad_to"):  # as data.transforms.pad_images: the odd pixel goes to the bottom / right
        (h, w), (ph, pw) = x.shape[-2:], input_spec["pad_to"]
        x = F.pad(x, ((pw - w) // 2, pw - w - (pw - w) // 2, (ph - h) // 2, ph - h - (ph - h) // 2), value=0.0)
    mean = torch.tensor(input_spec["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(input_spec["std"]).view(1, -1, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def _forward(run: LoadedRun, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    device = next(iter(run.model.parameters())).device
    return torch.cat([run.model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def classify_files(run: LoadedRun, paths: Sequence[str | os.PathLike], top: int = 5) -> list[list[tuple[str, float]]]:
    """For each image file, its `top` most probable classes as (class name, softmax probability), best first."""
    x, _ = load_image_files(paths, _input(run))
    probs = torch.softmax(_forward(run, x), dim=1)
    k = min(top, probs.shape[1])
    names = run.class_names or [str(i) for i in range(probs.shape[1])]
    values, idx = probs.topk(k, dim=1)
    return [[(names[int(i)], float(v)) for v, i in zip(vs, ids)] for vs, ids in zip(values, idx)]


def palette(num_classes: int) -> list[int]:
    """A PNG palette (768 values) of `num_classes` well-separated colours (class 0 first)."""
    colours = []
    for c in range(num_classes):
        r, g, b = colorsys.hsv_to_rgb((c * 0.618034) % 1.0, 0.65 + 0.35 * (c % 2), 0.95 - 0.3 * ((c // 2) % 2))
        colours += [int(255 * r), int(255 * g), int(255 * b)]
    return (colours + [0] * 768)[:768]


def save_mask(mask: torch.Tensor, path: str | os.PathLike, num_classes: int) -> Path:
    """Write a class map [H, W] as a palette PNG: each pixel's value is its class id, shown in that class's
    colour (read it back with PIL: np.asarray(Image.open(path)) gives the ids)."""
    if num_classes > 256:
        raise ConfigError(f"a palette PNG holds at most 256 classes; got {num_classes}")
    img = Image.fromarray(mask.to(torch.uint8).numpy())  # mode L; the palette makes it P with the same values
    img.putpalette(palette(num_classes))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def mask_paths(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, overwrite: bool = False
               ) -> list[Path]:
    """out_dir/STEM_mask.png for each image file; refused before anything is computed when two files would write
    one mask, or (without `overwrite`) when a mask file is already there: predict never replaces a file silently."""
    masks = [Path(out_dir) / f"{Path(p).stem}_mask.png" for p in paths]
    first: dict[Path, str | os.PathLike] = {}
    for p, m in zip(paths, masks):
        if m in first:
            raise ConfigError(f"{first[m]} and {p} would both write {m}; predict files with the same name in separate "
                              "calls with different --out folders")
        first[m] = p
    there = [str(m) for m in masks if m.exists()]
    if there and not overwrite:
        raise ConfigError(f"{there[0]} exists{f' (and {len(there) - 1} more mask files)' if len(there) > 1 else ''}"
                          "; predict does not replace files: pass another --out folder, or --overwrite to replace "
                          "them")
    return masks


def segment_files(run: LoadedRun, paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike = ".",
                  overwrite: bool = False) -> list[tuple[Path, torch.Tensor]]:
    """For each image file, its class map at the file's own size, written to out_dir/STEM_mask.png (`mask_paths`:
    an existing file is replaced only with `overwrite`): a list of (mask path, class ids [H, W])."""
    targets = mask_paths(paths, out_dir, overwrite)
    x, sizes = load_image_files(paths, _input(run))
    logits = _forward(run, x)
    out = []
    for target, z, size in zip(targets, logits, sizes):
        if tuple(z.shape[-2:]) != size:
            z = F.interpolate(z[None], size=size, mode="bilinear", align_corners=False)[0]
        mask = z.argmax(0)
        out.append((save_mask(mask, target, z.shape[0]), mask))
    return out


def describe_mask(mask: torch.Tensor, class_names: Sequence[str] | None, most: int = 5) -> str:
    """'road 52%, sky 20%, ...': the share of the pixels of the `most` commonest classes of a class map."""
    counts = torch.bincount(mask.flatten().long())
    order = counts.argsort(descending=True)[:most]
    names = class_names or [str(i) for i in range(len(counts))]
    return ", ".join(f"{names[int(c)]} {100 * counts[c].item() / mask.numel():.0f}%" for c in order if counts[c] > 0)


def check_task(run: LoadedRun) -> str:
    """The run's task if `dlkit predict` handles it, else a ConfigError naming the ones it does."""
    if run.task not in TASKS:
        raise ConfigError(f"dlkit predict runs {' and '.join(TASKS)} runs; {run.run_dir} is a {run.task!r} run")
    return run.task


