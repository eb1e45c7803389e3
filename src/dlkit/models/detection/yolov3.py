"""YOLOv3 (Redmon & Farhadi, 2018): a one-stage detector on three scales (Notes: 000 §3.12.1-3.12.2, 002 §4.3.4,
003 §6.0.2).

Network. A backbone (Darknet-53) gives maps at strides 8, 16 and 32 (52, 26 and 13 cells for a 416 x 416 image).
The deepest map goes through a block of five convolutions (1x1 w, 3x3 2w, 1x1 w, 3x3 2w, 1x1 w); a 3x3 2w
convolution and a 1x1 output convolution (with bias, linear) then predict B (5 + C) numbers per cell. Top-down, the
block's output is reduced by a 1x1 convolution, up-sampled x2 (nearest) and **concatenated** with the next shallower
backbone map (an FPN merges by addition), and the next scale repeats the block on that. w is half the backbone map's
width (512, 256, 128 on Darknet-53), which with 80 classes gives the published 61,949,149 parameters.

Predictions. Per cell and anchor (B = 3 per scale, nine in all): t_x, t_y, t_w, t_h, the objectness t_o and one
logit per class; classes are independent sigmoids (multi-label). Boxes decode as b = c + sigma(t) and p e^t
(`dlkit.losses.yolov3.yolo_decode`); a detection's score is objectness x class probability, sigma(t_o) sigma(t_c)
(003 §6.0.2). In evaluation mode the scores above `score_thresh` (at most `topk` per scale) are decoded, and
`finalize_detections` clips them, runs NMS per class and keeps `max_detections`. Training uses the notes' loss and
responsible-anchor assignment (`dlkit.losses.yolov3`).

The anchors are a constructor argument: L x B shapes (w, h) in pixels, smallest first; the first B go to the
finest scale. The default is the paper's nine COCO anchors (k-means on COCO's boxes, 000 §3.12.1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...losses.yolov3 import YOLO_LOSS_KINDS, yolo_decode, yolov3_loss
from ...nn.activations import sigmoid
from ...nn.conv_bn_act import ConvBNAct
from ...nn.init import init_weights
from ...nn.upsample import nearest_upsample
from ...ops.boxes import box_convert
from ...registry import create_model, register_model
from ..classification.darknet import darknet_leaky
from .images import batch_images, weights_dtype
from .postprocess import finalize_detections, top_candidates
from .targets import check_targets

#: The paper's anchors (w, h) in pixels for 416 x 416 COCO images, by area: three per scale, stride 8 first.
COCO_ANCHORS = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326))


def yolo_block(in_chans: int, width: int, act_layer=darknet_leaky, norm_layer="batch") -> nn.Sequential:
    """YOLOv3's five convolutions before a scale's output: 1x1 w, 3x3 2w, 1x1 w, 3x3 2w, 1x1 w. Notes: 002 §4.3.4."""
    layers, chans = [], in_chans
    for k, out in ((1, width), (3, 2 * width), (1, width), (3, 2 * width), (1, width)):
        layers.append(ConvBNAct(chans, out, k, act_layer=act_layer, norm_layer=norm_layer))
        chans = out
    return nn.Sequential(*layers)


def check_anchors(anchors, levels: int) -> Tensor:
    """Anchors as a float tensor [levels, B, 2] from L x B pairs (w, h) > 0 (flat or per level)."""
    try:
        flat = [float(v) for v in torch.as_tensor(anchors, dtype=torch.float64, device="cpu").flatten().tolist()]
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"anchors must be (w, h) pairs in pixels, {levels} x B of them; got {anchors!r}") from err
    pairs = len(flat) // 2
    if not flat or len(flat) % 2 or pairs % levels or min(flat) <= 0:
        raise ConfigError(f"anchors must be positive (w, h) pairs, a multiple of {levels} (one group per scale, the "
                          f"finest first); got {len(flat) / 2:g} pairs")
    return torch.tensor(flat).view(levels, -1, 2)


def _multiple(size: int, step: int) -> int:
    """The nearest multiple of `step` to `size` (at least `step`)."""
    return max(step, round(size / step) * step)


class YOLOv3(nn.Module):
    """YOLOv3: backbone maps at strides 8/16/32, concatenation merges, B anchors and B (5 + C) outputs per cell.

    Notes: 000 §3.12.1-3.12.2, 002 §4.3.4. `backbone` is a registered classification model's name (built with
    `features_only=True` at `out_indices`, default its last three stages, and `backbone_kwargs`) or a module with
    `feature_info` returning its maps shallowest first. `head_widths` (default half of each map's channels),
    `anchors` (module docstring),
    `image_mean`/`image_std` (images arrive in [0, 1]), the loss options `lambda_coord`, `lambda_noobj`, `loss`
    ("mse" the notes', "bce") and `ignore_thresh`, and the inference options `score_thresh`, `topk`, `nms_thresh`,
    `max_detections`. `prior_prob` starts every objectness at that probability (RetinaNet's bias initialisation).
    """

    def __init__(self, num_classes: int = 80, backbone: str | nn.Module = "darknet53", anchors=COCO_ANCHORS,
                 in_chans: int = 3, out_indices: Sequence[int] = (-3, -2, -1), backbone_kwargs: Mapping | None = None,
                 head_widths: Sequence[int] | None = None,
                 image_size: int = 416, image_mean: Sequence[float] = (0.0, 0.0, 0.0),
                 image_std: Sequence[float] = (1.0, 1.0, 1.0), lambda_coord: float = 5.0, lambda_noobj: float = 0.5,
                 loss: str = "mse", ignore_thresh: float | None = None, score_thresh: float = 0.05, topk: int = 1000,
                 nms_thresh: float = 0.45, max_detections: int = 100, prior_prob: float = 0.01,
                 frozen_bn: bool = False, act_layer=darknet_leaky, norm_layer="batch"):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"YOLOv3 needs num_classes >= 1 (labels 1..C, no background class); got {num_classes!r}")
        if loss not in YOLO_LOSS_KINDS:
            raise ConfigError(f"loss must be one of {YOLO_LOSS_KINDS} ('mse': the notes' squared errors); got {loss!r}")
        if not 0 < prior_prob < 1:
            raise ConfigError(f"prior_prob must be in (0, 1); got {prior_prob}")
        if isinstance(backbone, str):
            backbone = create_model(backbone, features_only=True, out_indices=tuple(out_indices), in_chans=in_chans,
                                    **dict(backbone_kwargs or {}))
            backbone.frozen_bn = frozen_bn
        info = getattr(backbone, "feature_info", None)
        if info is None:
            raise ConfigError(f"YOLOv3's backbone needs feature_info (channels and strides of its maps); got "
                              f"{type(backbone).__name__}. Pass a registered classification model's name")
        chans, strides = list(info.channels()), list(info.reductions())
        levels = len(chans)
        if levels < 1 or strides != sorted(strides) or any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ConfigError(f"YOLOv3 merges maps whose strides double from one to the next (e.g. 8, 16, 32); the "
                              f"backbone gives strides {strides}: choose other out_indices")
        widths = list(head_widths) if head_widths is not None else [c // 2 for c in chans]
        if len(widths) != levels:
            raise ConfigError(f"head_widths needs one width per scale ({levels}); got {widths}")
        self.backbone, self.num_classes, self.in_chans = backbone, num_classes, in_chans
        self.strides = strides
        self.register_buffer("anchors", check_anchors(anchors, levels))
        self.num_anchors = self.anchors.shape[1]
        if image_size < 1 or image_size % strides[-1]:
            raise ConfigError(f"YOLOv3's image_size must be a multiple of its largest stride {strides[-1]}; got "
                              f"{image_size} (e.g. {_multiple(image_size, strides[-1])})")
        self.default_input_shape = (in_chans, image_size, image_size)
        if len(image_mean) != in_chans or len(image_std) != in_chans or min(image_std) <= 0:
            raise ConfigError(f"image_mean and image_std need {in_chans} values (std > 0); got {list(image_mean)}, "
                              f"{list(image_std)}")
        for name, values in (("image_mean", image_mean), ("image_std", image_std)):
            self.register_buffer(name, torch.tensor([float(v) for v in values]).view(1, -1, 1, 1), persistent=False)
        self.loss_options = dict(lambda_coord=lambda_coord, lambda_noobj=lambda_noobj, kind=loss,
                                 ignore_thresh=ignore_thresh)
        self.score_thresh, self.topk, self.nms_thresh = score_thresh, topk, nms_thresh
        self.max_detections = max_detections
        # deepest scale first, as the top-down pass runs: blocks[i], outputs[i] and laterals[i] (into scale i + 1)
        depth_first = list(range(levels))[::-1]
        blocks, outputs, laterals = [], [], []
        for step, lvl in enumerate(depth_first):
            block_in = chans[lvl] + (widths[lvl] if step else 0)  # the lateral brings w_l channels from above
            blocks.append(yolo_block(block_in, widths[lvl], act_layer, norm_layer))
            outputs.append(nn.Sequential(
                ConvBNAct(widths[lvl], 2 * widths[lvl], 3, act_layer=act_layer, norm_layer=norm_layer),
                nn.Conv2d(2 * widths[lvl], self.num_anchors * (5 + num_classes), 1)))
            if step + 1 < levels:
                laterals.append(ConvBNAct(widths[lvl], widths[depth_first[step + 1]], 1, act_layer=act_layer,
                                          norm_layer=norm_layer))
        self.blocks, self.outputs = nn.ModuleList(blocks), nn.ModuleList(outputs)
        self.laterals = nn.ModuleList(laterals)
        init_weights([self.blocks, self.outputs, self.laterals], conv="he_fan_in")
        with torch.no_grad():
            for out in self.outputs:
                pred = out[-1]
                nn.init.normal_(pred.weight, std=0.01)
                bias = pred.bias.view(self.num_anchors, 5 + num_classes)
                bias.zero_()
                bias[:, 4] = -math.log((1 - prior_prob) / prior_prob)

    def check_input(self, images: Tensor) -> None:
        """Images [N, in_chans, H, W] with H and W multiples of the largest stride."""
        step = self.strides[-1]
        if images.dim() != 4 or images.shape[1] != self.in_chans or images.shape[-1] % step or images.shape[-2] % step:
            fit = (f"{_multiple(images.shape[-2], step)} x {_multiple(images.shape[-1], step)}" if images.dim() == 4
                   else "x".join(map(str, self.default_input_shape[1:])))
            raise ConfigError(f"YOLOv3 expects images [N, {self.in_chans}, H, W] with H and W multiples of {step}; got "
                              f"{tuple(images.shape)} (resize or letterbox them, e.g. to {fit})")

    def head_outputs(self, images: Tensor) -> list[Tensor]:
        """Raw predictions per scale, finest first: [N, B, H_l, W_l, 5 + C] (t_x, t_y, t_w, t_h, t_o, t_1 .. t_C)."""
        self.check_input(images)
        maps = self.backbone((images - self.image_mean) / self.image_std)
        outs: list[Tensor] = []
        x = None
        for step, fmap in enumerate(reversed(maps)):
            x = fmap if x is None else torch.cat([nearest_upsample(self.laterals[step - 1](x), 2), fmap], dim=1)
            x = self.blocks[step](x)
            raw = self.outputs[step](x)
            n, _, h, w = raw.shape
            outs.append(raw.view(n, self.num_anchors, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2))
        return outs[::-1]

    def forward(self, images: Tensor, targets: Sequence[Mapping[str, Tensor]] | None = None):
        """Training with targets: the loss dict {loss_box, loss_objectness, loss_classifier}; evaluation: one
        {boxes, scores, labels} per image; training without targets is refused (the raw maps: `head_outputs`)."""
        images = batch_images(images, self.in_chans, "YOLOv3", weights_dtype(self))
        if self.training and targets is None:
            raise ConfigError("YOLOv3 in training mode computes its loss: call model(images, targets), one dict "
                              "{boxes [M, 4] xyxy, labels [M] in 1..C} per image (head_outputs(images) gives the raw "
                              "maps), or model.eval() for detections")
        preds = self.head_outputs(images)
        if self.training:
            check_targets(targets, len(images), self.num_classes, "YOLOv3")
            return yolov3_loss(preds, targets, self.anchors, self.strides, tuple(images.shape[-2:]),
                               self.num_classes, **self.loss_options)
        return self.detect(preds, tuple(images.shape[-2:]))

    @torch.no_grad()
    def detect(self, preds: Sequence[Tensor], image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """Detections per image from `head_outputs`: scores sigma(t_o) sigma(t_c) > score_thresh (top `topk` per
        scale), boxes decoded (b = c + sigma(t), p e^t) to xyxy pixels, then `finalize_detections`."""
        decoded = [box_convert(yolo_decode(p[..., :4], self.anchors[lvl], self.strides[lvl]), "cxcywh", "xyxy")
                   for lvl, p in enumerate(preds)]
        scores = [sigmoid(p[..., 4:5]) * sigmoid(p[..., 5:]) for p in preds]
        results = []
        for b in range(preds[0].shape[0]):
            boxes, kept_scores, labels = [], [], []
            for lvl in range(len(preds)):
                idx, lab, sc = top_candidates(scores[lvl][b].reshape(-1, self.num_classes), self.score_thresh,
                                              self.topk)
                boxes.append(decoded[lvl][b].reshape(-1, 4)[idx])
                kept_scores.append(sc)
                labels.append(lab)
            results.append(finalize_detections(torch.cat(boxes), torch.cat(kept_scores), torch.cat(labels),
                                               image_size, self.nms_thresh, self.max_detections))
        return results


@register_model(task="detection", input_size=(3, 416, 416), num_params=61_949_149,
                params_source="derived by hand from yolov3.cfg (Redmon & Farhadi 2018); equals the PyTorch ports")
def yolov3(**kw) -> YOLOv3:
    """YOLOv3 with Darknet-53, 80 classes, the nine COCO anchors: 61,949,149 parameters. Notes: 000 §3.12.1.

    40,584,928 in Darknet-53's convolutions, 21,364,221 in the three scales' blocks, laterals and outputs.
    """
    return YOLOv3(**kw)


@register_model(task="detection", input_size=(3, 128, 128))
def yolov3_small(**kw) -> YOLOv3:
    """A small YOLOv3 for CPU recipes: a `darknet_small` backbone at half width (stem 8, stages 8-128; maps of 32,
    64, 128 channels at strides 8/16/32), 5 classes, 128 x 128 images, the COCO anchors scaled from 416 to 128
    pixels. Notes: 000 §3.12.1."""
    size = kw.pop("image_size", 128)
    cfg = dict(num_classes=5, backbone="darknet_small", image_size=size,
               backbone_kwargs=dict(widths=(8, 16, 32, 64, 128), stem_chans=8),
               anchors=[(w * size / 416, h * size / 416) for w, h in COCO_ANCHORS])
    return YOLOv3(**{**cfg, **kw})
