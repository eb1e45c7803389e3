"""RetinaNet (Lin et al. 2017, "Focal loss for dense object detection"; Notes: 002 §4.3.4).

A one-stage detector: a backbone read through the feature contract (`dlkit.models.backbone`, maps C3-C5 at strides
8, 16, 32), a feature pyramid on them (`dlkit.nn.fpn`, with P6 and P7 at strides 64 and 128), and two dense subnets
run on every pyramid level with the same weights: the class subnet predicts C sigmoid scores for each of the A
anchors of a location, the box subnet 4 corrections (the R-CNN box coder with weights (1, 1, 1, 1)). Each subnet is
4 x (conv3x3 256 + ReLU) then a 3x3 convolution to A C or A 4 outputs; the two do not share parameters. A = 9
anchors per location: 3 scales {2^0, 2^(1/3), 2^(2/3)} of a base size 4 x stride (32 at P3 ... 512 at P7) times 3
aspect ratios {1:2, 1:1, 2:1}.

Training (002 §4.3.4 "RetinaNet loss"): each anchor takes the ground-truth box it overlaps most (`Matcher(0.5, 0.4,
allow_low_quality_matches=True)`): IoU >= 0.5 is a positive of that box's class, < 0.4 background, in between
ignored. The class loss is the alpha-balanced focal loss (gamma 2, alpha 0.25) summed over every class of every
non-ignored anchor, the box loss the L1 distance between the predicted and the target corrections of the positive
anchors; both are divided by the number of positive anchors of the image, then averaged over the batch. The final
class convolution starts with bias b = -ln((1 - pi) / pi), pi = 0.01, so that every anchor first predicts
sigma(b) = pi and the ~10^5 easy background anchors do not swamp the first steps.

Inference: per level, the scores above `score_thresh`, at most `topk_candidates` of them
(`postprocess.top_candidates`), their boxes decoded from the anchors; then over all levels clipping, NMS per class
at `nms_thresh` and the best `detections_per_img` (`postprocess.finalize_detections`), torchvision's order.

Images arrive as floats in [0, 1] [B, C, H, W]; the model normalises them with `image_mean` / `image_std` and
zero-pads the bottom and right to a multiple of `size_divisible` (torchvision's GeneralizedRCNNTransform without
its resizing). Labels are 1..C and class channel j scores label j + 1 (torchvision's heads reserve channel 0 for a
background label that is never trained: its 91-class COCO head is a 91-class head here whose label l is
torchvision's l - 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...losses.focal import sigmoid_focal_loss
from ...nn.conv_bn_act import ConvBNAct
from ...nn.fpn import FeaturePyramidNetwork
from ...ops.anchors import AnchorGenerator
from ...ops.box_coder import BoxCoder
from ...ops.boxes import box_iou
from ...registry import register_model
from .backbones import detector_backbone
from .images import IMAGENET_MEAN, IMAGENET_STD, batch_images, normalize_and_pad, weights_dtype
from .matcher import Matcher
from .postprocess import finalize_detections, top_candidates
from .targets import check_targets


def prior_bias(prior_probability: float) -> float:
    """b = -ln((1 - pi) / pi): the logit whose sigmoid is pi (Notes: 002 §4.3.4; pi = 0.01 gives -4.59512)."""
    if not 0.0 < prior_probability < 1.0:
        raise ConfigError(f"prior_probability must be in (0, 1); got {prior_probability}")
    return -math.log((1 - prior_probability) / prior_probability)


def retinanet_anchor_sizes(strides: Sequence[int], anchor_scale: float = 4.0, scales_per_octave: int = 3,
                           truncate: bool = True) -> tuple[tuple[float, ...], ...]:
    """Anchor sizes of each level: base b = anchor_scale x stride, sizes int(b 2^(i / n)) for i < n (torchvision
    truncates the intermediate scales: 32, 40, 50 at stride 8; `truncate=False` keeps b 2^(i / n) exact, as the
    official EfficientDet)."""
    return tuple(tuple((int if truncate else float)(anchor_scale * s * 2 ** (i / scales_per_octave))
                       for i in range(scales_per_octave)) for s in strides)


def dense_level_outputs(y: Tensor, num_anchors: int, outputs: int) -> Tensor:
    """One level's head map [N, A K, H, W] as [N, H W A, K]: location-major (row by row), then anchor, then output,
    the order of `AnchorGenerator`'s anchors."""
    n, _, h, w = y.shape
    return y.view(n, num_anchors, outputs, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, outputs)


