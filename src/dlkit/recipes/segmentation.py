"""Semantic-segmentation recipes on CamVid road scenes (Notes: 000 §3.11, 002 §5.1, 003 §4).

CamVid (SegNet version): 367 train / 101 val / 233 test frames of 480x360, 11 classes and a void label that no
loss or metric counts. The CPU recipes train at 128x96 (a quarter of each side, the aspect kept); a GPU can use
--set height=360 width=480. Training augmentation moves the label map with the image (JointTransform): a flip
and a shift of up to `crop_padding` pixels, the padded border labelled void.
"""

from __future__ import annotations

import torch

from ..data.camvid import CAMVID_CLASSES, CAMVID_VOID, load_camvid
from ..data.loader import TensorLoader
from ..data.transforms import Compose, JointTransform, RandomCrop, RandomHorizontalFlip
from ..errors import ConfigError
from ..losses.class_weights import median_frequency_weights
from ..registry import check_model_task, create_model
from ..tasks.optimization import OPTIMIZER_OPTIONS
from ..tasks.segmentation import SegmentationTask
from .options import with_model_kwargs
from .registry import Recipe, Setup, register_recipe


def _camvid_splits(cfg, dist):
    size = (cfg.height, cfg.width)  # the model says which sizes it takes (UNet: multiples of 2^depth)
    data = {s: load_camvid(s, cfg.data_dir, size=size) for s in ("train", "val", "test")}
    if cfg.subset:
        data = {s: (x[: cfg.subset], y[: cfg.subset]) for s, (x, y) in data.items()}
    x_tr = data["train"][0].float().div_(255)
    mean, std = x_tr.mean((0, 2, 3)), x_tr.std((0, 2, 3))
    if cfg.normalization not in ("dataset", "lite0"):
        raise ConfigError(f"normalization must be 'dataset' (the training set's channel statistics) or 'lite0' (what "
                          f"the ImageNet weights expect); got {cfg.normalization!r}")
    if cfg.normalization == "lite0":  # lite0_normalize as a mean and std: (255 x - 127) / 128
        mean, std = torch.full((3,), 127 / 255), torch.full((3,), 128 / 255)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x.float().div_(255) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)

    def show(x: torch.Tensor) -> torch.Tensor:
        return (x * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)).clamp(0, 1)

    parts_x, parts_y = [], []
    if cfg.crop_padding:
        parts_x.append(RandomCrop(size, padding=cfg.crop_padding, fill=0.0))  # 0 = the mean after normalising
        parts_y.append(RandomCrop(size, padding=cfg.crop_padding, fill=float(CAMVID_VOID)))
    if cfg.flip:
        parts_x.append(RandomHorizontalFlip(0.5))
        parts_y.append(RandomHorizontalFlip(0.5))
    joint = JointTransform(Compose(parts_x), Compose(parts_y)) if parts_x else None
    train = TensorLoader(norm(data["train"][0]), data["train"][1], batch_size=cfg.batch_size, shuffle=True,
                         seed=cfg.seed, joint_transform=joint, rank=dist.rank, world_size=dist.world_size,
                         drop_last=cfg.drop_last)  # DeepLab's image-pooling BN needs batches >= 2
    val = TensorLoader(norm(data["val"][0]), data["val"][1], batch_size=32, shuffle=False)
    test = TensorLoader(norm(data["test"][0]), data["test"][1], batch_size=32, shuffle=False)
    inputs = {"mean": mean.tolist(), "std": std.tolist(), "size": list(size), "channels": 3}  # for model.json
    return train, val, test, data["train"][1], show, inputs


def build_camvid(cfg, dist, model_kwargs: dict | None = None) -> Setup:
    """Data, model and segmentation task of a CamVid recipe (options in SEG_DEFAULTS); `model_kwargs`: the
    recipe's own arguments of the model, under the user's `cfg.model_kwargs`."""
    train, val, test, train_masks, show, inputs = _camvid_splits(cfg, dist)
    k = len(CAMVID_CLASSES)
    kwargs = {**(model_kwargs or {}), **with_model_kwargs({"in_chans": 3, "num_classes": k}, cfg.model_kwargs)}
    # FCN-8s on the ImageNet-trained EfficientNet-Lite0 (fine-tuned end to end); rebuilt without the ImageNet
    # download from model.json, as the trained weights are in model.safetensors
    extra_kw = {"pretrained": cfg.pretrained, "frozen_bn": cfg.frozen_bn} if cfg.model == "fcn8s_lite0" else {}
    check_model_task(cfg.model, "segmentation", "; the CamVid recipes train a segmentation model, one that maps "
                     "images to per-pixel class scores, e.g. unet_tiny, fcn8s_tiny, deeplabv3_tiny (`dlkit list "
                     "models --task segmentation`)")
    model = create_model(cfg.model, **kwargs, **extra_kw)
    if cfg.class_balance not in ("none", "median_frequency"):
        raise ConfigError(f"class_balance must be 'none' or 'median_frequency'; got {cfg.class_balance!r}")
    weights = median_frequency_weights(train_masks, k, CAMVID_VOID) if cfg.class_balance != "none" else None
    task = SegmentationTask(model, cfg, CAMVID_CLASSES, ignore_index=CAMVID_VOID, dice_weight=cfg.dice_weight,
                            class_weights=weights, show=show)
    spec_kw = {**kwargs, **extra_kw, "pretrained": False} if extra_kw else kwargs
    spec = {"name": cfg.model, "kwargs": spec_kw, "class_names": list(CAMVID_CLASSES), "input": inputs}
    extra = {"parameters": sum(p.numel() for p in model.parameters()), "image_size": [cfg.height, cfg.width]}
    return Setup(task, train, val, test, model_spec=spec, extra=extra)


