"""EfficientDet (Tan, Pang & Le 2020, "EfficientDet: scalable and efficient object detection"; Notes: 002 §4.A).

A one-stage anchor detector as RetinaNet (002 §4.3.4), with three changes:

- the feature network is a stack of BiFPN blocks (`dlkit.nn.bifpn`) over P3..P7, on the EfficientNet backbone's
  C3..C5 (the last MBConv stage at strides 8, 16, 32; the official backbone stops there, so the classifier's 1x1
  head convolution, 320 -> 1280 wide in B0, is dropped with the classifier);
- the class and box nets are `head_depth` x (separable 3x3 conv -> BN -> swish) then a separable 3x3 prediction
  conv; the convolutions are shared by every level but each level has its own batch norms (the official layout);
- everything is scaled by one compound coefficient phi (the notes' heuristic rules; paper Table 1):

      W_bifpn = 64 * 1.35^phi,  D_bifpn = 3 + phi,  D_box = D_class = 3 + floor(phi / 3),  R = 512 + 128 phi,

  backbone EfficientNet-B(phi). The released configurations `EFFICIENTDET_CONFIGS` round W to hardware-friendly
  multiples of 8 (88 for 86.4, 112 for 116.6, ...) and depart from the rules on purpose at the top: D5 keeps 7
  BiFPN layers and takes 1280 px; D6 keeps 8 layers; D7 is D6 (width 384, B6 backbone, 8 layers) at 1536 px with
  anchor scale 5 (the official configuration). D6 and D7 fuse with plain sums (the official "for stability").

Anchors: 3 scales 2^0, 2^(1/3), 2^(2/3) of anchor_scale x stride (4 x 8 = 32 px at P3), exact (not truncated),
times 3 aspect ratios h/w in {1/2, 1, 2} (the official (w, h) pairs (1.4, 0.7), (0.7, 1.4) approximate these),
centred at (j + 1/2) stride as in the official anchors. Training reuses RetinaNet's machinery
(`retinanet.focal_anchor_loss`): each anchor's best box by IoU (>= 0.5 positive, < 0.5 background, each box's best
anchors also positive), focal loss (alpha 0.25, gamma 1.5 as the official) and an L1 loss on the R-CNN box
corrections, both over the number of positives. The official box loss is a Huber loss (delta 0.1) weighted by 50;
RetinaNet's L1 loss is kept here. Inference: `retinanet.dense_anchor_detections` (per-level top-k, decoding,
clipping, NMS per class, the best 100). Images arrive in [0, 1], are normalised with the ImageNet statistics and
zero-padded to a multiple of the coarsest stride (128 for P7).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.activations import get_act_layer
from ...nn.bifpn import BiFPN, separable_conv
from ...ops.anchors import AnchorGenerator
from ...ops.box_coder import BoxCoder
from ...registry import create_model, register_model
from .backbones import detector_backbone
from .images import IMAGENET_MEAN, IMAGENET_STD, batch_images, channel_stats, normalize_and_pad, weights_dtype
from .matcher import Matcher
from .retinanet import (
    dense_anchor_detections,
    dense_level_outputs,
    focal_anchor_loss,
    prior_bias,
    retinanet_anchor_sizes,
)


@dataclass(frozen=True)
class EfficientDetConfig:
    """One row of the compound-scaling table (paper Table 1): input resolution, BiFPN width and depth, box/class
    net depth, backbone; plus the official anchor scale and fusion kind."""

    phi: int
    resolution: int
    bifpn_width: int
    bifpn_depth: int
    head_depth: int
    backbone: str
    anchor_scale: float = 4.0
    weighted_fusion: bool = True


# EfficientDet paper, Table 1 (and the official hparams: D7's anchor scale 5, plain-sum fusion for D6/D7)
EFFICIENTDET_CONFIGS: dict[int, EfficientDetConfig] = {
    0: EfficientDetConfig(0, 512, 64, 3, 3, "efficientnet_b0"),
    1: EfficientDetConfig(1, 640, 88, 4, 3, "efficientnet_b1"),
    2: EfficientDetConfig(2, 768, 112, 5, 3, "efficientnet_b2"),
    3: EfficientDetConfig(3, 896, 160, 6, 4, "efficientnet_b3"),
    4: EfficientDetConfig(4, 1024, 224, 7, 4, "efficientnet_b4"),
    5: EfficientDetConfig(5, 1280, 288, 7, 4, "efficientnet_b5"),
    6: EfficientDetConfig(6, 1280, 384, 8, 5, "efficientnet_b6", weighted_fusion=False),
    7: EfficientDetConfig(7, 1536, 384, 8, 5, "efficientnet_b6", anchor_scale=5.0, weighted_fusion=False),
}


def compound_scaling_rules(phi: int) -> tuple[float, int, int, int]:
    """The paper's heuristic rules (W_bifpn, D_bifpn, D_box, R) = (64 1.35^phi, 3 + phi, 3 + floor(phi / 3),
    512 + 128 phi), before the released table rounds W and departs at D5-D7. Notes: 002 §4.A."""
    if not isinstance(phi, int) or phi < 0:
        raise ConfigError(f"the compound coefficient phi is an integer >= 0; got {phi!r}")
    return 64 * 1.35**phi, 3 + phi, 3 + phi // 3, 512 + 128 * phi


def efficientdet_config(phi: int) -> EfficientDetConfig:
    """The released EfficientDet-D(phi) configuration (paper Table 1), phi in 0..7."""
    if phi not in EFFICIENTDET_CONFIGS:
        raise ConfigError(f"EfficientDet has configurations D0..D7; got phi={phi!r}. Use an integer 0..7")
    return EFFICIENTDET_CONFIGS[phi]


def _variance_scaling_(weight: Tensor) -> None:
    """TensorFlow's variance_scaling initialiser (scale 1, fan-in, truncated normal), the official head init."""
    fan_in = weight[0].numel()
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # the std of a unit normal truncated at +-2
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class EfficientDetHead(nn.Module):
    """The class net or the box net: `depth` x (separable 3x3 conv -> BN -> swish) then a separable 3x3 conv to
    A x K outputs. The convolutions are shared by the `num_levels` levels, the batch norms are per level (official).
    Returns [N, sum_l H_l W_l A, K] (location-major, then anchor, then output). Notes: 002 §4.A.
    """

    def __init__(self, channels: int, num_anchors: int, outputs: int, depth: int, num_levels: int,
                 final_bias: float = 0.0, act_layer="silu", bn_eps: float = 1e-3, bn_momentum: float = 0.01):
        super().__init__()
        self.num_anchors, self.outputs = num_anchors, outputs
        self.convs = nn.ModuleList(separable_conv(channels, channels) for _ in range(depth))
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum) for _ in range(depth))
            for _ in range(num_levels))
        self.act = get_act_layer(act_layer)()
        self.predict = separable_conv(channels, num_anchors * outputs)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _variance_scaling_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.predict[1].bias, final_bias)

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        if len(maps) != len(self.norms):
            raise ConfigError(f"this head has batch norms for {len(self.norms)} levels; got {len(maps)} maps")
        outs = []
        for x, norms in zip(maps, self.norms):
            for conv, bn in zip(self.convs, norms):
                x = self.act(bn(conv(x)))
            outs.append(dense_level_outputs(self.predict(x), self.num_anchors, self.outputs))
        return torch.cat(outs, dim=1)