def focal_anchor_loss(logits: Tensor, deltas: Tensor, anchors: Tensor, targets: Sequence[Mapping[str, Tensor]],
                      matcher: Matcher, box_coder: BoxCoder, num_classes: int, focal_alpha: float = 0.25,
                      focal_gamma: float = 2.0) -> dict[str, Tensor]:
    """The RetinaNet loss of dense anchor predictions (class logits [B, N, C], box corrections [B, N, 4], anchors
    [N, 4]): {"classification": focal loss, "bbox_regression": L1 loss}, each summed over the image's anchors, over
    its number of positive anchors (at least 1), averaged over the images. Notes: 002 §4.3.4."""
    check_targets(targets, len(logits), num_classes, "a dense anchor detector")
    cls_losses, box_losses = [], []
    for cls_i, box_i, target in zip(logits, deltas, targets):
        boxes, labels = target["boxes"], target["labels"]
        matched = matcher(box_iou(boxes.to(anchors.dtype), anchors))
        fg = matched >= 0
        num_fg = max(1, int(fg.sum()))
        cls_target = torch.zeros_like(cls_i)
        cls_target[fg, labels[matched[fg]] - 1] = 1.0
        valid = matched != Matcher.BETWEEN
        cls_losses.append(sigmoid_focal_loss(cls_i[valid], cls_target[valid], focal_alpha, focal_gamma,
                                             reduction="sum") / num_fg)
        reg_target = box_coder.encode(boxes[matched[fg]].to(box_i.dtype), anchors[fg])
        box_losses.append(F.l1_loss(box_i[fg], reg_target, reduction="sum") / num_fg)
    return {"classification": torch.stack(cls_losses).mean(), "bbox_regression": torch.stack(box_losses).mean()}


@torch.no_grad()
def dense_anchor_detections(logits: Tensor, deltas: Tensor, anchors: Tensor, per_level: Sequence[int],
                            image_size: tuple[int, int], box_coder: BoxCoder, score_thresh: float,
                            topk_candidates: int, nms_thresh: float, detections_per_img: int
                            ) -> list[dict[str, Tensor]]:
    """One {boxes, scores, labels} per image of dense anchor predictions: per level the top `topk_candidates`
    sigmoid scores above `score_thresh`, decoded; then clipping, NMS per class and the best `detections_per_img`.
    Notes: 002 §4.3.4."""
    anchors_l = anchors.split(list(per_level))
    out = []
    for cls_i, box_i in zip(logits, deltas):
        boxes, scores, labels = [], [], []
        for c, b, a in zip(cls_i.split(list(per_level)), box_i.split(list(per_level)), anchors_l):
            idx, lab, sc = top_candidates(torch.sigmoid(c), score_thresh, topk_candidates)
            boxes.append(box_coder.decode(b[idx], a[idx]))
            scores.append(sc)
            labels.append(lab)
        out.append(finalize_detections(torch.cat(boxes), torch.cat(scores), torch.cat(labels), image_size,
                                       nms_thresh, detections_per_img))
    return out


class DenseSubnet(nn.Module):
    """One RetinaNet subnet, run on every pyramid level with the same weights: `depth` x (conv3x3 + ReLU), then a
    conv3x3 to A x K outputs, returned as [N, sum_l H_l W_l A, K] (location-major, then anchor, then output).

    Notes: 002 §4.3.4. Convolutions start at N(0, 0.01^2) with zero bias; the final bias is `final_bias`.
    """

    def __init__(self, in_chans: int, num_anchors: int, outputs: int, depth: int = 4, width: int | None = None,
                 final_bias: float = 0.0):
        super().__init__()
        width = width or in_chans
        self.num_anchors, self.outputs = num_anchors, outputs
        self.conv = nn.Sequential(*(ConvBNAct(in_chans if i == 0 else width, width, 3, norm_layer=None)
                                    for i in range(depth)))
        self.out = nn.Conv2d(width if depth else in_chans, num_anchors * outputs, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.out.bias, final_bias)

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        return torch.cat([dense_level_outputs(self.out(self.conv(x)), self.num_anchors, self.outputs) for x in maps],
                         dim=1)


