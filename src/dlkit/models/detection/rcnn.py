"""R-CNN: a CNN classifies every region proposal, warped to its input size (Notes: 002 §4.3.1-4.3.2, 003 §6).

1. Proposals per image from an external algorithm (`proposer`, selective search by default; `proposals.py`).
2. Each proposal is dilated so that `context_padding` pixels of context surround it at the warped scale (Girshick
   et al.'s p = 16 at 227), then its pixels are warped to `warp_size` x `warp_size` (bilinear resampling: `roi_align`
   with aligned=True and adaptive sampling, the mean of ceil(bin) samples per output pixel; outside the image 0,
   the mean after normalisation, as Girshick pads with the mean).
3. The CNN (a registered classifier through the feature contract, its classifier removed by `reset_classifier(0)`,
   giving its pre-logits vector: AlexNet's fc7) runs once per warped crop, then two linear layers give C + 1 class
   scores (0 the background) and 4 (C + 1) class-specific box corrections t = (dx, dy, dw, dh),
   BB_out = (x + w dx, y + h dy, w exp(dw), h exp(dh)) (centre format, the notes' bounding-box correction).
4. Evaluation: every class's corrected box, scored by the softmax, NMS per class, score threshold, top k.

Training (the notes' loss with the background class, 002 §4.3.1): the ground-truth boxes join the proposals (as
Girshick does); a proposal with IoU >= 0.5 with a box is that box's class, else background; `batch_size_per_image`
regions per image are sampled with at most `positive_fraction` positives (`balanced_sample`). The loss is

    L = CE(softmax(scores), c) + lambda 1[c != bg] smooth_L1(t_hat_c - t)

summed over the sampled regions' corrections of their true class and divided by their number (lambda: the task's
`loss_weights["loss_box_reg"]`, default 1). The notes assign each box only its best-overlapping proposal and
regress with the MSE; the paper's >= 0.5 rule contains that proposal (the box itself, IoU 1, is one) and Fast
R-CNN's Huber loss (threshold 1) replaces the MSE. The corrections are the notes' t scaled by
`bbox_reg_weights` (10, 10, 5, 5: Fast R-CNN's normalisation of the targets; (1, 1, 1, 1) gives the notes' t
exactly). Sampling, the loss and the post-processing are those of Fast/Faster R-CNN's second stage (`RoIHeads`):
R-CNN is that stage with the pooling on the feature map replaced by a warp of the image and a CNN per region.

`num_classes` counts the object classes (labels 1..C), as dlkit's SSD; the heads have C + 1 outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops.roi import roi_align
from ...registry import create_model, register_model
from .proposals import ProposalDetector
from .roi_heads import FastRCNNPredictor, RoIHeads


def dilate_for_context(boxes: Tensor, warp_size: int, context_padding: int) -> Tensor:
    """Boxes grown about their centres so that, warped to `warp_size`, the original box fills the middle
    warp_size - 2p pixels and p = `context_padding` pixels of context surround it: w' = w S / (S - 2p)."""
    if context_padding == 0:
        return boxes
    factor = warp_size / (warp_size - 2 * context_padding)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * factor / 2
    return torch.cat([centre - half, centre + half], dim=1)