def _c3_c5_indices(model: nn.Module, strides: Sequence[int]) -> tuple[int, ...]:
    """The last stage at each stride, the classifier's 1x1 head convolution ('head') left out: EfficientDet reads
    the last MBConv stage (official)."""
    info = model.feature_info
    have = [(i, e["reduction"]) for i, e in enumerate(info) if e["module"] != "head"]
    missing = [s for s in strides if s not in {r for _, r in have}]
    if missing:
        raise ConfigError(f"EfficientDet reads the backbone at strides {tuple(strides)}; its stages have strides "
                          f"{info.reductions()}")
    return tuple(max(i for i, r in have if r == s) for s in strides)


def _drop_unused_tail(extractor: nn.Module) -> None:
    """Remove from a feature extractor the top-level modules that run only after its last map (EfficientNet's
    head convolution), so that the detector holds (and trains) only what it computes."""
    model = getattr(extractor, "model", None)
    if model is None or not hasattr(model, "feature_path"):
        return
    names = [n for n, _ in model.feature_path()]
    last = names.index(extractor.feature_info.module_names()[-1])
    used = {n.split(".")[0] for n in names[:last + 1]}
    for name in names[last + 1:]:
        top = name.split(".")[0]
        if top not in used and top in extractor._modules:
            delattr(extractor, top)


