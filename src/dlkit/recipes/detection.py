"""The data and task of every detection recipe (Notes: 002 §4; 000 §3.12); the recipes declare only the rest.

`build_detection(cfg, dist)` serves one of three sets, always as float images in [0, 1] (each detector normalises
its input itself, as torchvision's detectors do) and targets in the detection contract (`dlkit.tasks.detection`):
- `data="shapes"`: generated scenes of five coloured shapes on textured backgrounds (`detection_scenes`), square
  `image_size`, `n_train` / `n_val` / `n_test` scenes from three disjoint seeds;
- `data="mnist"`: MNIST digits placed on a dark canvas (10 classes); train and val scenes take their digits from
  MNIST's training images, test scenes from its test images;
- `data="raccoon"`: the 200 Raccoon photos (`data.voc`), letterboxed to `image_size`; the 160 train photos train,
  the 40 val photos are both the validation and the test set (the data set has no third split).
`scene` passes extra keyword arguments to the scene generator (e.g. `{"objects": [1, 1], "sizes": [12, 40]}`);
without `sizes`, the generator's object sizes for 256-pixel scenes (shapes 16-96, digits 12-64) scale with
`image_size` (at least 8 pixels).
Training augmentation: `flip` (horizontal, with the boxes; off for digits, whose mirror images are not digits).
The task is `DetectionTask` with COCO mAP (`metrics.detection.COCOMeanAP`, equal to pycocotools): `test/map_50`
and `test/map` are the recipes' results.
"""

from __future__ import annotations

from collections.abc import Callable

from ..data.box_transforms import Compose, Letterbox, RandomHorizontalFlip
from ..data.detection_scenes import mnist_scenes, shapes_scenes
from ..data.loader import detection_loaders
from ..data.voc import raccoon_detection
from ..errors import ConfigError
from ..registry import create_model
from ..tasks.detection import DetectionTask
from ..tasks.optimization import OPTIMIZER_OPTIONS
from .options import with_model_kwargs
from .registry import Setup

DATASETS = ("shapes", "mnist", "raccoon")
SPLIT_SEEDS = {"train": 0, "val": 10_000, "test": 20_000}  # added to cfg.seed: three disjoint scene sets
SIZES_AT_256 = {"shapes": (16, 96), "mnist": (12, 64)}  # the generators' default object sizes (pixels)


class _Augmented:
    """A detection data set with a box-aware transform applied to each (image, target) pair."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform
        self.class_names = getattr(dataset, "class_names", None) or getattr(dataset, "classes", None)  # VOC: classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.transform(*self.dataset[i])


def detection_sets(cfg) -> tuple[dict, tuple[str, ...], int]:
    """({"train", "val", "test"} data sets, class names, image channels) of the recipe's options."""
    if cfg.data not in DATASETS:
        raise ConfigError(f"data must be one of {list(DATASETS)}; got {cfg.data!r}")
    if cfg.image_size < 32:
        raise ConfigError(f"image_size must be at least 32 pixels; got {cfg.image_size}")
    size, scene = cfg.image_size, {k: tuple(v) if isinstance(v, list) else v for k, v in dict(cfg.scene).items()}
    if cfg.data == "raccoon":
        resize = Letterbox((size, size))
        train = raccoon_detection("train", cfg.data_dir, transform=resize)
        val = raccoon_detection("val", cfg.data_dir, transform=resize)
        parts, names, channels = {"train": train, "val": val, "test": val}, train.classes, 3
    else:
        counts = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
        if min(counts.values()) < 1:
            raise ConfigError(f"n_train, n_val and n_test must be >= 1; got {counts}")
        if "sizes" not in scene:
            lo, hi = (v * size / 256 for v in SIZES_AT_256[cfg.data])
            scene["sizes"] = (max(8.0, lo), max(8.0, hi))
        if cfg.data == "shapes":
            parts = {k: shapes_scenes(n, cfg.seed + SPLIT_SEEDS[k], size, size, **scene) for k, n in counts.items()}
        else:
            parts = {k: mnist_scenes(n, cfg.seed + SPLIT_SEEDS[k], size, size, split="test" if k == "test" else
                                     "train", data_dir=cfg.data_dir, **scene) for k, n in counts.items()}
        names, channels = parts["train"].class_names, 1 if cfg.data == "mnist" else 3
    if cfg.flip:
        parts["train"] = _Augmented(parts["train"], Compose([RandomHorizontalFlip(0.5)]))
    if cfg.subset:
        from torch.utils.data import Subset

        parts = {k: Subset(ds, range(min(cfg.subset, len(ds)))) for k, ds in parts.items()}
    return parts, tuple(names), channels


