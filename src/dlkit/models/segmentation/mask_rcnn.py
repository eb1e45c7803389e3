"""Mask R-CNN: Faster R-CNN with a parallel mask branch (Notes: 002 §5.2.1).

The detector is dlkit's Faster R-CNN with FPN (`FasterRCNN`), unchanged and trained as before; its RoI heads carry
one more head on the same regions (`MaskBranch`):

- RoI align (no quantisation, 2 x 2 bilinear samples per bin) reads a 14 x 14 window from the pyramid level of
  each region's size: in training the positive sampled regions, in evaluation the final detections;
- an FCN mask head, four 3 x 3 convolutions + ReLU (256 wide), a 2 x 2 stride-2 transposed convolution + ReLU to
  28 x 28 and a 1 x 1 convolution to one mask logit map per class (C + 1, background included; torchvision's
  MaskRCNNHeads + MaskRCNNPredictor);
- the loss `loss_mask` is the per-pixel binary cross-entropy averaged over 28 x 28 of the channel of the region's
  ground-truth class only: the classes do not compete for a pixel (a sigmoid per class, not a softmax over them;
  the box branch decides the class). Its target is the region's matched ground-truth mask cut by the region's
  box and resized to 28 x 28 with RoI align (torchvision's project_masks_on_boxes);
- in evaluation each detection's mask is the sigmoid of its predicted class's channel, pasted into the image
  (`dlkit.ops.masks.paste_masks_in_image`): `masks` [N, 1, H, W] probabilities, to threshold at 0.5.

Targets: the detection contract's {boxes, labels} plus `masks` [M, H, W] uint8/bool per image. The tests compare
the model with torchvision's maskrcnn_resnet50_fpn with its weights copied in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn.conv_bn_act import ConvBNAct
from ...nn.init import kaiming_normal_
from ...ops.masks import paste_masks_in_image
from ...ops.multiscale_roi_align import MultiScaleRoIAlign
from ...ops.roi import roi_align
from ...registry import register_model
from ..detection.faster_rcnn import FasterRCNN, tiny_config
from ..detection.targets import check_mask_targets, check_targets


class MaskRCNNHeads(nn.Sequential):
    """The mask head's FCN: 3 x 3 convolutions + ReLU, `widths` wide, resolution kept (Notes: 002 §5.2.1)."""

    def __init__(self, in_chans: int, widths: Sequence[int] = (256, 256, 256, 256)):
        chans = [in_chans, *widths]
        super().__init__(*(ConvBNAct(a, b, 3, norm_layer=None) for a, b in zip(chans[:-1], chans[1:])))


class MaskRCNNPredictor(nn.Module):
    """2 x 2 stride-2 transposed convolution + ReLU (14 -> 28 pixels), then a 1 x 1 convolution to one mask logit
    map per class (Notes: 002 §5.2.1)."""

    def __init__(self, in_chans: int, width: int, num_classes: int):
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_chans, width, 2, 2)
        self.mask_fcn_logits = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x)))


def project_masks_on_boxes(gt_masks: Tensor, boxes: Tensor, matches: Tensor, size: int) -> Tensor:
    """Mask targets [K, size, size]: ground-truth mask `matches[k]` of [M, H, W] cut by box k (xyxy, image pixels)
    and resized by RoI align (not aligned, adaptive sampling). Notes: 002 §5.2.1."""
    rois = torch.cat([matches[:, None].to(boxes), boxes], 1)
    return roi_align(gt_masks[:, None].to(boxes), rois, (size, size), 1.0)[:, 0]


