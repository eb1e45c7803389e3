"""Fast R-CNN: the CNN's convolutions run once per image, each proposal is RoI-pooled from the shared feature map
(Notes: 002 §4.3.2, 003 §6).

1. The backbone (a registered classifier through the feature contract) computes the feature map of the whole image,
   its last map at stride 16 (AlexNet: conv5, before pool5).
2. Proposals from an external algorithm (`proposer`, selective search by default; `proposals.py`) are projected onto
   the map (spatial scale 1 / stride) and RoI max-pooled to `pool_size` x `pool_size` (`dlkit.ops.roi_pool`: the
   notes' project, snap and approximate max pooling; AlexNet: 6x6, in place of pool5).
3. Two fully connected layers (fc6, fc7), then C + 1 class scores and 4 (C + 1) class-specific corrections.

Training is the multi-task loss CE + lambda 1[c != bg] Huber(t_hat_c - t) (threshold 1, lambda 1) on regions sampled
as in R-CNN (IoU >= 0.5 foreground, ground truth added, 128 per image, a quarter foreground); evaluation decodes
every class's box, NMS per class. This second stage is Faster R-CNN's (`RoIHeads`, `TwoMLPHead`,
`FastRCNNPredictor`): Faster R-CNN is Fast R-CNN with the proposals of an RPN on the same feature map. Unlike the
paper's CaffeNet head, fc6 and fc7 have no dropout (`TwoMLPHead`).

`num_classes` counts the object classes (labels 1..C); the heads have C + 1 outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn

from ...ops.roi import roi_pool
from ...registry import register_model
from .backbones import detector_backbone
from .proposals import ProposalDetector
from .roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead


class SingleMapRoIPool(nn.Module):
    """RoI max pooling of every proposal on the one shared feature map, spatial scale 1 / `stride`. Called as
    RoIHeads' pooling: (feature maps, proposals, image size) -> [K, C, size, size]."""

    def __init__(self, output_size: int, stride: int):
        super().__init__()
        self.output_size, self.stride = int(output_size), int(stride)

    def forward(self, features: Sequence[Tensor], proposals: Sequence[Tensor], image_size=None) -> Tensor:
        return roi_pool(features[-1], list(proposals), self.output_size, 1.0 / self.stride)


class FastRCNN(ProposalDetector):
    """Fast R-CNN (module docstring; `ProposalDetector`: training and evaluation outputs, `proposals=`).
    Notes: 002 §4.3.2."""

    display_name = "Fast R-CNN"

    def __init__(self, num_classes: int = 20, backbone: str | nn.Module = "alexnet_original", in_chans: int = 3,
                 stride: int = 16, pool_size: int = 7, representation_size: int = 1024,
                 pretrained_backbone: bool | str = False, frozen_bn: bool = True,
                 backbone_kwargs: Mapping | None = None, proposer: Callable[[Tensor], Tensor] | None = None,
                 max_proposals: int = 2000, proposal_mode: str = "fast", proposal_kwargs: Mapping | None = None,
                 proposal_cache: int = 4096,
                 batch_size_per_image: int = 128, positive_fraction: float = 0.25, fg_iou_thresh: float = 0.5,
                 bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0), smooth_l1_beta: float = 1.0,
                 score_thresh: float = 0.05, nms_thresh: float = 0.3, detections_per_img: int = 100,
                 image_mean: Sequence[float] | float | None = None, image_std: Sequence[float] | float | None = None):
        super().__init__(num_classes, in_chans, proposer, max_proposals, proposal_mode, proposal_cache,
                         proposal_kwargs, image_mean, image_std)
        self.backbone = detector_backbone(backbone, in_chans, None, pretrained_backbone, frozen_bn, backbone_kwargs,
                                          strides=(stride,))
        channels = self.backbone.feature_info.channels()[-1]
        self.stride = self.backbone.feature_info.reductions()[-1]
        self.roi_heads = RoIHeads(SingleMapRoIPool(pool_size, self.stride),
                                  TwoMLPHead(channels * pool_size * pool_size, representation_size),
                                  FastRCNNPredictor(representation_size, num_classes + 1), fg_iou_thresh,
                                  fg_iou_thresh, batch_size_per_image, positive_fraction, bbox_reg_weights,
                                  score_thresh, nms_thresh, detections_per_img, smooth_l1_beta)
        self.default_input_shape = (in_chans, 600, 600)

    def features(self, images: Tensor) -> Tensor:
        """The shared feature map [B, C, H / stride, W / stride] of normalised images in [0, 1]."""
        return self.backbone(self.normalize(images))[-1]


@register_model(task="detection", input_size=(3, 600, 600), num_params=58_711_529,
                params_source="hand-derived: alexnet_original's conv1-conv5 3,747,200, fc6 6 x 6 x 256 -> 4,096: "
                              "37,752,832, fc7 16,781,312, heads 4,096 x 21 + 21 and 4,096 x 84 + 84")
def fast_rcnn_alexnet(num_classes: int = 20, **kw) -> FastRCNN:
    """The notes' Fig. 4.9 Fast R-CNN: the original-width AlexNet's conv1-conv5 once per image (stride 16), RoI
    pooling 6x6 in place of pool5, fc6 and fc7 (4,096), 20 PASCAL VOC classes + background. Notes: 002 §4.3.2."""
    return FastRCNN(num_classes, "alexnet_original", stride=16, pool_size=6, representation_size=4096, **kw)


@register_model(task="detection", input_size=(3, 96, 96), num_params=132_574,
                params_source="hand-derived: vgg_tiny_fashion's convolutions and BN on 3 channels 60,864, fc6 "
                              "64 x 4 x 4 -> 64: 65,600, fc7 4,160, heads 64 x 6 + 6 and 64 x 24 + 24")
def fast_rcnn_tiny(num_classes: int = 5, **kw) -> FastRCNN:
    """A CPU-sized Fast R-CNN: the tiny VGG's convolutions (16 | 32 | 64, 64 with BN) to stride 8, RoI pooling 4x4,
    fc 64-64, 5 classes; 96x96 images, selective search with segments of at least 10 pixels (as rcnn_tiny), 500
    proposals at most. Notes: 002 §4.3.2."""
    kw = {"max_proposals": 500, "batch_size_per_image": 32, "frozen_bn": False, **kw}
    if kw.get("proposer") is None:
        kw.setdefault("proposal_kwargs", {"min_size": 10})
    model = FastRCNN(num_classes, "vgg_tiny_fashion", stride=8, pool_size=4, representation_size=64, **kw)
    model.default_input_shape = (model.in_chans, 96, 96)
    return model