class EfficientDet(nn.Module):
    """EfficientDet: backbone C3..C5 -> BiFPN stack -> class and box nets on every level, focal loss. Notes: 002 §4.A.

    `backbone`: a registered classifier's name (built with `in_chans`, `pretrained_backbone`, `backbone_kwargs`) or
    a classification module, read at strides 8, 16, 32 (or `out_indices`); `frozen_bn` freezes its batch norms
    (off: the official trains them). `bifpn_width` / `bifpn_depth` / `head_depth`: the compound-scaled sizes;
    `num_levels` pyramid levels (5: P3..P7). `model(images, targets)` in training returns {"classification",
    "bbox_regression"}; `model(images)` in evaluation one {boxes, scores, labels} per image (labels 1..C).
    """

    def __init__(self, num_classes: int = 90, backbone: str | nn.Module = "efficientnet_b0", in_chans: int = 3,
                 out_indices: Sequence[int] | None = None, pretrained_backbone: bool | str = False,
                 frozen_bn: bool = False, backbone_kwargs: Mapping | None = None, bifpn_width: int = 64,
                 bifpn_depth: int = 3, head_depth: int = 3, num_levels: int = 5, weighted_fusion: bool = True,
                 anchor_scale: float = 4.0, scales_per_octave: int = 3,
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), prior_probability: float = 0.01,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5, focal_alpha: float = 0.25,
                 focal_gamma: float = 1.5, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                 detections_per_img: int = 100, topk_candidates: int = 1000,
                 image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
                 resolution: int = 512, act_layer="silu", bn_eps: float = 1e-3, bn_momentum: float = 0.01):
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes counts the object classes (labels 1..C) and must be >= 1; got "
                              f"{num_classes}")
        self.num_classes, self.in_chans = num_classes, in_chans
        if isinstance(backbone, str):
            backbone = create_model(backbone, pretrained=pretrained_backbone, in_chans=in_chans,
                                    **dict(backbone_kwargs or {}))
        if out_indices is None and hasattr(backbone, "feature_info") and hasattr(backbone, "feature_path"):
            out_indices = _c3_c5_indices(backbone, (8, 16, 32))
        self.backbone = detector_backbone(backbone, in_chans, out_indices, False, frozen_bn, None)
        _drop_unused_tail(self.backbone)
        info = self.backbone.feature_info
        strides = list(info.reductions())
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ConfigError(f"BiFPN fuses levels that halve in size; the backbone maps have strides {strides}. "
                              f"Choose out_indices at strides 8, 16, 32")
        strides += [strides[-1] * 2 ** (i + 1) for i in range(num_levels - len(strides))]
        self.strides = tuple(strides)
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.bifpn = BiFPN(info.channels(), bifpn_width, bifpn_depth, num_levels, weighted_fusion,
                           act_layer=act_layer, **bn)
        sizes = retinanet_anchor_sizes(strides, anchor_scale, scales_per_octave, truncate=False)
        self.anchor_generator = AnchorGenerator(sizes, (tuple(aspect_ratios),), rounded=False, offset=0.5)
        num_anchors = self.anchor_generator.num_anchors_per_location()[0]
        self.class_net = EfficientDetHead(bifpn_width, num_anchors, num_classes, head_depth, num_levels,
                                          prior_bias(prior_probability), act_layer, **bn)
        self.box_net = EfficientDetHead(bifpn_width, num_anchors, 4, head_depth, num_levels, 0.0, act_layer, **bn)
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.topk_candidates = detections_per_img, topk_candidates
        self.size_divisible = strides[-1]
        if image_std is not None and min([image_std] if isinstance(image_std, int | float) else image_std) <= 0:
            raise ConfigError(f"image_std must be > 0; got {image_std}")
        self.register_buffer("image_mean", channel_stats(image_mean, IMAGENET_MEAN, in_chans, "image_mean")[0],
                             persistent=False)
        self.register_buffer("image_std", channel_stats(image_std, IMAGENET_STD, in_chans, "image_std")[0],
                             persistent=False)
        self.default_input_shape = (in_chans, resolution, resolution)

    def head_outputs(self, images) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """(class logits [B, N, C], box corrections [B, N, 4], anchors [N, 4], anchors per level) of images
        [B, C, H, W] in [0, 1] (normalised and padded to a multiple of the coarsest stride here)."""
        images = batch_images(images, self.in_chans, "EfficientDet", weights_dtype(self))
        x = normalize_and_pad(images, self.image_mean, self.image_std, self.size_divisible)
        maps = self.bifpn(self.backbone(x))
        anchors = self.anchor_generator(x, maps)
        per_level = [m.shape[-2] * m.shape[-1] * self.class_net.num_anchors for m in maps]
        return self.class_net(maps), self.box_net(maps), anchors, per_level

    def forward(self, images, targets: Sequence[Mapping[str, Tensor]] | None = None):
        images = batch_images(images, self.in_chans, "EfficientDet", weights_dtype(self))
        logits, deltas, anchors, per_level = self.head_outputs(images)
        if self.training:
            if targets is None:
                raise ConfigError("EfficientDet in training mode computes its loss: call model(images, targets), "
                                  "or model.eval() for detections")
            return focal_anchor_loss(logits, deltas, anchors, targets, self.matcher, self.box_coder,
                                     self.num_classes, self.focal_alpha, self.focal_gamma)
        return dense_anchor_detections(logits, deltas, anchors, per_level, tuple(images.shape[-2:]), self.box_coder,
                                       self.score_thresh, self.topk_candidates, self.nms_thresh,
                                       self.detections_per_img)