def build_detection(cfg, dist, make_model: Callable | None = None) -> Setup:
    """Data, model and detection task of a detection recipe (options in DET_DEFAULTS).

    The model is `make_model(cfg, train_set, num_classes, in_chans)` when given (for arguments fitted to the
    training boxes, such as k-means anchors); it returns the model, or (model, kwargs) where kwargs are the
    constructor arguments that rebuild it (written to model.json). Otherwise it is `create_model(cfg.model,
    num_classes=C, in_chans=..., **cfg.model_kwargs)`.
    """
    parts, names, channels = detection_sets(cfg)
    kwargs = with_model_kwargs({"num_classes": len(names), "in_chans": channels}, cfg.model_kwargs)
    if make_model is not None:
        made = make_model(cfg, parts["train"], len(names), channels)
        model, kwargs = made if isinstance(made, tuple) else (made, None)
    else:
        model = create_model(cfg.model, **kwargs)
    loaders = detection_loaders(parts, cfg.batch_size, dist.rank, dist.world_size, cfg.seed, cfg.num_workers)
    task = DetectionTask(model, cfg, class_names=names)
    spec = None if kwargs is None else {
        "name": cfg.model, "kwargs": kwargs, "class_names": list(names),
        "input": {"size": [cfg.image_size, cfg.image_size], "channels": channels, "range": [0, 1]}}
    extra = {"parameters": sum(p.numel() for p in model.parameters()), "image_size": cfg.image_size,
             "images": {k: len(ds) for k, ds in parts.items()}}
    return Setup(task, loaders["train"], loaders["val"], loaders["test"], model_spec=spec, extra=extra)


def pretrained_detector(cfg, train_set, num_classes: int, in_chans: int):
    """A `make_model` for `build_detection`: `cfg.model` on its ImageNet backbone when `cfg.pretrained` (batch norms
    frozen), from scratch otherwise; model.json rebuilds it without the ImageNet weights (the trained weights are in
    model.safetensors). Notes: 003 §3.3.2 (transfer learning)."""
    kwargs = with_model_kwargs({"num_classes": num_classes}, cfg.model_kwargs)
    model = create_model(cfg.model, pretrained=cfg.pretrained, **kwargs)
    return model, {**kwargs, "frozen_bn": bool(cfg.pretrained)}


def build_pretrained_detection(cfg, dist) -> Setup:
    """`build_detection` with `cfg.model` on its ImageNet backbone when `cfg.pretrained` (`pretrained_detector`)."""
    return build_detection(cfg, dist, make_model=pretrained_detector)


DET_DEFAULTS = dict(OPTIMIZER_OPTIONS,
    data="shapes", image_size=128, n_train=2000, n_val=200, n_test=500, scene={}, flip=False, subset=0,
    model_kwargs={}, epochs=20, batch_size=16, optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="onecycle",
    num_workers=0, log_every=20, monitor="val/map_50", monitor_mode="max", grad_clip_norm=10.0,
)
DET_SMOKE = dict(epochs=1, n_train=8, n_val=4, n_test=4, image_size=64, batch_size=4, subset=8)
