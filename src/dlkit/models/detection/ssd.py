"""SSD: the single-shot multi-scale detector (Liu et al., 2016; Notes: 002 §4.3.3 CNN-pyramid multi-scale
detection, §4.3.4 one-stage detectors and hard negative mining).

One network, no proposal stage: the backbone's maps at several strides (the CNN pyramid of §4.3.3), plus extra
down-sampling layers (1x1 conv to fewer channels, then a 3x3 conv, usually of stride 2) that continue it to coarser
maps, each get a 3x3 convolution predicting, for every default box of every location, C + 1 class scores
(softmax, class 0 the background) and 4 box corrections. Shallow, fine maps find small objects and deep, coarse
maps large ones, because the default boxes of map k (of m) have the scale

    s_k = s_min + (s_max - s_min) (k - 1) / (m - 1),   k = 1..m    (SSD: s_min = 0.2, s_max = 0.9)

of the image side, and aspect ratios a in {1, 2, 1/2, 3, 1/3, ...}: w = s_k sqrt(a), h = s_k / sqrt(a), plus one
more square box of scale s'_k = sqrt(s_k s_{k+1}) (s_{m+1} = 1, as torchvision). A box is centred on its cell,
((j + 0.5) / f_k, (i + 0.5) / f_k), or ((j + 0.5) step_k / W, ...) when `steps` are given.

Training: a default box is matched to a ground-truth box when their IoU is >= 0.5, and every ground-truth box also
gets its best default box (`dlkit.models.detection.matcher.Matcher`); the box corrections are the R-CNN coder's
with SSD's variances 0.1 / 0.2, i.e. weights (10, 10, 5, 5) (`dlkit.ops.BoxCoder`). The loss is
`dlkit.losses.multibox.multibox_loss`: smooth L1 on the positives and cross-entropy on the positives and the 3x as
many hardest negatives, divided by the number of positives. Inference: softmax, per class the `topk_candidates`
best boxes scored above `score_thresh`, then NMS per class (`postprocess.finalize_detections`).

`ssd300_vgg16` is the paper's SSD300 as torchvision builds it: VGG-16 to conv4_3 (L2-normalised, learned scale 20,
pool3 rounding up), pool5 3x3/1, fc6 as a 3x3 convolution of dilation 6, fc7 1x1, four extra blocks; maps of 38,
19, 10, 5, 3, 1 cells at 300x300. Parameters with torchvision's 91 COCO classes (90 objects + background):
VGG conv1_1-conv5_3 14,714,688 + L2 scale 512 + fc6 (512 x 9 + 1) x 1024 = 4,719,616 + fc7 1,049,600 +
extras 262,400 + 1,180,160 + 65,664 + 295,168 + 32,896 + 295,168 + 32,896 + 295,168 = 2,459,520 + heads
(4 and 6 boxes per location on maps of 512, 1024, 512, 256, 256, 256 channels; 3x3 convs to 91 and 4 outputs
per box) 12,697,890 = 35,641,826 (torchvision's published count). The detector runs at the input's size: resize
images to 300x300 for SSD300 (torchvision's model resizes them itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...losses.multibox import multibox_loss
from ...nn.init import init_weights
from ...nn.norm import get_norm_layer
from ...ops.box_coder import BoxCoder
from ...ops.boxes import box_iou
from ...registry import create_model, register_model
from ..backbone import FeatureExtractor, FeatureInfo
from .images import IMAGENET_MEAN, IMAGENET_STD, batch_images, weights_dtype
from .matcher import Matcher
from .postprocess import finalize_detections, top_candidates
from .targets import check_targets


def ssd_scales(m: int, s_min: float = 0.2, s_max: float = 0.9) -> list[float]:
    """The m + 1 scales of SSD's default boxes: s_k = s_min + (s_max - s_min)(k - 1)/(m - 1) for k = 1..m, then
    s_{m+1} = 1 (only used by the extra box sqrt(s_m s_{m+1}); one map: [s_min, s_max]). Notes: 002 §4.3.3."""
    if m < 1 or not 0 < s_min <= s_max:
        raise ConfigError(f"SSD scales need m >= 1 maps and 0 < s_min <= s_max; got m={m}, s_min={s_min}, "
                          f"s_max={s_max}")
    if m == 1:
        return [float(s_min), float(s_max)]
    return [s_min + (s_max - s_min) * (k - 1) / (m - 1) for k in range(1, m + 1)] + [1.0]


class DefaultBoxes:
    """SSD's default boxes of every map, xyxy in pixels, location-major (row by row), then box. Notes: 002 §4.3.3.

    Map k has `2 + 2 len(aspect_ratios[k])` boxes per location: squares of scale s_k and sqrt(s_k s_{k+1}), then
    for each ratio a the boxes (s_k sqrt(a), s_k / sqrt(a)) and (s_k / sqrt(a), s_k sqrt(a)), as fractions of the
    image width and height. `scales` (m + 1 values) replaces the rule of `ssd_scales(m, s_min, s_max)`; `steps`
    (pixels per cell) replaces the map size in the centres; `clip` clamps the sizes to [0, 1]. Equal to
    torchvision's `DefaultBoxGenerator`.
    """

    def __init__(self, aspect_ratios: Sequence[Sequence[float]], s_min: float = 0.2, s_max: float = 0.9,
                 scales: Sequence[float] | None = None, steps: Sequence[float] | None = None, clip: bool = True):
        m = len(aspect_ratios)
        if m < 1 or any(r <= 0 for ratios in aspect_ratios for r in ratios):
            raise ConfigError(f"aspect_ratios lists the positive ratios of every map, e.g. [[2], [2, 3]]; got "
                              f"{aspect_ratios}")
        self.scales = [float(s) for s in scales] if scales is not None else ssd_scales(m, s_min, s_max)
        if len(self.scales) != m + 1 or min(self.scales) <= 0:
            raise ConfigError(f"scales must be {m + 1} positive numbers (one per map and one more); got {scales}")
        if steps is not None and len(steps) != m:
            raise ConfigError(f"steps must give one stride per map ({m}); got {list(steps)}")
        self.aspect_ratios = [tuple(float(r) for r in ratios) for ratios in aspect_ratios]
        self.steps, self.clip = (None if steps is None else [float(s) for s in steps]), clip

    def __repr__(self) -> str:
        return (f"DefaultBoxes(aspect_ratios={self.aspect_ratios}, scales={[round(s, 4) for s in self.scales]}, "
                f"steps={self.steps}, clip={self.clip})")

    def num_per_location(self) -> list[int]:
        """Boxes per location of every map."""
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def shapes(self, k: int) -> list[tuple[float, float]]:
        """(w, h) of map k's boxes as fractions of the image width and height."""
        s, s_next = self.scales[k], self.scales[k + 1]
        out = [(s, s), (math.sqrt(s * s_next),) * 2]
        for a in self.aspect_ratios[k]:
            r = math.sqrt(a)
            out += [(s * r, s / r), (s / r, s * r)]
        return out

    def __call__(self, image_size: Sequence[int], grid_sizes: Sequence[Sequence[int]],
                 dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """Boxes [sum_k H_k W_k A_k, 4] for an image of `image_size` (H, W) and maps of `grid_sizes` (H_k, W_k)."""
        if len(grid_sizes) != len(self.aspect_ratios):
            raise ConfigError(f"the detector has {len(grid_sizes)} feature maps but default boxes for "
                              f"{len(self.aspect_ratios)}; give one aspect-ratio list per map")
        height, width = image_size
        out = []
        for k, (fh, fw) in enumerate(grid_sizes):
            cells_x, cells_y = (width / self.steps[k], height / self.steps[k]) if self.steps else (fw, fh)
            cx = (torch.arange(int(fw)) + 0.5) / cells_x
            cy = (torch.arange(int(fh)) + 0.5) / cells_y
            y, x = torch.meshgrid(cy.to(dtype), cx.to(dtype), indexing="ij")
            wh = torch.tensor(self.shapes(k), dtype=dtype)
            wh = wh.clamp(0, 1) if self.clip else wh
            centres = torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)[:, None, :].expand(-1, len(wh), 2)
            wh = wh[None].expand_as(centres)
            out.append(torch.cat([centres - 0.5 * wh, centres + 0.5 * wh], dim=-1).reshape(-1, 4))
        scale = torch.tensor([width, height, width, height], dtype=dtype)
        return (torch.cat(out) * scale).to(device)


