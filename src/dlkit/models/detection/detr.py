"""DETR, the detection transformer (Carion et al. 2020, "End-to-end object detection with transformers"; Notes:
002 §4.3.6).

Architecture (the notes' six steps): a CNN backbone gives the C5 map A [B, 2048, H/32, W/32] (ResNet-50 with frozen
batch norms, its 7x7 stem convolution and layer1 not trained, as DETR); a 1x1 convolution projects it to d channels;
the 2-D sine positional encoding of its cells (`nn.positional.sine_positional_encoding_2d`) is added to the queries
and keys of every attention of a post-norm transformer (`nn.detr_transformer`: 6 encoder and 6 decoder layers, 8
heads, FFN 2048, dropout 0.1); the decoder starts from zeros and decodes its N learned object queries in parallel (no
causal mask); every decoder output goes through the final layer norm and two heads shared by all layers: a linear
class head with C + 1 logits (the last is "no object", the notes' empty set) and a 3-layer MLP giving the box as
sigmoid-normalised (cx, cy, w, h) relative to the image.

Training (the Hungarian loss, 002 §4.3.6): per image the predictions are matched one-to-one to the ground-truth
objects by `HungarianMatcher` (cost -p(class) + 5 L1 + 2 (1 - GIoU)); every prediction then pays the cross entropy
of its class (the matched object's, "no object" for the others, that class weighed 0.1), and every matched one the L1
and 1 - GIoU of its box. The class term is the weighted mean over the queries of the batch, the box terms are summed
over the matched pairs and divided by the number of ground-truth boxes of the batch (all processes). The outputs of
every decoder layer are scored so (auxiliary losses), and `model(images, targets)` returns {loss_ce, loss_bbox,
loss_giou}, each summed over the layers and already multiplied by its weight (1, 5, 2), so their sum is DETR's loss.
The notes give the matching's box cost as "Huber + IoU"; DETR uses L1 + GIoU, as here.

Inference: per query the softmax over the C + 1 classes, the no-object column dropped, the best class and its
probability; the boxes scaled to the image's pixels. No NMS: the set loss teaches the queries not to duplicate.

Images are floats in [0, 1]: a batch tensor [B, C, H, W] or a list of [C, H, W] of any sizes. They are normalised,
placed in the top-left corner of a zero canvas whose sides are the largest height and width rounded up to
`size_divisible`, and a padding mask marks the canvas pixels outside each image. The mask, taken down to the C5 grid,
keeps the padded cells out of the positional encoding's counts and out of every attention as keys. A batch tensor of
one size whose sides are multiples of `size_divisible` has no padding (the mask is all valid and no mask is passed).
Boxes are normalised by, and predicted relative to, each image's own size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.detr_transformer import DETRDecoder, DETREncoder
from ...nn.positional import sine_positional_encoding_2d
from ...ops.boxes import box_convert, generalized_box_iou
from ...registry import register_model
from ..backbone import FeatureExtractor
from .backbones import detector_backbone
from .hungarian_matcher import HungarianMatcher
from .images import IMAGENET_MEAN, IMAGENET_STD, channel_stats, check_pixels, weights_dtype
from .targets import check_targets


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (DETR's box head: 3 layers, d -> d -> d -> 4)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def hungarian_loss(logits: Tensor, boxes: Tensor, targets: Sequence[Mapping[str, Tensor]],
                   matcher: HungarianMatcher, eos_coef: float = 0.1, num_boxes: float | None = None
                   ) -> dict[str, Tensor]:
    """The unweighted terms of the Hungarian loss of one decoder layer. Notes: 002 §4.3.6.

    logits [B, N, C + 1] (the last is no-object), boxes [B, N, 4] normalised cxcywh; targets per image {labels [M]
    in 0..C-1, boxes [M, 4] normalised cxcywh}. With sigma* the matcher's assignment:
    loss_ce = sum_q w_{c_q} (-log p_q[c_q]) / sum_q w_{c_q} over the B N queries (c_q the matched object's class or
    no-object; w = 1, and `eos_coef` for no-object); loss_bbox = sum over matched pairs of |b^ - b|_1 / num_boxes;
    loss_giou = sum of (1 - GIoU(b^, b)) / num_boxes. num_boxes defaults to the targets' box count (at least 1).
    """
    indices = matcher(logits, boxes, targets)
    no_object = logits.shape[-1] - 1
    classes = torch.full(logits.shape[:2], no_object, dtype=torch.long, device=logits.device)
    for b, ((rows, cols), t) in enumerate(zip(indices, targets)):
        classes[b, rows] = t["labels"].to(logits.device).long()[cols]
    weight = torch.ones(no_object + 1, dtype=logits.dtype, device=logits.device)
    weight[no_object] = eos_coef
    w = weight[classes]
    nll = -logits.log_softmax(-1).gather(-1, classes[..., None])[..., 0]
    loss_ce = (w * nll).sum() / w.sum()
    if num_boxes is None:
        num_boxes = max(sum(len(t["labels"]) for t in targets), 1)
    pred = torch.cat([bx[rows] for bx, (rows, _) in zip(boxes, indices)])
    gt = torch.cat([t["boxes"].to(boxes)[cols] for t, (_, cols) in zip(targets, indices)])
    loss_bbox = (pred - gt).abs().sum() / num_boxes
    if len(pred):
        giou = generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy")).diagonal()
    else:
        giou = pred.new_ones(0)
    loss_giou = (1 - giou).sum() / num_boxes
    return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}


def freeze_leading_stages(backbone: nn.Module, num_stages: int) -> None:
    """Stop training (`requires_grad_(False)`) the first `num_stages` stages of a feature extractor's backbone and
    every step before them (ResNet, 2: the 7x7 stem convolution and layer1, as DETR and torchvision's detectors)."""
    if num_stages <= 0:
        return
    if not isinstance(backbone, FeatureExtractor):
        raise ConfigError(f"frozen_stages needs a classifier read through the feature contract (a registered name); "
                          f"got {type(backbone).__name__}. Pass frozen_stages=0 and freeze it yourself")
    names = backbone.model.feature_info.module_names()
    if num_stages > len(names):
        raise ConfigError(f"frozen_stages={num_stages}, but the backbone has {len(names)} stages ({names})")
    for name, step in backbone.model.feature_path():
        if isinstance(step, nn.Module):
            step.requires_grad_(False)
        if name == names[num_stages - 1]:
            return


class DETR(nn.Module):
    """DETR: backbone C5, 1x1 projection, transformer with 2-D sine positions, N object queries, class and box heads,
    Hungarian loss at every decoder layer (module docstring). Notes: 002 §4.3.6.

    `num_classes` counts the object classes (labels 1..C; the class head has C + 1 logits, label l on logit l - 1,
    no-object last). `backbone`: a registered classifier's name (built with `in_chans`, `pretrained_backbone`,
    `backbone_kwargs`), read at stride 32 (16 with `dilation`: DETR-DC5, the last stage dilated, same parameters);
    `frozen_bn` freezes its batch norms, `frozen_stages` its first stages.
    Losses: `loss_ce`, `loss_bbox`, `loss_giou` weights, `eos_coef` the no-object weight, `aux_loss` scores every
    decoder layer; matching costs `cost_class`, `cost_bbox`, `cost_giou`.
    """

    def __init__(self, num_classes: int = 91, backbone: str | nn.Module = "resnet50", in_chans: int = 3,
                 pretrained_backbone: bool | str = False, frozen_bn: bool = True,
                 backbone_kwargs: Mapping | None = None, frozen_stages: int = 2, dilation: bool = False,
                 out_index: int | None = None,
                 d_model: int = 256,
                 num_heads: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, num_queries: int = 100, norm_first: bool = False,
                 aux_loss: bool = True, eos_coef: float = 0.1, loss_ce: float = 1.0, loss_bbox: float = 5.0,
                 loss_giou: float = 2.0, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
                 size_divisible: int = 32):
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes counts the object classes (labels 1..C, no-object is added) and must be "
                              f">= 1; got {num_classes}")
        if num_queries < 1:
            raise ConfigError(f"num_queries (N, the most objects DETR can find in an image) must be >= 1; got "
                              f"{num_queries}")
        if not 0 < eos_coef <= 1:
            raise ConfigError(f"eos_coef (the no-object class weight) must be in (0, 1]; got {eos_coef}")
        self.num_classes, self.in_chans, self.num_queries = num_classes, in_chans, num_queries
        self.size_divisible, self.aux_loss, self.eos_coef = size_divisible, aux_loss, eos_coef
        self.loss_weights = {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
        if dilation:  # DETR-DC5: the last stage dilated instead of strided, C5 at stride 16
            backbone_kwargs = {**dict(backbone_kwargs or {}), "output_stride": 16}
        self.backbone = detector_backbone(backbone, in_chans, None if out_index is None else (out_index,),
                                          pretrained_backbone, frozen_bn, backbone_kwargs,
                                          strides=(16 if dilation else 32,))
        freeze_leading_stages(self.backbone, frozen_stages)
        self.stride = self.backbone.feature_info.reductions()[-1]  # of the attention maps' grid
        self.input_proj = nn.Conv2d(self.backbone.feature_info.channels()[-1], d_model, 1)
        layer = dict(d_ff=dim_feedforward, dropout=dropout, norm_first=norm_first)
        self.encoder = DETREncoder(num_encoder_layers, d_model, num_heads, final_norm=norm_first, **layer)
        self.decoder = DETRDecoder(num_decoder_layers, d_model, num_heads, **layer)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.class_embed = nn.Linear(d_model, num_classes + 1)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.matcher = HungarianMatcher(cost_class, cost_bbox, cost_giou)
        for p in [*self.encoder.parameters(), *self.decoder.parameters()]:
            if p.dim() > 1:  # DETR's transformer initialisation
                nn.init.xavier_uniform_(p)
        self.register_buffer("image_mean", channel_stats(image_mean, IMAGENET_MEAN, in_chans, "image_mean"),
                             persistent=False)
        self.register_buffer("image_std", channel_stats(image_std, IMAGENET_STD, in_chans, "image_std"),
                             persistent=False)
        self.default_input_shape = (in_chans, 800, 800)

    # ------------------------------------------------------------------ inputs

    def check_images(self, images) -> bool:
        """Refuse in one line what is not [B, C, H, W] or a non-empty list of [C, H, W] float images of the weights'
        dtype; True for a list."""
        listed = isinstance(images, list | tuple)
        ok = (bool(images) and all(isinstance(i, Tensor) and i.dim() == 3 and i.shape[0] == self.in_chans
                                   for i in images)) if listed else (
            isinstance(images, Tensor) and images.dim() == 4 and images.shape[1] == self.in_chans)
        if not ok:
            got = (f"a list of {[tuple(i.shape) if isinstance(i, Tensor) else type(i).__name__ for i in images]}"
                   if listed else tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__)
            raise ConfigError(f"DETR expects images [B, {self.in_chans}, H, W] or a list of [{self.in_chans}, H, W] "
                              f"in [0, 1]; got {got}")
        dtype = weights_dtype(self)
        for image in images if listed else [images]:
            check_pixels(image, dtype, "DETR")
        return listed

    def batch(self, images) -> tuple[Tensor, Tensor, Tensor]:
        """(normalised images on a zero canvas [B, C, H', W'], padding mask [B, H', W'] True outside each image,
        image sizes [B, 2] as (height, width)) of a batch tensor or a list of [C, H, W] images in [0, 1]."""
        listed = self.check_images(images)
        sizes = [tuple(i.shape[-2:]) for i in images]
        d = self.size_divisible
        h, w = (-(-max(s[k] for s in sizes) // d) * d for k in (0, 1))
        first = images[0]
        canvas = first.new_zeros(len(sizes), self.in_chans, h, w)
        mask = torch.ones(len(sizes), h, w, dtype=torch.bool, device=first.device)
        mean, std = self.image_mean.to(first.dtype), self.image_std.to(first.dtype)
        if listed:
            for k, (im, (hi, wi)) in enumerate(zip(images, sizes)):
                canvas[k, :, :hi, :wi] = (im - mean[0]) / std[0]
                mask[k, :hi, :wi] = False
        else:
            hi, wi = sizes[0]
            canvas[:, :, :hi, :wi] = (images - mean) / std
            mask[:, :hi, :wi] = False
        return canvas, mask, torch.tensor(sizes, dtype=first.dtype, device=first.device)

    # ------------------------------------------------------------------ network

    def _run(self, images, need_weights: bool = False):
        x, mask, sizes = self.batch(images)
        feat = self.input_proj(self.backbone(x)[-1])
        B, d, h, w = feat.shape
        fmask = F.interpolate(mask[:, None].float(), size=(h, w)).bool()[:, 0]  # nearest: a cell's top-left pixel
        pos = sine_positional_encoding_2d(fmask, d).to(feat.dtype).flatten(2).transpose(1, 2)  # [B, hw, d]
        src = feat.flatten(2).transpose(1, 2)
        kpm = fmask.flatten(1)  # always a mask (all False without padding): no data-dependent branch, so the
        # model also runs on the meta device (dlkit summary)
        memory = self.encoder(src, pos, kpm)
        query_pos = self.query_embed.weight.unsqueeze(0).repeat(B, 1, 1)  # a copy: a view of a weight made under
        # no_grad would still require grad without a grad_fn, which module hooks (FlopCounterMode) refuse
        hs, weights = self.decoder(torch.zeros_like(query_pos), memory, pos, query_pos, kpm, need_weights)
        return self.class_embed(hs), self.bbox_embed(hs).sigmoid(), sizes, weights, (h, w)

    def head_outputs(self, images) -> tuple[Tensor, Tensor, Tensor]:
        """(class logits [L, B, N, C + 1], boxes [L, B, N, 4] normalised cxcywh, image sizes [B, 2] (h, w)), one
        entry of L per decoder layer (the last is the model's output)."""
        logits, boxes, sizes, _, _ = self._run(images)
        return logits, boxes, sizes

    def cross_attention_maps(self, images) -> Tensor:
        """The last decoder layer's cross-attention of every object query over the C5 grid, averaged over the heads:
        [B, N, H/32, W/32] (H/16 with `dilation`; sides rounded up), each query's map summing to 1 (0 on padded
        cells). Call in eval mode (no dropout). Notes: 002 §4.3.6 remark (the decoder attends to the objects'
        extremities)."""
        _, _, _, weights, (h, w) = self._run(images, need_weights=True)
        return weights.reshape(len(weights), self.num_queries, h, w)

    def forward(self, images, targets: Sequence[Mapping[str, Tensor]] | None = None):
        if self.training:
            self.check_images(images)  # before the targets: a [C, H, W] image is not C images
            check_targets(targets, len(images), self.num_classes, "DETR")
        logits, boxes, sizes = self.head_outputs(images)
        return self.loss(logits, boxes, targets, sizes) if self.training else self.detect(logits[-1], boxes[-1], sizes)

    # ------------------------------------------------------------------ loss and detections

    def normalised_targets(self, targets: Sequence[Mapping[str, Tensor]], sizes: Tensor) -> list[dict[str, Tensor]]:
        """The contract's targets (xyxy pixels, labels 1..C) as the matcher's (cxcywh / image size, labels 0..C-1)."""
        if len(targets) != len(sizes):
            raise ConfigError(f"one target dict per image: got {len(targets)} targets for {len(sizes)} images")
        out = []
        for t, (h, w) in zip(targets, sizes):
            labels, boxes = t["labels"].long(), t["boxes"].to(sizes)
            scale = torch.stack([w, h, w, h])
            out.append({"labels": labels - 1, "boxes": box_convert(boxes / scale, "xyxy", "cxcywh")})
        return out

    def loss(self, logits: Tensor, boxes: Tensor, targets: Sequence[Mapping[str, Tensor]], sizes: Tensor
             ) -> dict[str, Tensor]:
        """{loss_ce, loss_bbox, loss_giou}: `hungarian_loss` of the last decoder layer plus (with `aux_loss`) every
        other layer, times the loss weights; box terms over the batch's ground-truth boxes summed over every
        process. Notes: 002 §4.3.6."""
        norm = self.normalised_targets(targets, sizes)
        num_boxes = torch.tensor(float(sum(len(t["labels"]) for t in norm)), device=logits.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(num_boxes)
            num_boxes = num_boxes / torch.distributed.get_world_size()
        num_boxes = max(float(num_boxes), 1.0)
        layers = range(len(logits)) if self.aux_loss else [len(logits) - 1]
        total = {k: logits.new_zeros(()) for k in self.loss_weights}
        for i in layers:
            for k, v in hungarian_loss(logits[i], boxes[i], norm, self.matcher, self.eos_coef, num_boxes).items():
                total[k] = total[k] + v
        return {k: self.loss_weights[k] * v for k, v in total.items()}

    @torch.no_grad()
    def detect(self, logits: Tensor, boxes: Tensor, sizes: Tensor) -> list[dict[str, Tensor]]:
        """One {boxes xyxy pixels, scores, labels 1..C} per image, one detection per query sorted by score: the best
        object class of the softmax (no-object dropped) and its probability. No NMS."""
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
        out = []
        for s, lab, bx, (h, w) in zip(scores, labels, boxes, sizes):
            order = s.argsort(descending=True)
            xyxy = box_convert(bx[order], "cxcywh", "xyxy") * torch.stack([w, h, w, h])
            out.append({"boxes": xyxy, "scores": s[order], "labels": lab[order] + 1})
        return out


@register_model(task="detection", input_size=(3, 800, 800), num_params=41_302_368,
                params_source="DETR repository (facebookresearch/detr): DETR-R50 41.3M trainable")
def detr_resnet50(num_classes: int = 91, frozen_bn: bool = True, frozen_stages: int = 2, **kw) -> DETR:
    """DETR-R50 as published: ResNet-50 C5 (frozen batch norms, stem convolution and layer1 not trained), d = 256,
    6 + 6 layers, 8 heads, FFN 2048, 100 queries, 91 classes + no-object = 92 logits: 41,302,368 trainable
    parameters (41,524,768 in all). Notes: 002 §4.3.6."""
    return DETR(num_classes, "resnet50", frozen_bn=frozen_bn, frozen_stages=frozen_stages, **kw)


@register_model(task="detection", input_size=(3, 128, 128))
def detr_tiny(num_classes: int = 5, in_chans: int = 3, **kw) -> DETR:
    """A small DETR for CPU recipes: a ResNet of one basic block per stage (16-32-64-128 wide, trainable batch norm,
    nothing frozen) read at stride 32, d = 64, 2 + 2 layers of 4 heads with FFN 128, 25 object queries.
    Notes: 002 §4.3.6."""
    args = dict(backbone="resnet18", backbone_kwargs={"layers": (1, 1, 1, 1), "widths": (16, 32, 64, 128),
                                                      "stem_width": 16},
                frozen_bn=False, frozen_stages=0, d_model=64, num_heads=4, num_encoder_layers=2,
                num_decoder_layers=2, dim_feedforward=128, num_queries=25)
    model = DETR(num_classes, in_chans=in_chans, **(args | kw))
    model.default_input_shape = (in_chans, 128, 128)
    return model