def mask_loss(mask_logits: Tensor, labels: Tensor, mask_targets: Tensor) -> Tensor:
    """Mean per-pixel binary cross-entropy of the mask logits [K, C + 1, S, S] of each region's class `labels` [K]
    against its target [K, S, S]; the other classes' channels get no loss (Notes: 002 §5.2.1)."""
    if mask_targets.numel() == 0:
        return mask_logits.sum() * 0
    own = mask_logits[torch.arange(len(labels), device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(own, mask_targets)


class MaskBranch(nn.Module):
    """RoI align 14 x 14 -> mask head -> per-class 28 x 28 logits; a `RoIHeads.region_head` (module docstring)."""

    def __init__(self, in_chans: int, num_classes: int, widths: Sequence[int] = (256, 256, 256, 256),
                 predictor_width: int = 256, roi_size: int = 14, sampling_ratio: int = 2):
        super().__init__()
        self.mask_roi_pool = MultiScaleRoIAlign(roi_size, sampling_ratio)
        self.mask_head = MaskRCNNHeads(in_chans, widths)
        self.mask_predictor = MaskRCNNPredictor(widths[-1] if widths else in_chans, predictor_width, num_classes)
        for m in self.modules():  # He normal (fan out), zero bias, as torchvision's mask head
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                kaiming_normal_(m.weight.data, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def logits(self, features: Sequence[Tensor], boxes: Sequence[Tensor], batch_size: Sequence[int]) -> Tensor:
        """Mask logits [sum L_i, C + 1, 28, 28] of the regions `boxes` ([L_i, 4] per image)."""
        return self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, batch_size)))

    def forward(self, features: Sequence[Tensor], image_sizes: Sequence[Sequence[int]],
                detections: list[dict[str, Tensor]], sampled: Mapping[str, list[Tensor]] | None,
                targets: Sequence[Mapping[str, Tensor]] | None):
        """Training (`sampled` given): {loss_mask} over the positive sampled regions. Evaluation: adds `masks`
        [N, 1, H, W] (probabilities pasted into the image) to each image's detections; returns {}."""
        batch_size = (max(s[0] for s in image_sizes), max(s[1] for s in image_sizes))
        if sampled is not None:
            positive = [torch.nonzero(lab > 0).squeeze(1) for lab in sampled["labels"]]
            boxes = [r[p] for r, p in zip(sampled["regions"], positive)]
            logits = self.logits(features, boxes, batch_size)
            goals = [project_masks_on_boxes(t["masks"], b, m[p], logits.shape[-1])
                     for t, b, m, p in zip(targets, boxes, sampled["matches"], positive)]
            labels = torch.cat([lab[p] for lab, p in zip(sampled["labels"], positive)])
            return {"loss_mask": mask_loss(logits, labels, torch.cat(goals))}
        logits = self.logits(features, [d["boxes"] for d in detections], batch_size)
        labels = torch.cat([d["labels"] for d in detections])
        probs = logits[torch.arange(len(labels), device=labels.device), labels].sigmoid()[:, None]
        for d, p, size in zip(detections, probs.split([len(d["boxes"]) for d in detections]), image_sizes):
            d["masks"] = paste_masks_in_image(p, d["boxes"], size)
        return {}


class MaskRCNN(FasterRCNN):
    """Mask R-CNN (module docstring): `FasterRCNN`'s arguments plus the mask head's `mask_widths` (its 3 x 3
    convolutions) and `mask_predictor_width` (the transposed convolution). Training returns Faster R-CNN's losses
    and `loss_mask`; evaluation adds `masks` [N, 1, H, W] probabilities to each image's detections.
    Notes: 002 §5.2.1."""

    display_name = "Mask R-CNN"
    needs_masks = True  # its training targets carry `masks` [M, H, W]

    def __init__(self, num_classes: int = 90, *args, mask_widths: Sequence[int] = (256, 256, 256, 256),
                 mask_predictor_width: int = 256, **kw):
        super().__init__(num_classes, *args, **kw)
        self.roi_heads.region_head = MaskBranch(self.fpn.out_channels, num_classes + 1, mask_widths,
                                                mask_predictor_width)

    def forward(self, images, targets: Sequence[Mapping[str, Tensor]] | None = None):
        sizes = [tuple(im.shape[-2:]) for im in images]
        if self.training or targets is not None:
            check_targets(targets, len(images), self.num_classes, "Mask R-CNN")
            check_mask_targets(targets, sizes, "Mask R-CNN")
        return super().forward(images, targets)


@register_model(task="detection", family="mask_rcnn", input_size=(3, 800, 800), num_params=44_401_393,
                params_source="torchvision")
def maskrcnn_resnet50_fpn(num_classes: int = 90, frozen_bn: bool = True, **kw) -> MaskRCNN:
    """Mask R-CNN on ResNet-50 with FPN, torchvision's layout: 44,401,393 parameters with the backbone's batch norms
    frozen (44,454,513 trainable); 90 object classes + the background, torchvision's 91. Notes: 002 §5.2.1."""
    return MaskRCNN(num_classes, "resnet50", frozen_bn=frozen_bn, **kw)


@register_model(task="detection", family="mask_rcnn", input_size=(3, 128, 128))
def maskrcnn_tiny(num_classes: int = 3, in_chans: int = 3, **kw) -> MaskRCNN:
    """A small Mask R-CNN for CPU recipes (shape scenes): `fasterrcnn_tiny`'s detector (one basic block per stage,
    64-wide FPN, anchors 8-128 pixels) on 3-channel images with a mask head of four 64-wide convolutions.
    Notes: 002 §5.2.1."""
    model = MaskRCNN(num_classes, in_chans=in_chans, **(tiny_config() | dict(mask_widths=(64,) * 4,
                                                                            mask_predictor_width=64) | kw))
    model.default_input_shape = (in_chans, 128, 128)
    return model