class WarpRegions(nn.Module):
    """R-CNN's warp: each region (dilated for context) of the image resampled to `size` x `size` pixels, as a
    batch [K, C, size, size] of CNN inputs. Called as RoIHeads' pooling: (images, proposals, image size)."""

    def __init__(self, size: int, context_padding: int = 0):
        super().__init__()
        if size < 1 or not 0 <= 2 * context_padding < size:
            raise ConfigError(f"the warp needs size >= 1 and 0 <= 2 * context_padding < size; got size {size}, "
                              f"context_padding {context_padding}")
        self.size, self.context_padding = int(size), int(context_padding)

    def forward(self, features: Sequence[Tensor], proposals: Sequence[Tensor], image_size=None) -> Tensor:
        boxes = [dilate_for_context(b, self.size, self.context_padding) for b in proposals]
        return roi_align(features[0], boxes, self.size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


class RegionCNN(nn.Module):
    """The per-region CNN: a classifier through the feature contract (no classifier layer), read as its
    pre-logits vector (its width: `width`)."""

    def __init__(self, backbone: str | nn.Module, in_chans: int, pretrained: bool | str = False,
                 backbone_kwargs: Mapping | None = None):
        super().__init__()
        if isinstance(backbone, str):
            backbone = create_model(backbone, pretrained=pretrained, in_chans=in_chans,
                                    **dict(backbone_kwargs or {}))
        elif not isinstance(backbone, nn.Module) or backbone_kwargs:
            raise ConfigError(f"backbone must be a registered classifier's name (with backbone_kwargs) or a built "
                              f"classifier; got {type(backbone).__name__}")
        if not hasattr(backbone, "reset_classifier") or not hasattr(backbone, "head_hidden_size"):
            raise ConfigError(f"R-CNN's CNN must follow the classifier contract (reset_classifier, "
                              f"head_hidden_size); got {type(backbone).__name__}")
        backbone.reset_classifier(0)
        self.cnn, self.width = backbone, backbone.head_hidden_size

    def forward(self, crops: Tensor) -> Tensor:
        return self.cnn(crops)


class RCNN(ProposalDetector):
    """R-CNN (module docstring): external proposals -> warp -> CNN per region -> class scores and class-specific
    box corrections (`ProposalDetector`: training and evaluation outputs, `proposals=`; `proposer`: a callable
    image -> boxes; None: `SelectiveSearch(proposal_mode, max_proposals, **proposal_kwargs)`). Notes: 002 §4.3.2."""

    display_name = "R-CNN"

    def __init__(self, num_classes: int = 20, backbone: str | nn.Module = "alexnet_original", in_chans: int = 3,
                 warp_size: int = 227, context_padding: int = 16, pretrained_backbone: bool | str = False,
                 backbone_kwargs: Mapping | None = None, proposer: Callable[[Tensor], Tensor] | None = None,
                 max_proposals: int = 2000, proposal_mode: str = "fast", proposal_kwargs: Mapping | None = None,
                 proposal_cache: int = 4096,
                 batch_size_per_image: int = 128, positive_fraction: float = 0.25, fg_iou_thresh: float = 0.5,
                 bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0), smooth_l1_beta: float = 1.0,
                 score_thresh: float = 0.05, nms_thresh: float = 0.3, detections_per_img: int = 100,
                 image_mean: Sequence[float] | float | None = None, image_std: Sequence[float] | float | None = None):
        super().__init__(num_classes, in_chans, proposer, max_proposals, proposal_mode, proposal_cache,
                         proposal_kwargs, image_mean, image_std)
        self.warp_size = warp_size
        cnn = RegionCNN(backbone, in_chans, pretrained_backbone, backbone_kwargs)
        self.roi_heads = RoIHeads(WarpRegions(warp_size, context_padding), cnn,
                                  FastRCNNPredictor(cnn.width, num_classes + 1), fg_iou_thresh, fg_iou_thresh,
                                  batch_size_per_image, positive_fraction, bbox_reg_weights, score_thresh,
                                  nms_thresh, detections_per_img, smooth_l1_beta)
        self.default_input_shape = (in_chans, 500, 500)

    def features(self, images: Tensor) -> Tensor:
        """R-CNN cuts its regions from the normalised images themselves (each warped and run through the CNN)."""
        return self.normalize(images)


@register_model(task="detection", input_size=(3, 227, 227), num_params=58_711_529,
                params_source="hand-derived: alexnet_original without fc8, 3,747,200 + 37,752,832 + 16,781,312, "
                              "plus 4,096 x 21 + 21 class scores and 4,096 x 84 + 84 box corrections")
def rcnn_alexnet(num_classes: int = 20, **kw) -> RCNN:
    """The notes' Fig. 4.8 R-CNN: selective search, each proposal warped (16 pixels of context) to 227x227 for the
    original-width AlexNet (conv1-conv5, fc6, fc7), 20 PASCAL VOC classes + background. Notes: 002 §4.3.2."""
    model = RCNN(num_classes, "alexnet_original", warp_size=227, context_padding=16, **kw)
    model.default_input_shape = (model.in_chans, 227, 227)
    return model


@register_model(task="detection", input_size=(3, 96, 96), num_params=71_134,
                params_source="hand-derived: vgg_tiny_fashion's convolutions and BN on 3 channels 60,864, dense "
                              "64 x 2 x 2 -> 32: 8,224 and 32 -> 32: 1,056, heads 32 x 6 + 6 and 32 x 24 + 24")
def rcnn_tiny(num_classes: int = 5, **kw) -> RCNN:
    """A CPU-sized R-CNN: proposals warped (2 pixels of context) to 32x32 for the tiny VGG (conv 16 | 32 | 64, 64 with
    BN, 2x2 pool, dense 32-32, no dropout), 5 classes; 96x96 images, selective search with segments of at least 10
    pixels (the paper's min_size = k, 50-100 pixels, suits 500-pixel photos and merges 8-pixel objects into the
    background: recall@0.5 0.76 against 0.97 on 96-pixel shapes scenes), 500 proposals at most. Notes: 002 §4.3.2."""
    kw = {"backbone_kwargs": {"hidden": 32, "pool_size": 2, "dropout": 0.0}, "max_proposals": 500,
          "batch_size_per_image": 32, **kw}
    if kw.get("proposer") is None:
        kw.setdefault("proposal_kwargs", {"min_size": 10})
    model = RCNN(num_classes, "vgg_tiny_fashion", warp_size=32, context_padding=2, **kw)
    model.default_input_shape = (model.in_chans, 96, 96)
    return model
