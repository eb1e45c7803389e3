"""Panoptic FPN: Mask R-CNN plus a semantic segmentation branch on the same pyramid (Notes: 002 §5.3.1).

Kirillov, Girshick, He and Dollar, "Panoptic Feature Pyramid Networks" (2019). The instance side is dlkit's
Mask R-CNN (`MaskRCNN`), unchanged. The semantic ("stuff") branch reads the FPN maps P2-P5 (strides 4-32):

- each level goes through a stack of [3 x 3 convolution (`width`, 128 in the paper, no bias) + GroupNorm (32
  groups) + ReLU (+ 2x bilinear upsampling)] until it reaches stride 4: P2 one convolution and no upsampling, P3
  one convolution + 2x, P4 two stages (4x), P5 three (8x);
- the four stride-4 maps are summed (element-wise; the paper's "merge");
- a 1 x 1 convolution (with bias) predicts the semantic classes and a 4x bilinear upsampling (align_corners=False,
  as detectron2) brings the logits to the padded image, cropped to the image.

Semantic classes, as in the paper: the `num_stuff_classes` S stuff classes plus one class "things / other" for
every pixel of a thing. Class 0 is "things / other", class s = 1..S is stuff class s, so the branch predicts S + 1
logits per pixel. In the panoptic output the categories share one numbering: things keep their labels 1..C and stuff
class s becomes category C + s (`stuff_categories`: C + 1..C + S), so PanopticQuality takes C + S + 1 categories.

Training: targets carry, beside Mask R-CNN's {boxes, labels, masks}, `semantic` [H, W] int64 with classes 0..S and
255 for ignored pixels; `loss_semantic` = `semantic_loss_weight` (0.5 on COCO in the paper) x the per-pixel
cross-entropy averaged over the non-ignored pixels, added to Mask R-CNN's losses. Evaluation: each image's
detections (with `masks`) and `semantic`, the logits [S + 1, H, W]; `panoptic(images)` merges them per image with
`dlkit.ops.panoptic_merge` (thing masks take priority over stuff).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.conv_bn_act import ConvBNAct
from ...nn.init import kaiming_normal_
from ...ops.panoptic_merge import panoptic_merge
from ...registry import register_model
from ..detection.faster_rcnn import tiny_config
from ..detection.targets import check_mask_targets, check_targets
from .mask_rcnn import MaskRCNN

IGNORE_INDEX = 255


class SemanticFPNHead(nn.Module):
    """The semantic branch (module docstring): FPN maps P2, P3, ... (strides 4, 8, ...) -> stride-4 maps of
    `width` channels, summed -> 1 x 1 convolution to `num_classes` logits -> `upsample` x bilinear. Level k (0 for
    P2) runs max(k, 1) convolution stages, each but P2's followed by 2x bilinear upsampling. Notes: 002 §5.3.1."""

    def __init__(self, in_chans: int, num_classes: int, width: int = 128, num_levels: int = 4, upsample: int = 4):
        super().__init__()
        self.upsample = upsample
        self.scale_heads = nn.ModuleList()
        for level in range(num_levels):
            stages = [ConvBNAct(in_chans if i == 0 else width, width, 3, norm_layer="group")
                      for i in range(max(level, 1))]
            self.scale_heads.append(nn.ModuleList(stages))
        self.predictor = nn.Conv2d(width, num_classes, 1)
        for m in self.modules():  # He normal (fan out) as detectron2's c2_msra_fill; the predictor N(0, 0.001)
            if isinstance(m, nn.Conv2d):
                kaiming_normal_(m.weight.data, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def merged(self, maps: Sequence[Tensor]) -> Tensor:
        """The sum of the levels brought to stride 4: [N, width, H/4, W/4]."""
        if len(maps) != len(self.scale_heads):
            raise ConfigError(f"SemanticFPNHead takes {len(self.scale_heads)} pyramid maps (P2 first); got {len(maps)}")
        total = None
        for level, (x, stages) in enumerate(zip(maps, self.scale_heads)):
            for stage in stages:
                x = stage(x)
                if level > 0:
                    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            total = x if total is None else total + x
        return total

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        """Logits [N, num_classes, 4 H/4, 4 W/4] (the padded image's size) of the pyramid maps P2-P5."""
        return F.interpolate(self.predictor(self.merged(maps)), scale_factor=self.upsample, mode="bilinear",
                             align_corners=False)


def check_semantic_targets(targets: Sequence[Mapping[str, Tensor]], image_sizes: Sequence[Sequence[int]],
                           num_classes: int, who: str) -> None:
    """Semantic targets: `semantic` [H, W] int64 per image, classes 0..num_classes - 1 or 255 (ignored)."""
    for i, (t, size) in enumerate(zip(targets, image_sizes)):
        sem = t.get("semantic")
        want = [int(s) for s in size]
        if not isinstance(sem, Tensor) or sem.dtype != torch.int64 or list(sem.shape) != want:
            got = f"{sem.dtype} {list(sem.shape)}" if isinstance(sem, Tensor) else type(sem).__name__
            raise ConfigError(f"{who}: target {i} needs semantic, an int64 class map {want} (the image's size; 0 = "
                              f"things/other, 1..{num_classes - 1} = stuff, {IGNORE_INDEX} = ignored); got {got}. "
                              "Convert with .long()")
        bad = (sem != IGNORE_INDEX) & ((sem < 0) | (sem >= num_classes))
        if bad.any():
            raise ConfigError(f"{who}: target {i}'s semantic classes must lie in 0..{num_classes - 1} or be "
                              f"{IGNORE_INDEX} (ignored); got {sorted(set(sem[bad].tolist()))[:5]}. Raise "
                              "num_stuff_classes or mark the pixels 255")


def semantic_loss(logits: Tensor, target: Tensor, weight: float = 1.0) -> Tensor:
    """`weight` x per-pixel cross-entropy of logits [N, K, H, W] against classes [N, H, W], averaged over the
    pixels that are not 255; 0 (with a graph) when every pixel is ignored. Notes: 002 §5.3.1."""
    if not (target != IGNORE_INDEX).any():
        return logits.sum() * 0
    return weight * F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


def semantic_categories(logits: Tensor, num_things: int) -> Tensor:
    """The panoptic category map [H, W] of semantic logits [S + 1, H, W] (or classes [H, W]): stuff class s ->
    category C + s for C = `num_things`, things / other -> 0 (left to the instances). Notes: 002 §5.3.1."""
    s = logits.argmax(0) if logits.is_floating_point() else logits
    return torch.where(s > 0, s + num_things, torch.zeros_like(s))


class PanopticFPN(MaskRCNN):
    """Panoptic FPN (module docstring): `MaskRCNN`'s arguments plus `num_stuff_classes` S (the branch predicts
    S + 1 classes, 0 = things / other), the branch's `semantic_width` and `semantic_loss_weight`. Training returns
    Mask R-CNN's losses and `loss_semantic`; evaluation adds `semantic` logits [S + 1, H, W] to each image's
    detections. Notes: 002 §5.3.1."""

    display_name = "Panoptic FPN"
    needs_semantic = True  # its training targets carry `semantic` [H, W]

    def __init__(self, num_classes: int = 90, *args, num_stuff_classes: int = 53, semantic_width: int = 128,
                 semantic_loss_weight: float = 0.5, **kw):
        if isinstance(num_stuff_classes, bool) or not isinstance(num_stuff_classes, int) or num_stuff_classes < 1:
            raise ConfigError(f"num_stuff_classes is the number of stuff classes S (the semantic branch adds "
                              f"'things / other'), an int >= 1; got {num_stuff_classes!r}")
        if not float(semantic_loss_weight) >= 0:
            raise ConfigError(f"semantic_loss_weight must be >= 0 (0.5 in the paper); got {semantic_loss_weight!r}")
        super().__init__(num_classes, *args, **kw)
        self.num_stuff_classes, self.semantic_loss_weight = num_stuff_classes, float(semantic_loss_weight)
        self.semantic_head = SemanticFPNHead(self.fpn.out_channels, num_stuff_classes + 1, semantic_width)

    @property
    def stuff_categories(self) -> list[int]:
        """The panoptic categories of the stuff classes 1..S: C + 1..C + S (things keep 1..C)."""
        return list(range(self.num_classes + 1, self.num_classes + self.num_stuff_classes + 1))

    def forward(self, images, targets: Sequence[Mapping[str, Tensor]] | None = None):
        if self.training or targets is not None:
            sizes = [tuple(im.shape[-2:]) for im in images]
            check_targets(targets, len(images), self.num_classes, "Panoptic FPN")
            check_mask_targets(targets, sizes, "Panoptic FPN")
            check_semantic_targets(targets, sizes, self.num_stuff_classes + 1, "Panoptic FPN")
        maps, sizes, detections, losses = self._detect(images, targets)
        h, w = sizes[0]
        logits = self.semantic_head(maps[:4])[..., :h, :w]
        if self.training:
            goal = torch.stack([t["semantic"] for t in targets]).to(logits.device)
            return {**losses, "loss_semantic": semantic_loss(logits, goal, self.semantic_loss_weight)}
        for d, lg in zip(detections, logits):
            d["semantic"] = lg
        return detections


    @torch.no_grad()
    def panoptic(self, images, score_threshold: float = 0.5, overlap_threshold: float = 0.5,
                 stuff_area_threshold: int = 4096, **merge_kw) -> list[tuple[Tensor, list[dict]]]:
        """One panoptic segmentation `(id_map, segments)` per image (evaluation mode): the detections and their
        masks merged with the semantic prediction by `panoptic_merge` (things first, then each stuff category's
        free pixels; categories as `stuff_categories`). Lower `stuff_area_threshold` for small images.
        Notes: 002 §5.3.1."""
        was_training = self.training
        self.eval()
        try:
            detections = self(images)
        finally:
            self.train(was_training)
        return [panoptic_merge(d["masks"], d["scores"], d["labels"],
                               semantic_categories(d["semantic"], self.num_classes), self.stuff_categories,
                               score_threshold=score_threshold, overlap_threshold=overlap_threshold,
                               stuff_area_threshold=stuff_area_threshold, **merge_kw)
                for d in detections]


@register_model(task="detection", family="panoptic_fpn", input_size=(3, 800, 800), num_params=46_032_167,
                params_source="by hand: Mask R-CNN's 44,401,393 (torchvision) + the semantic branch's 1,630,774")
def panoptic_fpn_resnet50(num_classes: int = 90, num_stuff_classes: int = 53, frozen_bn: bool = True,
                          **kw) -> PanopticFPN:
    """Panoptic FPN on ResNet-50: `maskrcnn_resnet50_fpn` (torchvision's layout, 90 thing labels as COCO's category
    ids, backbone batch norms frozen; 44,401,393 parameters) and a 128-wide semantic branch for COCO panoptic's 53
    stuff classes + things / other (1,630,774 parameters: 4 x (3 x 3 x 256 x 128 + 2 x 128) for each level's first
    stage, 3 x (3 x 3 x 128 x 128 + 2 x 128) for P4's and P5's later ones, 128 x 54 + 54 for the predictor):
    46,032,167 parameters. Notes: 002 §5.3.1."""
    return PanopticFPN(num_classes, "resnet50", num_stuff_classes=num_stuff_classes, frozen_bn=frozen_bn, **kw)


@register_model(task="detection", family="panoptic_fpn", input_size=(3, 128, 128))
def panoptic_fpn_tiny(num_classes: int = 3, num_stuff_classes: int = 1, in_chans: int = 3, **kw) -> PanopticFPN:
    """A small Panoptic FPN for CPU recipes (shape scenes): `maskrcnn_tiny`'s detector and mask head (64-wide FPN)
    with a 64-wide semantic branch (GroupNorm 32) and one stuff class (the background). Notes: 002 §5.3.1."""
    model = PanopticFPN(num_classes, in_chans=in_chans, num_stuff_classes=num_stuff_classes,
                        **(tiny_config() | dict(mask_widths=(64,) * 4, mask_predictor_width=64, semantic_width=64)
                           | kw))
    model.default_input_shape = (in_chans, 128, 128)
    return model
