"""Image classification data in the `root/CLASS_NAME/*.png|jpg` layout (Notes: 000 §3, 003 §3).

Class ids follow the sorted class-folder names. `load_image_folder` reads everything into one
uint8 tensor (the fast path for small sets); `ImageFolder` reads lazily, one file per item, for data that
does not fit in memory. `image_folder_loaders` turns `ROOT/CLASS/*` (or `ROOT/train`, `ROOT/val`,
`ROOT/test`) into training, validation and test DataLoaders with worker processes, holding out a
stratified validation split (Notes: 000 §2.5: every class in the same proportion in both parts) when
there is no `val` folder.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..errors import ConfigError, DataNotFoundError
from .files import read_image
from .transforms import Compose, Normalize, RandomHorizontalFlip, Resize, ToFloat

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".webp")


def _folder_fix(root: str | os.PathLike) -> str:
    """How to repair a damaged image of the image folder `root` (for DataError messages)."""
    return (f"delete it or replace it with an intact copy of the image (the image folder is {root}; "
            "class folders ROOT/CLASS_NAME/*.png|jpg)")


def resize_image(img: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize a uint8 [C, H, W] image to `size=(h, w)` bilinearly with antialiasing (no-op when None): `Resize`."""
    return img if size is None else Resize(tuple(size))(img)


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"size must be (height, width) with positive values or one int; got {size!r}")
    return int(size[0]), int(size[1])


def find_images(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                classes: Sequence[str] | None = None):
    """(list of (path, class id), sorted class names) for the `root/CLASS/*` layout; `classes` fixes the class
    list and ids (a validation folder uses its training folder's, so that a missing class shifts no id).
    Without `classes` every class folder must hold an image: an empty one would be a class that never trains."""
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"image folder not found: {root} (expected root/CLASS_NAME/image files)")
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    own_classes = classes is None
    if classes is not None:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise ConfigError(f"{root} has class folders {extra[:10]} that the training folder lacks (its classes: "
                              f"{list(classes)[:20]}); add them to the training folder or remove them")
        found = [c for c in classes if (root / c).is_dir()]
    classes = list(classes) if classes is not None else found
    samples = [(p, i) for i, c in enumerate(classes) if c in found
               for p in sorted((root / c).rglob("*")) if p.is_file() and p.suffix.lower() in exts
               and not any(part.startswith(".") for part in p.relative_to(root / c).parts)]  # ._x.png, .ipynb_...
    if not samples:
        raise DataNotFoundError(f"no images with extensions {list(exts)} in class folders under {root}; "
                                f"found class folders {classes[:10]}. Expected root/CLASS_NAME/*.png")
    empty = sorted(set(found) - {classes[i] for _, i in samples}) if own_classes else []
    if empty:
        hint = (" (runs/ is where `dlkit run` writes: give it an --out outside the image folder)" if "runs" in empty
                else "")
        raise DataNotFoundError(f"class folder(s) {empty[:10]} under {root} hold no images with extensions "
                                f"{list(exts)}; expected at least one image per class (got {len(classes) - len(empty)}"
                                f" of {len(classes)} classes with images). Add images to them or remove them{hint}")
    if own_classes:
        _refuse_split_folders_as_classes(root, classes, exts)
    return samples, classes


SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "dev", "test", "testing", "eval"}


def _refuse_split_folders_as_classes(root: Path, classes: list[str], exts: tuple[str, ...]) -> None:
    """Refuse class folders that are split folders under other names (ROOT/training/CAT/..., ROOT/validation/...):
    read as classes they would train a classifier of splits. Recognised: class names that are split names, each
    holding sub-folders and no image of its own."""
    splits = [c for c in classes if c.lower() in SPLIT_NAMES]
    nested = [c for c in splits if not any(p.is_file() and p.suffix.lower() in exts for p in (root / c).iterdir())]
    if nested and len(nested) == len(splits) and len(splits) * 2 > len(classes):
        raise ConfigError(f"{root}: the class folders {nested} look like data splits (each holds sub-folders and no "
                          "image of its own); name the splits train, val (or valid, validation) and test, as "
                          "ROOT/train/CLASS/..., or pass one split's folder as the image folder")