def efficientdet(phi: int, num_classes: int = 90, **kw) -> EfficientDet:
    """EfficientDet-D(phi) of `EFFICIENTDET_CONFIGS`; keyword arguments override the configuration's."""
    cfg = efficientdet_config(phi)
    args = dict(backbone=cfg.backbone, bifpn_width=cfg.bifpn_width, bifpn_depth=cfg.bifpn_depth,
                head_depth=cfg.head_depth, anchor_scale=cfg.anchor_scale, weighted_fusion=cfg.weighted_fusion,
                resolution=cfg.resolution)
    return EfficientDet(num_classes, **(args | kw))


_SOURCE = ("derived by hand from the layer shapes (tests/models/detection/test_efficientdet.py); paper Table 2: ")


@register_model(task="detection", input_size=(3, 512, 512), num_params=3_880_067, params_source=_SOURCE + "3.9M")
def efficientdet_d0(num_classes: int = 90, **kw) -> EfficientDet:
    """EfficientDet-D0 (512 px, BiFPN 64 x 3, heads of 3, EfficientNet-B0), 90 COCO classes as the official:
    3,880,067 parameters (paper: 3.9M). Notes: 002 §4.A."""
    return efficientdet(0, num_classes, **kw)


@register_model(task="detection", input_size=(3, 640, 640), num_params=6_625_898,
                params_source=_SOURCE + "6.6M")
def efficientdet_d1(num_classes: int = 90, **kw) -> EfficientDet:
    """EfficientDet-D1 (640 px, BiFPN 88 x 4, heads of 3, EfficientNet-B1, 90 classes): 6,625,898
    parameters (paper: 6.6M). Notes: 002 §4.A."""
    return efficientdet(1, num_classes, **kw)