def extra_block(in_chans: int, mid_chans: int, out_chans: int, stride: int = 2, padding: int = 1,
                norm_layer=None) -> nn.Sequential:
    """SSD's extra layers: conv 1x1 to `mid_chans` + ReLU, conv 3x3 (`stride`, `padding`) to `out_chans` + ReLU,
    each with a normalisation after the convolution when `norm_layer` is given. Notes: 002 §4.3.3."""
    make_norm = get_norm_layer(norm_layer)
    layers: list[nn.Module] = []
    for cin, cout, k, s, p in ((in_chans, mid_chans, 1, 1, 0), (mid_chans, out_chans, 3, stride, padding)):
        layers.append(nn.Conv2d(cin, cout, k, s, p, bias=make_norm is None))
        if make_norm is not None:
            layers.append(make_norm(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class L2Norm(nn.Module):
    """y = w_c x / ||x||_2 over the channels at each location, w learned per channel (init 20): SSD's rescaling of
    conv4_3, whose activations are larger than the deeper maps'. Notes: 002 §4.3.3."""

    def __init__(self, channels: int, scale: float = 20.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return self.weight.view(1, -1, 1, 1) * F.normalize(x, dim=1)


class VGGSSDTrunk(nn.Module):
    """SSD300's VGG-16 trunk: [L2Norm(conv4_3), fc7] at strides 8 and 16. Notes: 002 §4.3.3.

    conv1_1-conv4_3 are the registered `vgg16`'s first stages through the feature contract (its configuration cut
    after conv4_3; pool3 rounds up, so 75 -> 38 cells at 300x300, as the paper); pool4, conv5_1-5_3, pool5 3x3 of
    stride 1, fc6 (3x3, dilation 6) and fc7 (1x1), each convolution followed by ReLU, continue it at stride 16.
    """

    CONV4_3 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)

    def __init__(self, in_chans: int = 3):
        super().__init__()
        self.vgg = create_model("vgg16", cfg=self.CONV4_3, in_chans=in_chans, features_only=True, out_indices=(-1,))
        pools = [m for m in self.vgg.features if isinstance(m, nn.MaxPool2d)]
        pools[2].ceil_mode = True
        self.l2norm = L2Norm(512)
        layers: list[nn.Module] = [nn.MaxPool2d(2, 2)]
        for _ in range(3):
            layers += [nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(inplace=True)]
        layers += [nn.MaxPool2d(3, 1, 1), nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.ReLU(inplace=True),
                   nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True)]
        self.fc7 = nn.Sequential(*layers)
        init_weights(self.fc7, conv="xavier_uniform")
        self.feature_info = FeatureInfo([FeatureInfo.entry("l2norm", 512, 8), FeatureInfo.entry("fc7", 1024, 16)])

    def forward(self, x: Tensor) -> list[Tensor]:
        conv4_3 = self.vgg(x)[-1]
        return [self.l2norm(conv4_3), self.fc7(conv4_3)]


class SSD(nn.Module):
    """SSD on any backbone with `feature_info`: multi-scale maps -> per-map 3x3 class and box heads. Notes: 002
    §4.3.3, §4.3.4.

    `num_classes` object classes (labels 1..C; the heads have C + 1 outputs per box, 0 the background).
    `backbone` is a registered classifier's name, read through the feature contract at the indices `stages` of
    its `feature_info` (built with `backbone_kwargs`; `frozen_bn` keeps its batch norms in eval mode), or a module
    returning a list of maps with `feature_info`. `extra_layers` lists (mid, out, stride, padding) of the extra
    blocks after the last map (`extra_norm` normalises them). Default boxes: `aspect_ratios` per map (one list is
    used for every map), `s_min`, `s_max` or `scales`, `steps` (`DefaultBoxes`). Images in [0, 1] are normalised by
    `image_mean`, `image_std` (default: ImageNet's for 3 channels, 0.5 and 0.25 otherwise). Training:
    `iou_thresh`, `neg_pos_ratio`, `box_weights`; inference: `score_thresh`, `topk_candidates` per class,
    `nms_thresh`, `detections_per_img`. `image_size` is the side it is designed for (its default input shape;
    the default boxes are relative, so any size runs).
    """

    def __init__(self, num_classes: int, backbone: str | nn.Module = "resnet18", in_chans: int = 3,
                 stages: Sequence[int] = (-3, -2, -1), backbone_kwargs: dict | None = None,
                 frozen_bn: bool = False, extra_layers: Sequence[Sequence[int]] = ((128, 256, 2, 1), (128, 256, 2, 1)),
                 extra_norm=None, aspect_ratios: Sequence[Sequence[float]] = ((2.0, 3.0),), s_min: float = 0.2,
                 s_max: float = 0.9, scales: Sequence[float] | None = None, steps: Sequence[float] | None = None,
                 image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
                 iou_thresh: float = 0.5, neg_pos_ratio: float = 3.0,
                 box_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0), score_thresh: float = 0.01,
                 nms_thresh: float = 0.45, topk_candidates: int = 400, detections_per_img: int = 200,
                 image_size: int = 300):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"SSD num_classes is the number of object classes (labels 1..C, >= 1); got "
                              f"{num_classes!r}")
        self.num_classes, self.in_chans = num_classes, in_chans
        if isinstance(backbone, str):
            net = create_model(backbone, in_chans=in_chans, **(backbone_kwargs or {}))
            backbone = FeatureExtractor(net, stages, frozen_bn=frozen_bn, name=backbone)
        info = getattr(backbone, "feature_info", None)
        if not isinstance(backbone, nn.Module) or not isinstance(info, FeatureInfo):
            raise ConfigError(f"an SSD backbone is a registered classifier's name or a module with feature_info that "
                              f"returns a list of maps (create_model(name, features_only=True)); got "
                              f"{type(backbone).__name__}")
        self.backbone = backbone
        chans = info.channels()
        blocks = []
        for spec in extra_layers:
            if len(spec) != 4:
                raise ConfigError(f"each extra layer is (mid channels, out channels, stride, padding); got {spec}")
            blocks.append(extra_block(chans[-1], *spec[:2], stride=spec[2], padding=spec[3], norm_layer=extra_norm))
            chans.append(spec[1])
        self.extras = nn.ModuleList(blocks)
        ratios = list(aspect_ratios) * len(chans) if len(aspect_ratios) == 1 else list(aspect_ratios)
        if len(ratios) != len(chans):
            raise ConfigError(f"aspect_ratios must give one list per map ({len(chans)}: {len(info)} backbone maps + "
                              f"{len(blocks)} extra), or one list for all; got {len(aspect_ratios)}")
        self.default_boxes = DefaultBoxes(ratios, s_min, s_max, scales, steps)
        boxes = self.default_boxes.num_per_location()
        self.cls_heads = nn.ModuleList(nn.Conv2d(c, a * (num_classes + 1), 3, padding=1) for c, a in zip(chans, boxes))
        self.box_heads = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(chans, boxes))
        init_weights([self.extras, self.cls_heads, self.box_heads], conv="xavier_uniform")
        if image_mean is None:
            image_mean, image_std = (IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else ((0.5,) * in_chans,
                                                                                         (0.25,) * in_chans)
        if len(image_mean) != in_chans or image_std is None or len(image_std) != in_chans:
            raise ConfigError(f"image_mean and image_std need {in_chans} values (one per channel); got {image_mean}, "
                              f"{image_std}")
        # tuples, not buffers: a model built on the meta device and loaded with assign=True needs nothing else
        self.image_mean, self.image_std = tuple(float(v) for v in image_mean), tuple(float(v) for v in image_std)
        self.matcher = Matcher(iou_thresh, iou_thresh)
        self.box_coder = BoxCoder(tuple(box_weights))
        self.neg_pos_ratio, self.score_thresh, self.nms_thresh = neg_pos_ratio, score_thresh, nms_thresh
        self.topk_candidates, self.detections_per_img = topk_candidates, detections_per_img
        self.default_input_shape = (in_chans, image_size, image_size)

    def _images(self, images) -> Tensor:
        return batch_images(images, self.in_chans, "SSD", weights_dtype(self))

    def normalize(self, images: Tensor) -> Tensor:
        """(images - image_mean) / image_std per channel."""
        mean, std = (torch.tensor(v, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
                     for v in (self.image_mean, self.image_std))
        return (images - mean) / std

    def features(self, images: Tensor) -> list[Tensor]:
        """The maps the heads read: the backbone's, then one per extra block. `images` are already normalised."""
        maps = list(self.backbone(images))
        for block in self.extras:
            maps.append(block(maps[-1]))
        return maps

    def head_outputs(self, maps: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Class logits [B, A, C + 1] and box corrections [B, A, 4] of all default boxes, in `DefaultBoxes` order."""
        def flat(x: Tensor, k: int) -> Tensor:
            b, _, h, w = x.shape
            return x.view(b, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, k)

        k = self.num_classes + 1
        logits = torch.cat([flat(head(x), k) for head, x in zip(self.cls_heads, maps)], dim=1)
        deltas = torch.cat([flat(head(x), 4) for head, x in zip(self.box_heads, maps)], dim=1)
        return logits, deltas

    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        """Training: dict {loss_classifier, loss_box_reg}; eval: one {boxes, scores, labels} dict per image."""
        images = self._images(images)
        if self.training and (targets is None or len(targets) != len(images)):
            raise ConfigError(f"SSD in training mode needs one target dict per image ({len(images)}); got "
                              f"{None if targets is None else len(targets)}: call model(images, targets) or "
                              f"model.eval()")
        maps = self.features(self.normalize(images))
        logits, deltas = self.head_outputs(maps)
        anchors = self.default_boxes(images.shape[-2:], [m.shape[-2:] for m in maps], deltas.dtype, deltas.device)
        if self.training:
            labels, box_targets = self.match(anchors, targets)
            return multibox_loss(logits, deltas, labels, box_targets, self.neg_pos_ratio)
        return self.postprocess(logits, deltas, anchors, images.shape[-2:])

    @torch.no_grad()
    def match(self, anchors: Tensor, targets: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
        """Per image and default box, the class label (0 background, -1 ignored) and the encoded correction to its
        matched ground-truth box: IoU >= iou_thresh, and each ground-truth box keeps its best default box."""
        check_targets(targets, len(targets), self.num_classes, "SSD")
        labels, box_targets = [], []
        for t in targets:
            gt, gt_labels = t["boxes"].to(anchors), t["labels"].to(anchors.device)
            iou = box_iou(gt, anchors)
            matched = self.matcher(iou)
            if len(gt):
                matched[iou.argmax(dim=1)] = torch.arange(len(gt), device=anchors.device)
            pos = matched >= 0
            lab = torch.where(matched == Matcher.BETWEEN, -1, 0)
            lab[pos] = gt_labels[matched[pos]]
            enc = torch.zeros_like(anchors)
            enc[pos] = self.box_coder.encode(gt[matched[pos]], anchors[pos])
            labels.append(lab)
            box_targets.append(enc)
        return torch.stack(labels), torch.stack(box_targets)

    @torch.no_grad()
    def postprocess(self, logits: Tensor, deltas: Tensor, anchors: Tensor, image_size) -> list[dict[str, Tensor]]:
        """Detections per image: softmax, per class the best `topk_candidates` above `score_thresh`, decode, then
        clip, NMS per class and the best `detections_per_img`."""
        probs = logits.softmax(dim=-1)
        boxes = self.box_coder.decode(deltas, anchors[None])
        out = []
        for p, b in zip(probs, boxes):
            keep, scores, labels = [], [], []
            for c in range(1, self.num_classes + 1):
                idx, _, s = top_candidates(p[:, c:c + 1], self.score_thresh, self.topk_candidates)
                keep.append(idx)
                scores.append(s)
                labels.append(torch.full_like(idx, c))
            idx = torch.cat(keep)
            out.append(finalize_detections(b[idx], torch.cat(scores), torch.cat(labels), tuple(image_size),
                                           self.nms_thresh, self.detections_per_img))
        return out


SSD300_VGG16 = dict(
    extra_layers=((256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0), (128, 256, 1, 0)),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)), scales=(0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
    steps=(8, 16, 32, 64, 100, 300), image_mean=(0.48235, 0.45882, 0.40784), image_std=(1 / 255,) * 3,
)


@register_model(task="detection", family="ssd", input_size=(3, 300, 300), num_params=35_641_826,
                params_source="torchvision")
def ssd300_vgg16(**kw) -> SSD:
    """SSD300 on VGG-16 (torchvision's layout), 90 COCO object classes: 35,641,826 parameters. Notes: 002 §4.3.4.

    Takes 300x300 images scaled to [0, 1] (normalised like torchvision's: mean subtracted, times 255).
    """
    in_chans = kw.get("in_chans", 3)
    return SSD(**{"num_classes": 90, "backbone": VGGSSDTrunk(in_chans), **SSD300_VGG16, **kw})


SSD_TINY = dict(
    backbone="resnet18", backbone_kwargs=dict(layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), stem_width=16),
    stages=(1, 2, 3, 4), extra_layers=((64, 128, 2, 1),), extra_norm="batch", aspect_ratios=((2,),),
    s_min=0.06, s_max=0.45, image_size=128, topk_candidates=100, detections_per_img=100,
)


@register_model(task="detection", family="ssd", input_size=(3, 128, 128))
def ssd_tiny(**kw) -> SSD:
    """A CPU-sized SSD for 128x128 scenes: a 4-stage ResNet (widths 16-128, one basic block each) read at strides
    4, 8, 16, 32, one extra block to stride 64; 4 default boxes per location (ratios 1, 2, 1/2 and the extra
    square), scales 0.06-0.45 (the shapes are small); at most 100 candidates per class and 100 detections (COCO's
    limit); 5 classes (the shapes scenes). Notes: 002 §4.3.4."""
    return SSD(**{"num_classes": 5, **SSD_TINY, **kw})
