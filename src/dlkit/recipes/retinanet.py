"""RetinaNet recipes (Notes: 002 §4.3.4): generated MNIST digit scenes, and the real Raccoon photos on the
ImageNet-trained EfficientNet-Lite0; data and task from `recipes.detection`."""

from __future__ import annotations

from ..registry import create_model
from .detection import DET_DEFAULTS, DET_SMOKE, build_detection
from .registry import Recipe, register_recipe


def _lite0_retinanet(cfg, train_set, num_classes: int, in_chans: int):
    """retinanet_lite0 with the ImageNet backbone when `pretrained` (its batch norms frozen), from scratch otherwise;
    model.json rebuilds it without the ImageNet download (the trained weights are in model.safetensors)."""
    kwargs = {"num_classes": num_classes, **cfg.model_kwargs}
    model = create_model(cfg.model, pretrained=cfg.pretrained, **kwargs)
    return model, {**kwargs, "frozen_bn": bool(cfg.pretrained)}


def build_raccoon(cfg, dist):
    """`build_detection` with the Lite0 RetinaNet built by `_lite0_retinanet` (option `pretrained`)."""
    return build_detection(cfg, dist, make_model=_lite0_retinanet)


register_recipe(Recipe(
    name="retinanet-mnistdet", task="detection", notes="002 §4.3.4",
    description="A small RetinaNet (ResNet basic blocks 16-128, 64-wide FPN on C3-C5, class and box subnets of 4 "
                "convolutions, 9 anchors per location, focal loss) trained from scratch on 128x128 scenes of MNIST "
                "digits; COCO mAP@0.5 and mAP on test scenes built from MNIST's test digits",
    # measured (16 epochs, one thread beside another training, 514 s of training): test mAP@0.5 0.544 (val 0.518,
    # still rising in the annealing phase); lr 1e-3 for 8 epochs gave 0.171
    build=build_detection, metric="test/map_50", threshold=0.5, budget_s=600,
    defaults={**DET_DEFAULTS, "data": "mnist", "model": "retinanet_tiny", "image_size": 128, "n_train": 2000,
              "epochs": 16, "lr": 4e-3},
    smoke={**DET_SMOKE}, datasets=("mnist",),
))

register_recipe(Recipe(
    name="retinanet-raccoon", task="detection", notes="002 §4.3.4, 003 §3.3.2",
    description="RetinaNet on the ImageNet-trained EfficientNet-Lite0 (C3-C5, FPN with P6/P7, frozen batch norms) "
                "fine-tuned on the 160 Raccoon training photos letterboxed to 256x256; mAP@0.5 on the 40 validation "
                "photos. --set pretrained=false trains the same network from scratch",
    # measured (10 epochs, one thread beside the test suite, 410 s of training): mAP@0.5 0.960, mAP 0.429 on the 40
    # validation photos; the same network from scratch (pretrained=false, same 10 epochs, 434 s): mAP@0.5 0.418
    build=build_raccoon, metric="test/map_50", threshold=0.9, budget_s=600,
    defaults={**DET_DEFAULTS, "data": "raccoon", "model": "retinanet_lite0", "pretrained": True, "image_size": 256,
              "flip": True, "epochs": 10, "batch_size": 8, "lr": 1e-3},
    smoke={**DET_SMOKE}, datasets=("raccoon",),
))
