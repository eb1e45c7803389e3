"""Faster R-CNN with a feature pyramid (Notes: 002 §4.3.2-4.3.3, 003 §6).

Backbone maps C2-C5 (strides 4-32) -> FPN P2-P5 plus P6 by max pooling -> region proposal network (one size per
level, 32-512 pixels, 3 aspect ratios) -> RoI align of each proposal on the level of its size -> two fully
connected layers -> class scores and class-specific box corrections (`RoIHeads`). Images in [0, 1] are normalised
and zero-padded on the bottom and right to a multiple of 32 (torchvision's GeneralizedRCNNTransform without its
resizing: dlkit's data pipeline resizes). Labels are 1..C with 0 the background, boxes xyxy in pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.fpn import FeaturePyramidNetwork
from ...ops.anchors import AnchorGenerator
from ...ops.multiscale_roi_align import MultiScaleRoIAlign
from ...registry import register_model
from .backbones import detector_backbone
from .images import IMAGENET_MEAN, IMAGENET_STD, batch_images, channel_stats, normalize_and_pad, weights_dtype
from .roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead
from .rpn import RegionProposalNetwork, RPNHead
from .targets import check_targets


class FasterRCNN(nn.Module):
    """Faster R-CNN (module docstring). `num_classes` object classes C (labels 1..C); the box head scores C + 1,
    0 the background (torchvision's `num_classes` is this C + 1: 91 for COCO's 90 category ids).
    `model(images, targets)` in training returns {loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg};
    `model(images)` in evaluation one {boxes, scores, labels} per image. Notes: 002 §4.3.2."""

    display_name = "Faster R-CNN"  # what its errors call it (a subclass names itself)

    def __init__(self, num_classes: int = 90, backbone: str | nn.Module = "resnet50", in_chans: int = 3,
                 out_indices: Sequence[int] | None = None, pretrained_backbone: bool | str = False,
                 frozen_bn: bool = True, backbone_kwargs: Mapping | None = None, fpn_channels: int = 256,
                 anchor_sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,)),
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), rpn_pre_nms_top_n: Mapping[str, int] | None = None,
                 rpn_post_nms_top_n: Mapping[str, int] | None = None, rpn_nms_thresh: float = 0.7,
                 rpn_batch_size_per_image: int = 256, box_batch_size_per_image: int = 512,
                 representation_size: int = 1024, box_score_thresh: float = 0.05, box_nms_thresh: float = 0.5,
                 box_detections_per_img: int = 100, image_mean: Sequence[float] | None = None,
                 image_std: Sequence[float] | None = None, size_divisible: int = 32):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes is the number of object classes (labels 1..C; the box head adds the "
                              f"background), an int >= 1; got {num_classes!r}")
        self.num_classes, self.in_chans, self.size_divisible = num_classes, in_chans, size_divisible
        self.backbone = detector_backbone(backbone, in_chans, out_indices, pretrained_backbone, frozen_bn,
                                          backbone_kwargs, strides=(4, 8, 16, 32))
        self.fpn = FeaturePyramidNetwork(self.backbone.feature_info.channels(), fpn_channels, extra="pool")
        if len(anchor_sizes) != self.fpn.num_levels:
            raise ConfigError(f"anchor_sizes gives {len(anchor_sizes)} levels; the pyramid has {self.fpn.num_levels}")
        anchors = AnchorGenerator(anchor_sizes, (tuple(aspect_ratios),))
        self.rpn = RegionProposalNetwork(anchors, RPNHead(fpn_channels, anchors.num_anchors_per_location()[0]),
                                         batch_size_per_image=rpn_batch_size_per_image,
                                         pre_nms_top_n=rpn_pre_nms_top_n, post_nms_top_n=rpn_post_nms_top_n,
                                         nms_thresh=rpn_nms_thresh)
        self.roi_heads = RoIHeads(MultiScaleRoIAlign(7, 2), TwoMLPHead(fpn_channels * 49, representation_size),
                                  FastRCNNPredictor(representation_size, num_classes + 1),
                                  batch_size_per_image=box_batch_size_per_image, score_thresh=box_score_thresh,
                                  nms_thresh=box_nms_thresh, detections_per_img=box_detections_per_img)
        self.register_buffer("image_mean", channel_stats(image_mean, IMAGENET_MEAN, in_chans, "image_mean"),
                             persistent=False)
        self.register_buffer("image_std", channel_stats(image_std, IMAGENET_STD, in_chans, "image_std"),
                             persistent=False)
        self.default_input_shape = (in_chans, 800, 800)

    def _features(self, images) -> tuple[Tensor, list[Tensor], list[tuple[int, int]]]:
        images = batch_images(images, self.in_chans, self.display_name, weights_dtype(self))
        x = normalize_and_pad(images, self.image_mean, self.image_std, self.size_divisible)
        return x, self.fpn(self.backbone(x)), [tuple(images.shape[-2:])] * len(images)

    def _detect(self, images, targets) -> tuple[list[Tensor], list[tuple[int, int]], list[dict], dict[str, Tensor]]:
        """Features, the RPN's proposals and the RoI heads: (FPN maps, image sizes, detections, RPN + head losses)."""
        x, maps, sizes = self._features(images)
        proposals, rpn_losses = self.rpn(x, maps, targets, sizes)
        detections, box_losses = self.roi_heads(maps[:-1], proposals, sizes, targets)  # P6 only for proposals
        return maps, sizes, detections, {**rpn_losses, **box_losses}

    def forward(self, images, targets: Sequence[Mapping[str, Tensor]] | None = None):
        if self.training or targets is not None:
            check_targets(targets, len(images), self.num_classes, self.display_name)
        _, _, detections, losses = self._detect(images, targets)
        return losses if self.training else detections

    def proposals(self, images) -> list[Tensor]:
        """The region proposal network's boxes per image ([<= post_nms_top_n, 4] xyxy, best objectness first), as
        in evaluation; the report draws them. Notes: 002 §4.3.2."""
        was_training = self.training
        self.eval()
        try:
            x, maps, sizes = self._features(images)
            return self.rpn(x, maps, None, sizes)[0]
        finally:
            self.train(was_training)