@register_model(task="detection", input_size=(3, 768, 768), num_params=8_097_039,
                params_source=_SOURCE + "8.1M")
def efficientdet_d2(num_classes: int = 90, **kw) -> EfficientDet:
    """EfficientDet-D2 (768 px, BiFPN 112 x 5, heads of 3, EfficientNet-B2, 90 classes): 8,097,039
    parameters (paper: 8.1M). Notes: 002 §4.A."""
    return efficientdet(2, num_classes, **kw)


@register_model(task="detection", input_size=(3, 896, 896), num_params=12_032_296,
                params_source=_SOURCE + "12.0M")
def efficientdet_d3(num_classes: int = 90, **kw) -> EfficientDet:
    """EfficientDet-D3 (896 px, BiFPN 160 x 6, heads of 4, EfficientNet-B3, 90 classes): 12,032,296
    parameters (paper: 12.0M). Notes: 002 §4.A."""
    return efficientdet(3, num_classes, **kw)


@register_model(task="detection", input_size=(3, 1024, 1024), num_params=20_723_675,
                params_source=_SOURCE + "20.7M")
def efficientdet_d4(num_classes: int = 90, **kw) -> EfficientDet:
    """EfficientDet-D4 (1024 px, BiFPN 224 x 7, heads of 4, EfficientNet-B4, 90 classes): 20,723,675
    parameters (paper: 20.7M). Notes: 002 §4.A."""
    return efficientdet(4, num_classes, **kw)


@register_model(task="detection", input_size=(3, 1280, 1280), num_params=33_653_315,
                params_source=_SOURCE + "33.7M")
def efficientdet_d5(num_classes: int = 90, **kw) -> EfficientDet:
    """EfficientDet-D5 (1280 px, BiFPN 288 x 7, heads of 4, EfficientNet-B5, 90 classes): 33,653,315
    parameters (paper: 33.7M). Notes: 002 §4.A."""
    return efficientdet(5, num_classes, **kw)


@register_model(task="detection", input_size=(3, 1280, 1280), num_params=51_871_782,
                params_source=_SOURCE + "51.9M")
def efficientdet_d6(num_classes: int = 90, **kw) -> EfficientDet:
    """EfficientDet-D6 (1280 px, BiFPN 384 x 8, heads of 5, EfficientNet-B6, plain-sum fusion, 90 classes):
    51,871,782 parameters (paper: 51.9M). Notes: 002 §4.A."""
    return efficientdet(6, num_classes, **kw)


@register_model(task="detection", input_size=(3, 1536, 1536), num_params=51_871_782,
                params_source=_SOURCE + "51.9M")
def efficientdet_d7(num_classes: int = 90, **kw) -> EfficientDet:
    """EfficientDet-D7: D6 (BiFPN 384 x 8, heads of 5, EfficientNet-B6, plain-sum fusion, 90 classes) at 1536 px with
    anchor scale 5: 51,871,782 parameters (paper: 51.9M). Notes: 002 §4.A."""
    return efficientdet(7, num_classes, **kw)


@register_model(task="detection", input_size=(1, 128, 128))
def efficientdet_tiny(num_classes: int = 10, in_chans: int = 1, **kw) -> EfficientDet:
    """A small EfficientDet for CPU tests: EfficientNet-B0 at width 0.25 and depth 0.25 (no stochastic depth),
    two 32-wide BiFPN blocks over P3..P5 only (128 px images have no use for P6, P7: `num_levels=5` adds them),
    heads of 2 separable convolutions, anchors 2 x stride (16-102 px), batch norm momentum 0.1, grey images.
    Notes: 002 §4.A."""
    args = dict(backbone="efficientnet_b0",
                backbone_kwargs={"width_mult": 0.25, "depth_mult": 0.25, "drop_path": 0.0, "bn_momentum": 0.1},
                bifpn_width=32, bifpn_depth=2, head_depth=2, num_levels=3, anchor_scale=2.0, bn_momentum=0.1,
                resolution=128)
    return EfficientDet(num_classes, in_chans=in_chans, **(args | kw))
