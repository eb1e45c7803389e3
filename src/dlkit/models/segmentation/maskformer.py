"""MaskFormer: semantic and panoptic segmentation as mask classification (Cheng, Schwing, Kirillov 2021, "Per-pixel
classification is not all you need"; Notes: 002 §5.3.2).

Architecture (the notes' pixel-decoder version): a backbone gives its maps at strides 4, 8, 16, 32 (the feature
contract, `detector_backbone`); the pixel decoder (`PixelDecoder`, MaskFormer's FPN-like top-down path) turns them
into per-pixel embeddings E_pix [B, E, H/4, W/4]; a DETR transformer decoder (`nn.detr_transformer`, 2-D sine
positions, no encoder as in MaskFormer's configuration) decodes N learned queries against the projected stride-32
map; per query and decoder layer, a linear class head gives K + 1 logits (no object last) and a 3-layer MLP a mask
embedding E_mask [E]; the mask logits are the dot products m_q(u, v) = E_mask[q] . E_pix(u, v), [B, N, H/4, W/4].

Training (`mask_classification`): Hungarian matching of the queries to the ground-truth segments on -p(class) +
20 focal + 1 dice (the costs on the masks upsampled bilinearly to the image size), then cross entropy (no object
weighed 0.1) + 20 focal + 1 dice on the matched pairs, at every decoder layer (auxiliary losses). Targets: per
image {"masks": [M, H, W] bool at the image's size, "labels": [M] in 1..K}; `semantic_targets` turns a class map
into one mask per class present. `model(images, targets)` returns {loss_ce, loss_mask, loss_dice}, weighted and
summed over the layers.

Inference: `model(images)` returns the semantic scores [B, K, H, W] (sum_q p_q(k) sigmoid(m_q), the masks upsampled
to the image size; argmax over dim 1 = the class map, class index = label - 1); `panoptic(images, thing_classes)`
the (id map, segments) of each image. Images: floats in [0, 1], [B, C, H, W] (or a list of equal sizes), normalised
and zero-padded to multiples of `size_divisible`; the outputs are cropped back to (H, W).
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.conv_bn_act import ConvBNAct
from ...nn.detr_transformer import DETRDecoder
from ...nn.positional import sine_positional_encoding_2d
from ...registry import register_model
from ..detection.backbones import detector_backbone
from ..detection.detr import MLP
from ..detection.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    batch_images,
    channel_stats,
    normalize_and_pad,
    weights_dtype,
)
from .mask_classification import (
    MaskHungarianMatcher,
    check_mask_targets,
    mask_pair_losses,
    panoptic_inference,
    semantic_inference,
    set_class_loss,
)


class PixelDecoder(nn.Module):
    """MaskFormer's pixel decoder over backbone maps (shallowest first, strides 4 ... 32). Notes: 002 §5.3.2.

    y_top = ReLU(GN(conv3x3(C_top))); going down, y_l = ReLU(GN(conv3x3(GN(conv1x1(C_l)) + nearest_up(y_{l+1}))));
    the per-pixel embeddings are conv3x3(y_first) (with bias) to `mask_dim` channels. It differs from
    `nn.fpn.FeaturePyramidNetwork` in where the 3x3 convolutions sit (in the top-down chain, and directly on the top
    map instead of a 1x1 lateral) and in its group norms, as MaskFormer's own. forward returns (embeddings
    [B, mask_dim, H/4, W/4], [y_top, ..., y_first]: the levels coarsest first, `conv_dim` channels)."""

    def __init__(self, in_channels: Sequence[int], conv_dim: int = 256, mask_dim: int = 256, norm_layer="group"):
        super().__init__()
        if len(in_channels) < 1 or min(in_channels) < 1 or conv_dim < 1 or mask_dim < 1:
            raise ConfigError(f"the pixel decoder needs the positive widths of the backbone maps and positive "
                              f"conv_dim, mask_dim; got {list(in_channels)}, {conv_dim}, {mask_dim}")
        self.in_channels = tuple(in_channels)
        self.top = ConvBNAct(in_channels[-1], conv_dim, 3, norm_layer=norm_layer)
        self.lateral = nn.ModuleList(ConvBNAct(c, conv_dim, 1, act_layer=None, norm_layer=norm_layer)
                                     for c in in_channels[:-1])
        self.output = nn.ModuleList(ConvBNAct(conv_dim, conv_dim, 3, norm_layer=norm_layer) for _ in in_channels[:-1])
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)

    def forward(self, maps: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        if [m.shape[1] for m in maps] != list(self.in_channels):
            raise ConfigError(f"the pixel decoder was built for maps of widths {list(self.in_channels)}; got "
                              f"{[tuple(m.shape) for m in maps]}")
        y = self.top(maps[-1])
        levels = [y]
        for i in range(len(maps) - 2, -1, -1):
            lateral = self.lateral[i](maps[i])
            y = self.output[i](lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest"))
            levels.append(y)
        return self.mask_features(y), levels


class MaskFormer(nn.Module):
    """MaskFormer: backbone, pixel decoder, DETR decoder over N queries, class and mask-embedding heads, mask
    classification loss at every decoder layer (module docstring). Notes: 002 §5.3.2.

    `num_classes` K (labels 1..K, K + 1 logits). `backbone`: a registered classifier's name read at strides 4 ... 32
    (`pretrained_backbone`, `backbone_kwargs`, `frozen_bn`). `conv_dim` the pixel decoder's width, `mask_dim` E,
    `d_model`, `num_heads`, `num_decoder_layers`, `dim_feedforward`, `dropout`, `num_queries` N the decoder's.
    Loss weights `loss_ce`, `loss_mask` (focal), `loss_dice`, `eos_coef`; matching costs `cost_class`, `cost_mask`,
    `cost_dice`.
    """

    def __init__(self, num_classes: int = 150, backbone: str | nn.Module = "resnet50", in_chans: int = 3,
                 pretrained_backbone: bool | str = False, frozen_bn: bool = True,
                 backbone_kwargs: Mapping | None = None, conv_dim: int = 256, mask_dim: int = 256, d_model: int = 256,
                 num_heads: int = 8, num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 num_queries: int = 100, norm_layer="group", aux_loss: bool = True, eos_coef: float = 0.1,
                 loss_ce: float = 1.0, loss_mask: float = 20.0, loss_dice: float = 1.0, cost_class: float = 1.0,
                 cost_mask: float = 20.0, cost_dice: float = 1.0, image_mean: Sequence[float] | None = None,
                 image_std: Sequence[float] | None = None, size_divisible: int = 32):
        super().__init__()
        if num_classes < 1 or num_queries < 1:
            raise ConfigError(f"num_classes (K, labels 1..K; no object is added) and num_queries (N) must be >= 1; "
                              f"got {num_classes}, {num_queries}")
        if not 0 < eos_coef <= 1:
            raise ConfigError(f"eos_coef (the no-object class weight) must be in (0, 1]; got {eos_coef}")
        self.num_classes, self.in_chans, self.num_queries = num_classes, in_chans, num_queries
        self.size_divisible, self.aux_loss, self.eos_coef = size_divisible, aux_loss, eos_coef
        self.loss_weights = {"loss_ce": loss_ce, "loss_mask": loss_mask, "loss_dice": loss_dice}
        self.backbone = detector_backbone(backbone, in_chans, None, pretrained_backbone, frozen_bn, backbone_kwargs,
                                          strides=(4, 8, 16, 32))
        chans = self.backbone.feature_info.channels()
        self.pixel_decoder = PixelDecoder(chans, conv_dim, mask_dim, norm_layer)
        self.build_decoder(chans, d_model, num_heads, num_decoder_layers, dim_feedforward, dropout, conv_dim)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.class_embed = nn.Linear(d_model, num_classes + 1)
        self.mask_embed = MLP(d_model, d_model, mask_dim, 3)
        self.matcher = self.build_matcher(cost_class, cost_mask, cost_dice)
        self.register_buffer("image_mean", channel_stats(image_mean, IMAGENET_MEAN, in_chans, "image_mean"),
                             persistent=False)
        self.register_buffer("image_std", channel_stats(image_std, IMAGENET_STD, in_chans, "image_std"),
                             persistent=False)
        self.default_input_shape = (in_chans, 512, 512)

    def build_decoder(self, chans: Sequence[int], d_model: int, num_heads: int, num_layers: int, d_ff: int,
                      dropout: float, conv_dim: int) -> None:
        """The 1x1 projection of the stride-32 map and the DETR decoder (xavier-initialised, as DETR)."""
        self.input_proj = nn.Conv2d(chans[-1], d_model, 1)
        self.decoder = DETRDecoder(num_layers, d_model, num_heads, d_ff=d_ff, dropout=dropout)
        for p in self.decoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def build_matcher(self, cost_class: float, cost_mask: float, cost_dice: float) -> MaskHungarianMatcher:
        return MaskHungarianMatcher(cost_class, cost_mask, cost_dice)

    # ------------------------------------------------------------------ network

    def inputs(self, images) -> tuple[Tensor, tuple[int, int]]:
        """(normalised, zero-padded images [B, C, H', W'], the images' size (H, W))."""
        x = batch_images(images, self.in_chans, type(self).__name__, weights_dtype(self))
        return normalize_and_pad(x, self.image_mean.to(x), self.image_std.to(x), self.size_divisible), x.shape[-2:]

    def decode(self, feats: list[Tensor], mask_features: Tensor, levels: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(class logits [L, B, N, K + 1], mask logits [L, B, N, H'/4, W'/4]) of every decoder layer."""
        src = self.input_proj(feats[-1])
        B, d, h, w = src.shape
        pos = sine_positional_encoding_2d(torch.zeros(B, h, w, dtype=torch.bool, device=src.device), d)
        pos = pos.to(src.dtype).flatten(2).transpose(1, 2)
        query_pos = self.query_embed.weight.unsqueeze(0).repeat(B, 1, 1)  # a copy, not a view (see DETR._run)
        hs, _ = self.decoder(torch.zeros_like(query_pos), src.flatten(2).transpose(1, 2), pos, query_pos)
        return self.class_embed(hs), torch.einsum("lbqc,bchw->lbqhw", self.mask_embed(hs), mask_features)

    def head_outputs(self, images) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """(class logits [L, B, N, K + 1], mask logits [L, B, N, H'/4, W'/4] on the padded canvas, image size
        (H, W)); the last of the L decoder layers is the model's output."""
        x, size = self.inputs(images)
        feats = self.backbone(x)
        mask_features, levels = self.pixel_decoder(feats)
        logits, masks = self.decode(feats, mask_features, levels)
        return logits, masks, size

    def image_masks(self, masks: Tensor, size: tuple[int, int]) -> Tensor:
        """Mask logits [..., h, w] of the padded canvas, upsampled bilinearly to it and cropped to the image."""
        lead = masks.shape[:-2]
        canvas = [s * self.mask_stride for s in masks.shape[-2:]]
        up = F.interpolate(masks.flatten(0, -3)[:, None], size=canvas, mode="bilinear", align_corners=False)
        return up[:, 0, :size[0], :size[1]].reshape(*lead, *size)

    mask_stride = 4

    def forward(self, images, targets: Sequence[Mapping[str, Tensor]] | None = None):
        """With targets: the loss dict; without: the semantic scores [B, K, H, W] of `semantic_inference`."""
        logits, masks, size = self.head_outputs(images)
        if targets is not None:
            return self.loss(logits, masks, targets, size)
        return semantic_inference(logits[-1], self.image_masks(masks[-1], size))

    @torch.no_grad()
    def panoptic(self, images, thing_classes: Container[int] = (), score_threshold: float = 0.8,
                 overlap_threshold: float = 0.8) -> list[tuple[Tensor, list[dict]]]:
        """Per image the panoptic (id map [H, W], segments) of `panoptic_inference` (thing classes as class
        indices 0..K-1)."""
        logits, masks, size = self.head_outputs(images)
        return [panoptic_inference(lg, self.image_masks(m, size), thing_classes, score_threshold, overlap_threshold)
                for lg, m in zip(logits[-1], masks[-1])]

    # ------------------------------------------------------------------ loss

    def match_and_score(self, logits: Tensor, masks: Tensor, labels: list[Tensor], target_masks: list[Tensor],
                        num_masks: float) -> dict[str, Tensor]:
        """The unweighted loss terms of one decoder layer: masks [B, N, h, w] upsampled to the canvas of the
        target masks [M_b, H', W'], matched and scored on every pixel (MaskFormer)."""
        up = F.interpolate(masks, size=target_masks[0].shape[-2:], mode="bilinear", align_corners=False).flatten(2)
        flat = [t.flatten(1) for t in target_masks]
        indices = self.matcher(logits, up, labels, flat)
        pred = torch.cat([u[rows] for u, (rows, _) in zip(up, indices)])
        gt = torch.cat([t[cols] for t, (_, cols) in zip(flat, indices)])
        focal, dice = mask_pair_losses(pred, gt, num_masks, self.matcher.mask_alpha, self.matcher.mask_gamma)
        return {"loss_ce": set_class_loss(logits, indices, labels, self.eos_coef), "loss_mask": focal,
                "loss_dice": dice}

    def loss(self, logits: Tensor, masks: Tensor, targets: Sequence[Mapping[str, Tensor]], size: tuple[int, int]
             ) -> dict[str, Tensor]:
        """{loss_ce, loss_mask, loss_dice}: the matched losses of the last decoder layer plus (with `aux_loss`)
        every other, times the loss weights; the mask terms divided by the batch's ground-truth mask count."""
        check_mask_targets(targets, masks.shape[1], self.num_classes, type(self).__name__)
        canvas = [s * self.mask_stride for s in masks.shape[-2:]]
        labels, target_masks = [], []
        for t in targets:
            if tuple(t["masks"].shape[-2:]) != tuple(size):
                raise ConfigError(f"target masks must have the image's size {tuple(size)}; got "
                                  f"{tuple(t['masks'].shape)}")
            labels.append(t["labels"].to(masks.device).long() - 1)
            m = t["masks"].to(masks.device, torch.bool)
            target_masks.append(F.pad(m, (0, canvas[1] - size[1], 0, canvas[0] - size[0])))
        num_masks = max(float(sum(len(lab) for lab in labels)), 1.0)
        layers = range(len(logits)) if self.aux_loss else [len(logits) - 1]
        total = {k: logits.new_zeros(()) for k in self.loss_weights}
        for i in layers:
            for k, v in self.match_and_score(logits[i], masks[i], labels, target_masks, num_masks).items():
                total[k] = total[k] + v
        return {k: self.loss_weights[k] * v for k, v in total.items()}


@register_model(input_size=(3, 512, 512), num_params=41_254_743,
                params_source="derived by hand (maskformer_resnet50 docstring); MaskFormer paper: R50, 41M")
def maskformer_resnet50(num_classes: int = 150, frozen_bn: bool = True, **kw) -> MaskFormer:
    """MaskFormer R50 for ADE20K-150 as the paper's configuration: ResNet-50 maps C2..C5 (frozen batch norms, all
    convolutions trained), pixel decoder of width 256 with group norms, E = 256, 6 decoder layers (d = 256, 8
    heads, FFN 2048, no encoder), 100 queries, 151 logits. Trainable parameters, by hand: ResNet-50 convolutions
    23,454,912; pixel decoder 7,540,480 (3x3 on C5 4,718,592 + 512; 1x1 laterals 256 (256 + 512 + 1024) =
    458,752 + 3 x 512; 3 output 3x3 3 x 589,824 + 3 x 512; embedding 3x3 589,824 + 256); input projection
    2048 x 256 + 256 = 524,544; 6 decoder layers x 1,578,752 (two attentions 2 x 263,168, FFN 1,050,880, three
    norms 1,536) + final norm 512 = 9,473,024; queries 25,600; class head 256 x 151 + 151 = 38,807; mask MLP
    3 x 65,792 = 197,376: 41,254,743 in all, the paper's 41M. Notes: 002 §5.3.2."""
    return MaskFormer(num_classes, "resnet50", frozen_bn=frozen_bn, **kw)


@register_model(input_size=(3, 64, 64))
def maskformer_tiny(num_classes: int = 5, in_chans: int = 3, **kw) -> MaskFormer:
    """A small MaskFormer for CPU tests: a ResNet of one basic block per stage (16-32-64-128 wide, trainable batch
    norm), pixel decoder and E of 32, 2 decoder layers (d = 32, 4 heads, FFN 64), 10 queries. Notes: 002 §5.3.2."""
    args = dict(backbone="resnet18", backbone_kwargs={"layers": (1, 1, 1, 1), "widths": (16, 32, 64, 128),
                                                      "stem_width": 16},
                frozen_bn=False, conv_dim=32, mask_dim=32, d_model=32, num_heads=4, num_decoder_layers=2,
                dim_feedforward=64, num_queries=10)
    model = MaskFormer(num_classes, in_chans=in_chans, **(args | kw))
    model.default_input_shape = (in_chans, 64, 64)
    return model