SEG_DEFAULTS = dict(OPTIMIZER_OPTIONS,
    model_kwargs={}, height=96, width=128, epochs=30, batch_size=8, optimizer="adamw", lr=2e-3,
    weight_decay=1e-4, schedule="onecycle", crop_padding=8, flip=True, class_balance="none", dice_weight=0.0,
    subset=0, log_every=20, monitor="val/miou", monitor_mode="max", channels_last=True, normalization="dataset",
    drop_last=False,
)
SEG_SMOKE = dict(epochs=1, subset=8, height=48, width=64, batch_size=4)


register_recipe(Recipe(
    name="unet-camvid", task="segmentation", notes="000 §3.11.2, 002 §5.1.4, 003 §4",
    description="A small padded U-Net (batch norm, widths 16-256) trained from scratch on CamVid at 128x96; "
                "mIoU over the 233 test frames",
    # measured (30 epochs, 426 s of training on the 2-core EPYC): test mIoU 0.406, pixel accuracy 0.839 (val mIoU
    # 0.484: the val and test frames are other sequences); class_balance=median_frequency: 0.407, pixel accuracy
    # 0.727, mean class accuracy 0.643 instead of 0.477 (poles, signs, pedestrians and cyclists found more often).
    build=build_camvid, metric="test/miou", threshold=0.38, budget_s=600,
    defaults={**SEG_DEFAULTS, "model": "unet_tiny"}, smoke=SEG_SMOKE, datasets=("camvid",),
))

register_recipe(Recipe(
    name="fcn8s-camvid", task="segmentation", notes="000 §3.11.1, 002 §5.1.3, 003 §4",
    description="A small FCN-8s (VGG-style 16-128 with batch norm, sum skips from pool3 and pool4, "
                "bilinear-initialised learned upsampling) trained from scratch on CamVid at 128x96; test mIoU",
    # measured (30 epochs, 89 s of training): test mIoU 0.366; the U-Net's full-resolution skips do better (0.406)
    build=build_camvid, metric="test/miou", threshold=0.35, budget_s=180,
    defaults={**SEG_DEFAULTS, "model": "fcn8s_tiny"}, smoke={**SEG_SMOKE, "height": 64}, datasets=("camvid",),
))

register_recipe(Recipe(
    name="fcn8s-lite0-camvid", task="segmentation", notes="002 §5.1.3, 000 §3.11.1, 003 §3.3.2",
    description="FCN-8s on the ImageNet-trained EfficientNet-Lite0 (maps at strides 8, 16, 32), fine-tuned end to "
                "end on CamVid at 128x96; --set pretrained=false trains the same network from scratch",
    # measured (30 epochs, 351 s of training): test mIoU 0.427, pixel accuracy 0.823 (val mIoU 0.526); the same
    # network from scratch (pretrained=false): 0.310, pixel accuracy 0.748, so ImageNet pretraining adds 0.117
    # mIoU; 8 epochs give 0.377 in 82 s
    build=build_camvid, metric="test/miou", threshold=0.41, budget_s=600,
    defaults={**SEG_DEFAULTS, "model": "fcn8s_lite0", "pretrained": True, "frozen_bn": True,
              "normalization": "lite0", "lr": 1e-3},
    smoke={**SEG_SMOKE, "height": 64}, datasets=("camvid",),
))

register_recipe(Recipe(
    name="deeplabv3-camvid", task="segmentation", notes="002 §5.1.5, §5.A.2",
    description="A small DeepLab v3 (dilated residual backbone 16-128 at output stride 8, ASPP with image "
                "pooling) trained from scratch on CamVid at 128x96; test mIoU",
    # measured (30 epochs, 141 s in all): test mIoU 0.338; from scratch at 0.5M parameters the atrous context does
    # not make up for the missing high-resolution skips (U-Net 0.406, FCN-8s 0.366 on the same data)
    build=build_camvid, metric="test/miou", threshold=0.32, budget_s=300,
    defaults={**SEG_DEFAULTS, "model": "deeplabv3_tiny", "drop_last": True}, smoke=SEG_SMOKE, datasets=("camvid",),
))