@register_model(task="detection", family="faster_rcnn", input_size=(3, 800, 800), num_params=41_755_286,
                params_source="torchvision")
def fasterrcnn_resnet50_fpn(num_classes: int = 90, frozen_bn: bool = True, **kw) -> FasterRCNN:
    """Faster R-CNN on ResNet-50 with FPN, torchvision's layout: 41,755,286 parameters with the backbone's batch
    norms frozen (41,808,406 trainable); 90 object classes + the background, torchvision's 91. Notes: 002 §4.3.2."""
    return FasterRCNN(num_classes, "resnet50", frozen_bn=frozen_bn, **kw)




def _small_anchor_sizes(smallest: float) -> tuple[tuple[float], ...]:
    """One anchor size per level P2-P6, doubling from `smallest` (torchvision's 32-512 is `smallest=32`)."""
    return tuple((smallest * 2 ** k,) for k in range(5))


def tiny_config() -> dict:
    """The keyword arguments of the small CPU Faster R-CNN (`fasterrcnn_tiny`; Mask R-CNN's `maskrcnn_tiny`)."""
    return dict(backbone="resnet18", backbone_kwargs={"layers": (1, 1, 1, 1), "widths": (16, 32, 64, 128),
                                                      "stem_width": 16},
                frozen_bn=False, fpn_channels=64, anchor_sizes=_small_anchor_sizes(8),
                rpn_pre_nms_top_n={"training": 600, "testing": 300}, rpn_post_nms_top_n={"training": 300,
                                                                                        "testing": 100},
                box_batch_size_per_image=128, representation_size=256)


@register_model(task="detection", input_size=(1, 128, 128))
def fasterrcnn_tiny(num_classes: int = 10, in_chans: int = 1, **kw) -> FasterRCNN:
    """A small Faster R-CNN with FPN for CPU recipes (MNIST digit scenes): a ResNet of one basic block per stage
    (16-32-64-128 wide, trainable batch norm) read at strides 4-32, a 64-wide FPN P2-P6, anchors 8-128 pixels,
    fewer proposals (600 / 300 in training, 300 / 100 in evaluation) and a 256-wide box head.
    Notes: 002 §4.3.2-4.3.3."""
    model = FasterRCNN(num_classes, in_chans=in_chans, **(tiny_config() | kw))
    model.default_input_shape = (in_chans, 128, 128)
    return model


@register_model(task="detection", input_size=(3, 256, 256))
def fasterrcnn_lite0(num_classes: int = 1, pretrained: bool = False, **kw) -> FasterRCNN:
    """Faster R-CNN with FPN on EfficientNet-Lite0 (ImageNet weights with `pretrained=True`, batch norms frozen;
    trainable from scratch): C2-C5 at strides 4-32 (24, 40, 112, 320 channels), a 96-wide FPN P2-P6, anchors 16-256
    pixels for 256-pixel images, 1000 / 500 proposals in training and 500 / 100 in evaluation, a 512-wide box head,
    inputs normalised as Lite0 expects ((255 x - 127) / 128). Notes: 002
    §4.3.2-4.3.3, 003 §3.3.2."""
    args = dict(backbone="efficientnet_lite0", out_indices=(2, 3, 5, 7), frozen_bn=bool(pretrained),
                fpn_channels=96, anchor_sizes=_small_anchor_sizes(16),
                rpn_pre_nms_top_n={"training": 1000, "testing": 500},
                rpn_post_nms_top_n={"training": 500, "testing": 100}, box_batch_size_per_image=256,
                representation_size=512, image_mean=(127 / 255,) * 3, image_std=(128 / 255,) * 3)
    model = FasterRCNN(num_classes, pretrained_backbone=pretrained, **(args | kw))
    model.default_input_shape = (3, 256, 256)
    return model