class RetinaNet(nn.Module):
    """RetinaNet: backbone + FPN, class and box subnets on every level, focal loss. Notes: 002 §4.3.4.

    `backbone`: a registered classifier's name (built with `in_chans`, `pretrained_backbone` and `backbone_kwargs`),
    a classification module, or a feature extractor with `feature_info`; its maps at `out_indices` (default: the
    last stage at strides 8, 16, 32) feed the FPN of width `fpn_channels`, `extra` ('p6p7', 'pool' or 'none')
    adding coarser levels (P6 from P5 or, with `p6_source='c5'`, from C5). `frozen_bn` replaces the backbone's
    batch norms by FrozenBatchNorm2d (what torchvision does around a pretrained backbone). Anchors: `anchor_sizes`
    per level, else `anchor_scale` x stride times 3 scales per octave, with `aspect_ratios`.
    `model(images, targets)` in training returns {"classification", "bbox_regression"}; `model(images)` in
    evaluation returns one {boxes, scores, labels} per image.
    """

    def __init__(self, num_classes: int = 91, backbone: str | nn.Module = "resnet50", in_chans: int = 3,
                 out_indices: Sequence[int] | None = None, pretrained_backbone: bool | str = False,
                 frozen_bn: bool = True, backbone_kwargs: Mapping | None = None, fpn_channels: int = 256,
                 extra: str = "p6p7", p6_source: str = "p5", head_depth: int = 4,
                 anchor_sizes: Sequence[Sequence[float]] | None = None, anchor_scale: float = 4.0,
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), prior_probability: float = 0.01,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.4, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                 detections_per_img: int = 300, topk_candidates: int = 1000,
                 image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
                 size_divisible: int = 32):
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes counts the object classes (labels 1..C) and must be >= 1; got "
                              f"{num_classes}")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.backbone = detector_backbone(backbone, in_chans, out_indices, pretrained_backbone, frozen_bn,
                                          backbone_kwargs)
        info = self.backbone.feature_info
        self.fpn = FeaturePyramidNetwork(info.channels(), fpn_channels, extra=extra, p6_source=p6_source)
        strides = list(info.reductions())
        strides += [strides[-1] * 2 ** (i + 1) for i in range(self.fpn.num_levels - len(strides))]
        self.strides = tuple(strides)
        sizes = anchor_sizes if anchor_sizes is not None else retinanet_anchor_sizes(strides, anchor_scale)
        if len(sizes) != len(strides):
            raise ConfigError(f"anchor_sizes gives {len(sizes)} levels; this pyramid has {len(strides)} (strides "
                              f"{strides})")
        self.anchor_generator = AnchorGenerator(sizes, (tuple(aspect_ratios),))
        counts = set(self.anchor_generator.num_anchors_per_location())
        if len(counts) != 1:
            raise ConfigError(f"the subnets are shared by every level, which must have as many anchors each; got "
                              f"{self.anchor_generator.num_anchors_per_location()}")
        num_anchors = counts.pop()
        self.cls_subnet = DenseSubnet(fpn_channels, num_anchors, num_classes, head_depth,
                                      final_bias=prior_bias(prior_probability))
        self.box_subnet = DenseSubnet(fpn_channels, num_anchors, 4, head_depth)
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.topk_candidates = detections_per_img, topk_candidates
        self.size_divisible = size_divisible
        mean = image_mean if image_mean is not None else (IMAGENET_MEAN if in_chans == 3 else (0.5,) * in_chans)
        std = image_std if image_std is not None else (IMAGENET_STD if in_chans == 3 else (0.5,) * in_chans)
        if len(mean) != in_chans or len(std) != in_chans or min(std) <= 0:
            raise ConfigError(f"image_mean and image_std need one value per image channel ({in_chans}), std > 0; got "
                              f"{tuple(mean)}, {tuple(std)}")
        self.register_buffer("image_mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(-1, 1, 1), persistent=False)
        self.default_input_shape = (in_chans, 512, 512)

    def head_outputs(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """(class logits [B, N, C], box corrections [B, N, 4], anchors [N, 4], anchors per level) of images
        [B, C, H, W] in [0, 1] (normalised and padded here)."""
        if images.dim() != 4 or images.shape[1] != self.in_chans:
            raise ConfigError(f"RetinaNet expects images [B, {self.in_chans}, H, W] in [0, 1]; got "
                              f"{tuple(images.shape)}")
        x = normalize_and_pad(images, self.image_mean, self.image_std, self.size_divisible)
        maps = self.fpn(self.backbone(x))
        anchors = self.anchor_generator(x, maps)
        per_level = [m.shape[-2] * m.shape[-1] * self.cls_subnet.num_anchors for m in maps]
        return self.cls_subnet(maps), self.box_subnet(maps), anchors, per_level

    def forward(self, images: Tensor, targets: Sequence[Mapping[str, Tensor]] | None = None):
        images = batch_images(images, self.in_chans, "RetinaNet", weights_dtype(self))
        logits, deltas, anchors, per_level = self.head_outputs(images)
        if self.training:
            if targets is None:
                raise ConfigError("RetinaNet in training mode computes its loss: call model(images, targets), or "
                                  "model.eval() for detections")
            return self.loss(logits, deltas, anchors, targets)
        return self.detect(logits, deltas, anchors, per_level, tuple(images.shape[-2:]))

    def loss(self, logits: Tensor, deltas: Tensor, anchors: Tensor, targets: Sequence[Mapping[str, Tensor]]
             ) -> dict[str, Tensor]:
        """{"classification": focal loss, "bbox_regression": L1 loss}, each summed over the image's anchors, over
        its number of positive anchors (at least 1), averaged over the images (`focal_anchor_loss`). Notes: 002
        §4.3.4."""
        return focal_anchor_loss(logits, deltas, anchors, targets, self.matcher, self.box_coder, self.num_classes,
                                 self.focal_alpha, self.focal_gamma)

    @torch.no_grad()
    def detect(self, logits: Tensor, deltas: Tensor, anchors: Tensor, per_level: Sequence[int],
               image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """One {boxes, scores, labels} per image: per level the top candidates above `score_thresh`, decoded; then
        clipping, NMS per class and the best `detections_per_img` (`dense_anchor_detections`)."""
        return dense_anchor_detections(logits, deltas, anchors, per_level, image_size, self.box_coder,
                                       self.score_thresh, self.topk_candidates, self.nms_thresh,
                                       self.detections_per_img)


@register_model(task="detection", input_size=(3, 512, 512), num_params=34_014_999, params_source="torchvision")
def retinanet_resnet50_fpn(num_classes: int = 91, frozen_bn: bool = True, **kw) -> RetinaNet:
    """RetinaNet-ResNet-50-FPN as torchvision's retinanet_resnet50_fpn: FPN on C3-C5, P6 from P5, P7, 9 anchors,
    91 classes; 34,014,999 parameters with the backbone's batch norms frozen (34,068,119 with frozen_bn=False).
    Notes: 002 §4.3.4."""
    return RetinaNet(num_classes, "resnet50", frozen_bn=frozen_bn, **kw)


@register_model(task="detection", input_size=(1, 128, 128))
def retinanet_tiny(num_classes: int = 10, in_chans: int = 1, **kw) -> RetinaNet:
    """A small RetinaNet for CPU recipes (MNIST digit scenes): a ResNet of one basic block per stage (16-32-64-128
    wide, trainable batch norm) under a 64-wide FPN on C3-C5 (strides 8-32, no P6/P7), subnets of 4 convolutions,
    anchors 1.25 x stride (10-15 pixels at stride 8, for digits of 7-32 pixels). Notes: 002 §4.3.4."""
    args = dict(backbone="resnet18", backbone_kwargs={"layers": (1, 1, 1, 1), "widths": (16, 32, 64, 128),
                                                      "stem_width": 16},
                frozen_bn=False, fpn_channels=64, extra="none", anchor_scale=1.25)
    model = RetinaNet(num_classes, in_chans=in_chans, **(args | kw))
    model.default_input_shape = (in_chans, 128, 128)
    return model


@register_model(task="detection", input_size=(3, 256, 256))
def retinanet_lite0(num_classes: int = 1, pretrained: bool = False, **kw) -> RetinaNet:
    """RetinaNet on EfficientNet-Lite0 (ImageNet weights with `pretrained=True`, batch norms frozen; trainable from
    scratch): C3-C5 at strides 8, 16, 32 (40, 112, 320 channels), a 96-wide FPN with P6/P7 from C5, inputs
    normalised as Lite0 expects ((255 x - 127) / 128). Notes: 002 §4.3.4."""
    args = dict(backbone="efficientnet_lite0", out_indices=(3, 5, 7), frozen_bn=bool(pretrained),
                fpn_channels=96, p6_source="c5", image_mean=(127 / 255,) * 3, image_std=(128 / 255,) * 3)
    model = RetinaNet(num_classes, pretrained_backbone=pretrained, **(args | kw))
    model.default_input_shape = (3, 256, 256)
    return model