def load_image_folder(root: str | os.PathLike, size: int | tuple[int, int] | None = None,
                      extensions: Sequence[str] = IMAGE_EXTENSIONS, mode: str = "RGB"):
    """All images of `root/CLASS/*`: (uint8 [N, C, H, W], int64 labels [N], class names).

    Images of different sizes need `size=(h, w)` (bilinear, antialiased resize).
    """
    size = _check_size(size)
    samples, classes = find_images(root, extensions)
    fix = _folder_fix(root)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda s: resize_image(read_image(s[0], mode, fix), size), samples))
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) != 1:
        raise ConfigError(f"images under {root} have different shapes {sorted(shapes)[:3]}; "
                          f"pass size=(h, w) to resize them")
    return torch.stack(images), torch.tensor([c for _, c in samples], dtype=torch.int64), classes


class ImageFolder(Dataset):
    """Lazy `root/CLASS/*` dataset: item i is (image uint8 [C, H, W], or `transform(image)`, class id).

    `classes` fixes the class names and ids (default: the sorted class folders)."""

    def __init__(self, root: str | os.PathLike, size: int | tuple[int, int] | None = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, transform: Callable | None = None,
                 mode: str = "RGB", classes: Sequence[str] | None = None):
        self.size = _check_size(size)
        self.samples, self.classes = find_images(root, extensions, classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [c for _, c in self.samples]
        self.transform, self.mode = transform, mode
        self.fix = _folder_fix(root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        img = resize_image(read_image(path, self.mode, self.fix), self.size)  # DataError names a damaged file
        return (self.transform(img) if self.transform else img), label

    def with_transform(self, transform: Callable | None) -> ImageFolder:
        """The same files with another transform (e.g. no augmentation for validation), without listing again."""
        other = copy.copy(self)
        other.transform = transform
        return other


def stratified_split(targets: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split sample indices into (kept, held out) with round(fraction x n_c) of each class c held out, drawn at
    random by `seed` (at least one of a class with two or more samples, and never all of it); Notes: 000 §2.5."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"the held-out fraction must be in (0, 1); got {fraction}")
    targets = torch.as_tensor(list(targets), dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for c in targets.unique().tolist():
        idx = (targets == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)].tolist()
        n = len(idx)
        k = min(max(round(fraction * n), 1), n - 1) if n >= 2 else 0
        held += idx[:k]
        kept += idx[k:]
    return sorted(kept), sorted(held)


def split_folders(root: str | os.PathLike) -> dict[str, Path]:
    """The split folders of an image-folder root: {'train': ROOT/train, 'val': ROOT/val (or valid, validation),
    'test': ROOT/test} where ROOT/train exists (val and test optional), else {'train': ROOT}."""
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"image folder not found: {root}. Expected ROOT/CLASS_NAME/*.png|jpg, or ROOT/train/"
                                "CLASS_NAME/... with optional ROOT/val and ROOT/test")
    if not (root / "train").is_dir():
        return {"train": root}
    out = {"train": root / "train"}
    for split, names in (("val", ("val", "valid", "validation")), ("test", ("test",))):
        for name in names:
            if (root / name).is_dir():
                out[split] = root / name
                break
    others = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                    and d not in out.values())
    if others:
        raise ConfigError(f"{root} holds a train/ folder, so it is read as split folders (train/, val/ or valid/ or "
                          f"validation/, test/), and also {others[:10]}, which is none of them. Rename or move "
                          "them; if train is one of your classes, put all class folders under ROOT/train/ (or "
                          "rename that class)")
    return out


class FolderSplits(NamedTuple):
    train: DataLoader
    val: DataLoader
    test: DataLoader | None
    classes: list[str]
    sizes: dict[str, int]  # images per split


def image_folder_loaders(root: str | os.PathLike, *, size: int | tuple[int, int], channels: int = 3,
                         mean: Sequence[float], std: Sequence[float], batch_size: int, val_fraction: float = 0.2,
                         flip: bool = False, num_workers: int = 0, seed: int = 0, subset: int = 0,
                         rank: int = 0, world_size: int = 1, pin_memory: bool = False) -> FolderSplits:
    """DataLoaders over the lazy image folders of `split_folders(root)`: images decoded as grey (channels=1) or
    RGB, resized to `size`, (x / 255 - mean) / std, random horizontal flips in training when `flip`.

    Without a val folder a stratified `val_fraction` of the training images is held out (fixed by `seed`).
    Training batches come from a DistributedSampler (a seeded permutation per epoch; under DDP each of the
    `world_size` ranks reads its share, `batch_size` being the global batch); evaluation reads everything in
    order. `subset` > 0 keeps a stratified `subset` images of each split (smoke runs)."""
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB); got {channels}")
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"mean and std need one value per channel ({channels}); got mean {list(mean)}, std "
                          f"{list(std)}")
    if batch_size < 1 or batch_size % world_size:
        raise ConfigError(f"batch_size must be a positive multiple of the number of processes ({world_size}); got "
                          f"{batch_size}")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0 (0 reads in the training process); got {num_workers}")
    folders = split_folders(root)
    mode = "L" if channels == 1 else "RGB"
    evaluate = Compose([ToFloat(), Normalize(mean, std)])
    augment = Compose([ToFloat(), RandomHorizontalFlip(0.5), Normalize(mean, std)]) if flip else evaluate
    full = ImageFolder(folders["train"], size, transform=augment, mode=mode)
    if len(full.classes) < 2:
        raise ConfigError(f"a classifier needs at least 2 classes; {folders['train']} has {len(full.classes)} class "
                          f"folder ({full.classes[0]}). Add a folder of images per class: ROOT/CLASS_NAME/*.png")
    parts: dict[str, Dataset] = {"train": full}
    if "val" in folders:
        parts["val"] = ImageFolder(folders["val"], size, transform=evaluate, mode=mode, classes=full.classes)
    else:
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1) when {root} has no val folder; got {val_fraction}")
        kept, held = stratified_split(full.targets, val_fraction, seed)
        if not held:
            raise ConfigError(f"no image of {folders['train']} can be held out for validation: every class has a "
                              "single image (a class gives one only from 2). Add images, or a ROOT/val folder "
                              "(ROOT/train/CLASS/... and ROOT/val/CLASS/...)")
        parts["train"], parts["val"] = Subset(full, kept), Subset(full.with_transform(evaluate), held)
    if "test" in folders:
        parts["test"] = ImageFolder(folders["test"], size, transform=evaluate, mode=mode, classes=full.classes)
    if subset:
        parts = {k: _stratified_subset(ds, subset, seed) for k, ds in parts.items()}
    per_rank = batch_size // world_size
    train = parts["train"]
    sampler = DistributedSampler(train, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    workers = dict(num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=pin_memory)
    loaders = {"train": DataLoader(train, batch_size=per_rank, sampler=sampler, drop_last=len(train) >= batch_size,
                                   **workers)}
    for k in ("val", "test"):
        if k in parts:
            loaders[k] = DataLoader(parts[k], batch_size=max(per_rank, 64), shuffle=False, **workers)
    return FolderSplits(loaders["train"], loaders["val"], loaders.get("test"), full.classes,
                        {k: len(ds) for k, ds in parts.items()})


def _targets(ds: Dataset) -> list[int]:
    if isinstance(ds, Subset):
        return [ds.dataset.targets[i] for i in ds.indices]
    return ds.targets


def _stratified_subset(ds: Dataset, n: int, seed: int) -> Dataset:
    targets = _targets(ds)
    if n >= len(targets):
        return ds
    _, keep = stratified_split(targets, n / len(targets), seed)
    return Subset(ds, keep)
