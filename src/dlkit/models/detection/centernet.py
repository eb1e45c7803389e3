"""CenterNet, objects as points (Zhou et al. 2019; Notes: 002 §4.3.5, keypoint-based detectors).

An encoder-decoder network maps an image H x W to maps at output stride R = 4: the class heat map Ŷ [C, H/R, W/R]
(sigmoid), the box size Ŝ [2, H/R, W/R] and the offset Ô [2, H/R, W/R] that the stride's rounding lost. Here the
encoder is any registered classification backbone read through the feature contract, and the decoder is the
paper's ResNet neck: per factor 2, a 3x3 conv-BN-ReLU (the paper's is deformable, a plain one here) and a 4x4
transposed convolution of stride 2 initialised as bilinear up-sampling, BN, ReLU. `skips=True` adds the backbone's
map of the same stride through a 1x1 conv-BN-ReLU after each up-sampling (a light version of the skip connections
of the paper's DLA-34 and Hourglass decoders). Each head is conv3x3 -> ReLU -> conv1x1; the heat-map head's last
bias starts at -2.19 (= -ln((1 - 0.1) / 0.1), a prior probability of 0.1) and the head weights at N(0, 0.001^2).

Training targets (`centernet_targets`), for a box of centre p (input pixels) and size (w, h):
- p̃ = floor(p / R); the class's heat map gets the Gaussian splat exp(-((x - p̃_x)^2 + (y - p̃_y)^2) / (2 sigma^2)),
  cut at |x - p̃_x|, |y - p̃_y| <= r, with value 1 at p̃; overlapping splats of one class take the element-wise max;
- r is CornerNet's size-adaptive radius (`gaussian_radius`): the largest shift of the box corners that keeps the
  IoU with the true box >= 0.7 in each of three cases, the minimum of the three; sigma = (2r + 1) / 6 (the authors'
  code: the paper's sigma = r / 3 is 0 for the small boxes where r rounds to 0);
- at p̃ only: the offset p / R - p̃ in [0, 1)^2 and the size (w, h) / R in output pixels (the authors' code; the
  size loss weight 0.1 is tuned to it).

Inference (`decode_heatmap`): the local maxima of Ŷ by a 3x3 max-pool (a pixel is kept where it equals the max of
its neighbourhood: the notes' "NMS is implicit"), the top K = 100 peaks over all classes, each a box of centre
R (x + Ô_x, y + Ô_y) and size R (Ŝ_w, Ŝ_h), clipped to the image. No NMS follows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...losses.centernet import CenterNetLoss
from ...nn.conv_bn_act import ConvBNAct
from ...nn.init import init_weights
from ...nn.upsample import BilinearUpsample
from ...ops.boxes import clip_boxes_to_image
from ...registry import create_model, register_model
from ..backbone import Backbone, FeatureExtractor
from .images import IMAGENET_MEAN, IMAGENET_STD, batch_images, channel_stats, weights_dtype
from .targets import check_targets

RADIUS_RULES = ("exact", "released")
PRIOR_BIAS = -2.19  # -ln((1 - 0.1) / 0.1): the paper's heat-map bias, a prior probability of 0.1


def gaussian_radius(width: Tensor, height: Tensor, min_overlap: float = 0.7, rule: str = "exact") -> Tensor:
    """CornerNet's size-adaptive radius r of boxes (`width`, `height`): the largest shift r of both corners (in x
    and in y) that keeps IoU >= `min_overlap`, the minimum over three cases (Notes: 002 §4.3.5, CornerNet):

        same size, shifted:     (w - r)(h - r) / (2wh - (w - r)(h - r)) = m:  r^2 - (w + h) r + wh (1 - m) / (1 + m) = 0
        both corners inside:    (w - 2r)(h - 2r) / wh = m:                  4 r^2 - 2(w + h) r + (1 - m) wh = 0
        both corners outside:   wh / ((w + 2r)(h + 2r)) = m:                4m r^2 + 2m(w + h) r + (m - 1) wh = 0

    each solved for its smallest non-negative root. `rule="released"` is the formula of the authors' code, which
    takes (b + sqrt(b^2 - 4ac)) / 2 for every case (not / 2a; the larger root in the first two): its radius is the
    third case's times 4m (2.8 at m = 0.7) for most boxes. The exact roots are the default.
    """
    if rule not in RADIUS_RULES:
        raise ConfigError(f"radius rule must be one of {RADIUS_RULES}; got {rule!r}")
    if not 0 < min_overlap < 1:
        raise ConfigError(f"min_overlap must be in (0, 1); got {min_overlap}")
    w, h, m = torch.as_tensor(width, dtype=torch.float64), torch.as_tensor(height, dtype=torch.float64), min_overlap
    s, area = w + h, w * h
    if rule == "released":
        r1 = (s + torch.sqrt(s * s - 4 * area * (1 - m) / (1 + m))) / 2
        r2 = (2 * s + torch.sqrt(4 * s * s - 16 * (1 - m) * area)) / 2
        r3 = (-2 * m * s + torch.sqrt(4 * m * m * s * s - 16 * m * (m - 1) * area)) / 2
    else:
        r1 = (s - torch.sqrt(s * s - 4 * area * (1 - m) / (1 + m))) / 2
        r2 = (2 * s - torch.sqrt(4 * s * s - 16 * (1 - m) * area)) / 8
        r3 = (-2 * m * s + torch.sqrt(4 * m * m * s * s - 16 * m * (m - 1) * area)) / (8 * m)
    dtype = width.dtype if torch.is_tensor(width) and width.is_floating_point() else torch.float64
    return torch.minimum(torch.minimum(r1, r2), r3).to(dtype)


def centernet_targets(targets: Sequence[Mapping[str, Tensor]], num_classes: int, map_size: Sequence[int],
                      stride: int, min_overlap: float = 0.7, radius_rule: str = "exact") -> dict[str, Tensor]:
    """The training targets of a batch (Notes: 002 §4.3.5): heatmap [B, C, h, w] (Gaussian splats, 1 at each centre
    pixel), centres [N, 3] long (batch, y, x) of the N objects, size [N, 2] ((w, h) / stride) and offset [N, 2]
    (p / stride - floor(p / stride), x then y). Boxes are xyxy in input pixels; boxes of zero width or height and
    centres outside the map are left out."""
    mh, mw = int(map_size[0]), int(map_size[1])
    batch = len(targets)
    boxes = [t["boxes"].reshape(-1, 4).float() for t in targets]
    labels = [t["labels"].reshape(-1).long() for t in targets]
    device = boxes[0].device if boxes else torch.device("cpu")
    heatmap = torch.zeros(batch * num_classes, mh * mw, device=device)
    if not boxes or sum(len(b) for b in boxes) == 0:
        empty = torch.zeros(0, 2, device=device)
        return {"heatmap": heatmap.view(batch, num_classes, mh, mw), "size": empty, "offset": empty.clone(),
                "centres": torch.zeros(0, 3, dtype=torch.long, device=device)}
    image = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=device) for i, b in enumerate(boxes)])
    box, label = torch.cat(boxes), torch.cat(labels).to(device)
    bad = (label < 1) | (label > num_classes)
    if bad.any():
        raise ConfigError(f"box labels must be in 1..{num_classes} (0 is the background); got "
                          f"{sorted(set(label[bad].tolist()))}")
    size = (box[:, 2:] - box[:, :2]) / stride
    centre = (box[:, :2] + box[:, 2:]) / 2 / stride
    cell = centre.floor()
    keep = (size > 0).all(1) & (cell[:, 0] >= 0) & (cell[:, 0] < mw) & (cell[:, 1] >= 0) & (cell[:, 1] < mh)
    image, label, size, centre, cell = image[keep], label[keep], size[keep], centre[keep], cell[keep]
    radius = gaussian_radius(size[:, 0], size[:, 1], min_overlap, radius_rule).floor().clamp(min=0)
    sigma = (2 * radius + 1) / 6
    xs = torch.arange(mw, device=device, dtype=torch.float32)
    ys = torch.arange(mh, device=device, dtype=torch.float32)
    dx = xs[None, :] - cell[:, :1]  # [N, w]
    dy = ys[None, :] - cell[:, 1:]  # [N, h]
    gx = torch.exp(-dx * dx / (2 * sigma[:, None] ** 2)) * (dx.abs() <= radius[:, None])
    gy = torch.exp(-dy * dy / (2 * sigma[:, None] ** 2)) * (dy.abs() <= radius[:, None])
    splats = (gy[:, :, None] * gx[:, None, :]).reshape(len(cell), mh * mw)  # separable: exp(-(dx^2 + dy^2) / 2 sigma^2)
    rows = (image * num_classes + label - 1)[:, None].expand_as(splats)
    heatmap.scatter_reduce_(0, rows, splats, "amax")
    cell = cell.long()
    return {"heatmap": heatmap.view(batch, num_classes, mh, mw), "size": size, "offset": centre - cell,
            "centres": torch.stack([image, cell[:, 1], cell[:, 0]], 1)}


def heatmap_peaks(heat: Tensor, kernel: int = 3) -> Tensor:
    """`heat` [B, C, h, w] with every pixel that is not the maximum of its `kernel` x `kernel` neighbourhood set
    to 0 (ties all kept): CenterNet's local-maximum search, its implicit NMS (Notes: 002 §4.3.5)."""
    if kernel < 1 or kernel % 2 == 0:
        raise ConfigError(f"the peak window must be an odd size >= 1; got {kernel}")
    peak = F.max_pool2d(heat, kernel, stride=1, padding=kernel // 2)
    return heat * (peak == heat)


def decode_heatmap(heat: Tensor, size: Tensor, offset: Tensor, stride: int, topk: int = 100,
                   kernel: int = 3) -> tuple[Tensor, Tensor, Tensor]:
    """(boxes [B, K, 4] xyxy in input pixels, scores [B, K], labels [B, K] in 1..C) of the K = min(topk, C h w)
    highest peaks of the heat map `heat` [B, C, h, w] (probabilities), with `size` and `offset` [B, 2, h, w]
    (Notes: 002 §4.3.5): centre = stride (x + Ô_x, y + Ô_y), (width, height) = stride (Ŝ_w, Ŝ_h)."""
    b, c, h, w = heat.shape
    scores, index = heatmap_peaks(heat, kernel).flatten(1).topk(min(topk, c * h * w), dim=1)
    labels = torch.div(index, h * w, rounding_mode="floor") + 1
    pixel = index % (h * w)
    ys, xs = torch.div(pixel, w, rounding_mode="floor"), pixel % w
    off = offset.flatten(2).gather(2, pixel[:, None].expand(-1, 2, -1))  # [B, 2, K]
    wh = size.flatten(2).gather(2, pixel[:, None].expand(-1, 2, -1)) * stride
    cx, cy = (xs + off[:, 0]) * stride, (ys + off[:, 1]) * stride
    boxes = torch.stack([cx - wh[:, 0] / 2, cy - wh[:, 1] / 2, cx + wh[:, 0] / 2, cy + wh[:, 1] / 2], -1)
    return boxes, scores, labels


class UpsamplingNeck(nn.Module):
    """CenterNet's ResNet decoder (Notes: 002 §4.3.5): from the backbone's deepest map to output stride R, per
    factor 2 a 3x3 conv-BN-ReLU, a 4x4 stride-2 transposed conv initialised bilinear, BN, ReLU; with `skips`, plus
    the backbone map of the new stride through a 1x1 conv-BN-ReLU. Takes the maps [deepest, ..., stride R]."""

    def __init__(self, in_chans: int, chans: Sequence[int], skip_chans: Sequence[int] | None = None):
        super().__init__()
        steps = []
        for out in chans:
            up = BilinearUpsample(out, 2, depthwise=False)
            steps.append(nn.Sequential(ConvBNAct(in_chans, out, 3), up, nn.BatchNorm2d(out), nn.ReLU(inplace=True)))
            in_chans = out
        self.steps = nn.ModuleList(steps)
        self.laterals = None if skip_chans is None else nn.ModuleList(
            ConvBNAct(c, out, 1) for c, out in zip(skip_chans, chans, strict=True))
        self.out_chans = in_chans

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        x = maps[0]
        for i, step in enumerate(self.steps):
            x = step(x)
            if self.laterals is not None:
                x = x + self.laterals[i](maps[i + 1])
        return x


def head(in_chans: int, mid_chans: int, out_chans: int) -> nn.Sequential:
    """A CenterNet head: conv3x3 -> ReLU -> conv1x1 (Notes: 002 §4.3.5)."""
    return nn.Sequential(nn.Conv2d(in_chans, mid_chans, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid_chans, out_chans, 1))


class CenterNet(nn.Module):
    """CenterNet: backbone -> up-sampling neck to stride R -> heat-map, size and offset heads (Notes: 002 §4.3.5).

    `backbone` is a registered classification model's name (built with `in_chans` and `backbone_kwargs`) or a
    built backbone (`dlkit.models.backbone.Backbone`); its deepest stage is up-sampled to `output_stride` (4) by
    `len(neck_chans)` = log2(deepest stride / R) steps. `skips` adds the backbone's maps at the intermediate strides.
    The detector contract (`dlkit.tasks.detection`): images [B, C, H, W] in [0, 1], normalised here by
    `image_mean` / `image_std` (default ImageNet's); training returns {loss_heatmap, loss_size, loss_offset}
    (`CenterNetLoss` with `size_weight`, `offset_weight`, `box_loss`), eval the `topk` best peaks per image (as
    the paper evaluates; `score_thresh` keeps only those scored above it). `min_overlap` and `radius_rule` set
    the Gaussian radius (`gaussian_radius`).
    """

    def __init__(self, num_classes: int = 80, in_chans: int = 3, backbone: str | nn.Module = "resnet18",
                 backbone_kwargs: Mapping | None = None, output_stride: int = 4,
                 neck_chans: Sequence[int] = (256, 128, 64), skips: bool = False, head_chans: int = 64,
                 topk: int = 100, score_thresh: float | None = None, min_overlap: float = 0.7,
                 radius_rule: str = "exact",
                 size_weight: float = 0.1, offset_weight: float = 1.0, box_loss: str = "l1",
                 frozen_bn: bool = False, image_mean: float | Sequence[float] | None = None,
                 image_std: float | Sequence[float] | None = None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"CenterNet needs num_classes >= 1 (object classes, no background); got "
                              f"{num_classes!r}")
        if radius_rule not in RADIUS_RULES:
            raise ConfigError(f"radius_rule must be one of {RADIUS_RULES}; got {radius_rule!r}")
        if topk < 1:
            raise ConfigError(f"topk must be >= 1; got {topk}")
        self.num_classes, self.in_chans, self.output_stride = num_classes, in_chans, output_stride
        self.topk, self.score_thresh = topk, score_thresh
        self.min_overlap, self.radius_rule = min_overlap, radius_rule
        self.default_input_shape = (in_chans, 512, 512)
        if isinstance(backbone, str):
            backbone = create_model(backbone, in_chans=in_chans, **dict(backbone_kwargs or {}))
        elif backbone_kwargs:
            raise ConfigError("backbone_kwargs configure a backbone built by name; this one is already built")
        if not isinstance(backbone, Backbone):
            raise ConfigError(f"CenterNet's backbone must be a registered classifier's name or a "
                              f"dlkit.models.backbone.Backbone (feature_info); got {type(backbone).__name__}")
        strides = self._strides(backbone, output_stride, len(neck_chans))
        self.backbone = FeatureExtractor(backbone, backbone.feature_info.last_at(strides), frozen_bn=frozen_bn)
        chans = self.backbone.feature_info.channels()
        self.neck = UpsamplingNeck(chans[-1], neck_chans, chans[-2::-1] if skips else None)
        width = self.neck.out_chans
        self.heatmap_head = head(width, head_chans, num_classes)
        self.size_head = head(width, head_chans, 2)
        self.offset_head = head(width, head_chans, 2)
        self.loss = CenterNetLoss(size_weight=size_weight, offset_weight=offset_weight, box_loss=box_loss)
        self.register_buffer("image_mean", channel_stats(image_mean, IMAGENET_MEAN, in_chans, "image_mean"),
                             persistent=False)
        self.register_buffer("image_std", channel_stats(image_std, IMAGENET_STD, in_chans, "image_std"),
                             persistent=False)
        self.reset_parameters()

    @staticmethod
    def _strides(backbone: Backbone, output_stride: int, steps: int) -> tuple[int, ...]:
        """The backbone strides the neck reads: output_stride * 2^k, k = 0..steps (the deepest must exist)."""
        deepest = backbone.feature_info.reductions()[-1]
        if output_stride * 2 ** steps != deepest:
            need = math.log2(deepest / output_stride) if deepest >= output_stride else float("nan")
            raise ConfigError(f"the neck's {steps} up-sampling steps (len(neck_chans)) take the backbone's stride "
                              f"{deepest} to {deepest // 2 ** steps}, not output_stride {output_stride}; give "
                              f"neck_chans log2({deepest} / {output_stride}) = {need:g} widths")
        return tuple(output_stride * 2 ** k for k in range(steps + 1))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Neck: Kaiming normal (fan_out) 3x3/1x1 convs, BN (1, 0), bilinear transposed convs; heads N(0, 0.001^2),
        bias 0, the heat map's last bias -2.19 (the paper's)."""
        init_weights(self.neck, conv="he_fan_out")  # Conv2d only: the transposed convs keep their bilinear filters
        for h in (self.heatmap_head, self.size_head, self.offset_head):
            init_weights(h, conv=lambda w: nn.init.normal_(w, 0.0, 0.001))
        self.heatmap_head[-1].bias.fill_(PRIOR_BIAS)

    def _batch(self, images) -> Tensor:
        images = batch_images(images, self.in_chans, "CenterNet", weights_dtype(self))
        r = self.output_stride * 2 ** len(self.neck.steps)
        if images.shape[-2] % r or images.shape[-1] % r:
            raise ConfigError(f"CenterNet needs H and W divisible by the backbone's stride {r}; got "
                              f"{tuple(images.shape[-2:])}. Resize or letterbox the images")
        return images

    def forward_maps(self, images) -> dict[str, Tensor]:
        """heatmap (logits) [B, C, H/R, W/R], size [B, 2, H/R, W/R] (output pixels), offset [B, 2, H/R, W/R]."""
        x = (self._batch(images) - self.image_mean) / self.image_std
        maps = self.backbone(x)[::-1]  # deepest first
        feat = self.neck(maps)
        return {"heatmap": self.heatmap_head(feat), "size": self.size_head(feat), "offset": self.offset_head(feat)}

    def forward(self, images, targets: Sequence[Mapping[str, Tensor]] | None = None):
        """Training: {loss_heatmap, loss_size, loss_offset} (weights applied); eval: one dict per image."""
        if self.training and targets is None:
            raise ConfigError("in training mode CenterNet needs targets: model(images, targets), one dict {boxes "
                              "[M, 4] xyxy, labels [M] in 1..C} per image; call model.eval() to detect")
        maps = self.forward_maps(images)
        if self.training:
            check_targets(targets, len(maps["heatmap"]), self.num_classes, "CenterNet")
            t = centernet_targets(targets, self.num_classes, maps["heatmap"].shape[-2:], self.output_stride,
                                  self.min_overlap, self.radius_rule)
            return self.loss(maps["heatmap"], maps["size"], maps["offset"], t["heatmap"], t["centres"], t["size"],
                             t["offset"])
        return self.postprocess(maps, tuple(images.shape[-2:] if isinstance(images, Tensor)
                                            else images[0].shape[-2:]))

    def postprocess(self, maps: Mapping[str, Tensor], image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """Per image {boxes, scores, labels}: the top-K heat-map peaks (those scored > score_thresh if set), clipped
        boxes; without a threshold the output has a fixed size (no data-dependent shapes: runs on the meta device)."""
        boxes, scores, labels = decode_heatmap(torch.sigmoid(maps["heatmap"]), maps["size"], maps["offset"],
                                               self.output_stride, self.topk)
        out = []
        for b, s, lab in zip(boxes, scores, labels):
            if self.score_thresh is not None:
                keep = s > self.score_thresh
                b, s, lab = b[keep], s[keep], lab[keep]
            out.append({"boxes": clip_boxes_to_image(b, image_size), "scores": s, "labels": lab})
        return out


# ----------------------------------------------------------------------------- registered configurations

TINY_BACKBONE = dict(layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), stem_width=16)


@register_model(task="detection", input_size=(3, 512, 512), num_params=14_219_092,
                params_source="by hand: torchvision resnet18 without fc + the paper's 3-step neck + three heads")
def centernet_resnet18(**kw) -> CenterNet:
    """CenterNet-ResNet-18 of the paper (80 classes, neck 256-128-64, heads 64; plain 3x3 convs where the paper's
    are deformable). Notes: 002 §4.3.5. Parameters (convolutions before BN without bias, BN = 2 C):
        backbone   ResNet-18 without fc: 11,689,512 - (512 x 1000 + 1000) = 11,176,512
        neck       3x3 512->256 1,179,648 + BN 512 + 4x4 deconv 256->256 1,048,576 + BN 512 = 2,229,248;
                   3x3 256->128 294,912 + 256 + deconv 262,144 + 256 = 557,568; 3x3 128->64 73,728 + 128 +
                   deconv 65,536 + 128 = 139,520                                               -> 2,926,336
        heads      3x3 64->64 + bias 36,928 each; 1x1 64->80 + bias 5,200, 64->2 + bias 130 x 2 -> 116,244
        total      14,219,092
    """
    return CenterNet(**kw)


@register_model(task="detection", input_size=(1, 128, 128), num_params=542_174,
                params_source="by hand: the tiny ResNet-18 stages + neck with skips + three heads")
def centernet_tiny(**kw) -> CenterNet:
    """A CPU-sized CenterNet for 1-channel 128 x 128 digit scenes: ResNet basic blocks 16-32-64-128 (one per
    stage), a neck 64-32-32 with skips, heads 32, 10 classes. Notes: 002 §4.3.5. Parameters:
        backbone   stem 7x7 1->16 784 + 32; stage 1: 2 x (2,304 + 32); stage 2: 4,608 + 9,216 + 1x1 512 + 3 x 64;
                   stage 3: 18,432 + 36,864 + 2,048 + 3 x 128; stage 4: 73,728 + 147,456 + 8,192 + 3 x 256 -> 307,888
        neck       3x3 128->64 73,728 + 128 + deconv 64->64 65,536 + 128; 3x3 64->32 18,432 + 64 + deconv 16,384
                   + 64; 3x3 32->32 9,216 + 64 + deconv 16,384 + 64; skips 1x1 64->64 4,096 + 128, 32->32 1,024
                   + 64, 16->32 512 + 64                                                            -> 206,080
        heads      3 x (3x3 32->32 + bias 9,248); 1x1 32->10 + bias 330, 32->2 + bias 66 x 2        -> 28,206
        total      542,174
    """
    defaults = dict(num_classes=10, in_chans=1, backbone="resnet18", neck_chans=(64, 32, 32), skips=True,
                    head_chans=32)
    if "backbone" not in kw:  # the tiny widths belong to the default ResNet
        defaults["backbone_kwargs"] = TINY_BACKBONE
    model = CenterNet(**(defaults | kw))
    model.default_input_shape = (model.in_chans, 128, 128)
    return model
