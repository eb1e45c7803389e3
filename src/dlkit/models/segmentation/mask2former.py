"""Mask2Former: MaskFormer with masked attention, multi-scale features in round robin and point-sampled mask losses
(Cheng, Misra, Schwing, Kirillov, Girdhar 2022, "Masked-attention mask transformer for universal image
segmentation"; Notes: 002 §5.3.3).

Changes to `maskformer.MaskFormer` (same backbone, pixel decoder, heads, inference and targets):

(a) masked attention (`nn.masked_attention`): decoder layer l cross-attends only to the pixels where the mask
    predicted from layer l - 1's output has sigmoid >= 0.5 (every pixel for a query whose mask is empty); a first
    prediction is made from the learned query features before any layer, so L layers give L + 1 predictions, all
    scored by the loss. The layer order is masked cross-attention, self-attention, FFN, dropout 0.
(b) multi-scale features: the pixel decoder's maps at strides 32, 16, 8 (each projected to d and given a learned
    level embedding and its 2-D sine positions) are visited in round robin, low resolution first: layer l reads
    level l mod 3 (9 layers = 3 rounds). The paper's pixel decoder is a multi-scale deformable-attention encoder;
    this one reuses MaskFormer's FPN-like `PixelDecoder` (its intermediate levels), so the parameter count is not
    the paper's (44M for R50): `mask2former_resnet50` carries no published count.
(c) point-sampled mask loss: matching costs are taken at K points drawn uniformly (the same for every prediction and
    segment of an image), the matched pairs' losses at K points chosen by importance sampling on the predicted
    mask's uncertainty (`ops.point_sampling`: 3K candidates, the 0.75 K most uncertain and 0.25 K uniform);
    K = 12544 as the paper. Masks are scored by the binary cross entropy (weight 5) and dice (5), the class by
    cross entropy (2), the no-object class weighed 0.1; matching costs 2, 5, 5. `num_points=None` samples every
    pixel centre of the image canvas: then the losses are MaskFormer's full-resolution ones (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.masked_attention import MaskedAttentionDecoderLayer, masked_attention_mask
from ...nn.positional import sine_positional_encoding_2d
from ...ops.point_sampling import pixel_centres, point_sample, uncertain_points
from ...registry import register_model
from .mask_classification import MaskHungarianMatcher, mask_pair_losses, set_class_loss
from .maskformer import MaskFormer


class Mask2Former(MaskFormer):
    """Mask2Former (module docstring): MaskFormer's arguments plus `num_levels` (pixel-decoder levels visited in
    round robin), `num_points` K (None: every pixel), `oversample`, `importance` (the point sampling). Defaults are
    the paper's: 9 layers, dropout 0, weights class 2, mask (BCE) 5, dice 5. Notes: 002 §5.3.3."""

    def __init__(self, num_classes: int = 150, *, num_levels: int = 3, num_decoder_layers: int = 9,
                 dropout: float = 0.0, num_points: int | None = 12544, oversample: float = 3.0,
                 importance: float = 0.75, loss_ce: float = 2.0, loss_mask: float = 5.0, loss_dice: float = 5.0,
                 cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0, **kw):
        if num_points is not None and num_points < 1:
            raise ConfigError(f"num_points (K sampled points per mask) must be >= 1, or None for every pixel; got "
                              f"{num_points}")
        self.num_levels = num_levels
        super().__init__(num_classes, num_decoder_layers=num_decoder_layers, dropout=dropout, loss_ce=loss_ce,
                         loss_mask=loss_mask, loss_dice=loss_dice, cost_class=cost_class, cost_mask=cost_mask,
                         cost_dice=cost_dice, **kw)
        if not 1 <= num_levels < len(self.pixel_decoder.in_channels):
            raise ConfigError(f"num_levels must be in 1..{len(self.pixel_decoder.in_channels) - 1} (the pixel "
                              f"decoder's levels above stride 4); got {num_levels}")
        self.num_points, self.oversample, self.importance = num_points, oversample, importance

    def build_decoder(self, chans: Sequence[int], d_model: int, num_heads: int, num_layers: int, d_ff: int,
                      dropout: float, conv_dim: int) -> None:
        """Per level a projection to d (identity when the widths agree, as Mask2Former) and a level embedding; the
        masked-attention layers, their shared output norm and the learned query features."""
        self.input_proj = nn.ModuleList(nn.Conv2d(conv_dim, d_model, 1) if conv_dim != d_model else nn.Identity()
                                        for _ in range(self.num_levels))
        self.level_embed = nn.Embedding(self.num_levels, d_model)
        self.layers = nn.ModuleList(MaskedAttentionDecoderLayer(d_model, num_heads, d_ff=d_ff, dropout=dropout)
                                    for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.query_feat = nn.Embedding(self.num_queries, d_model)
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def build_matcher(self, cost_class: float, cost_mask: float, cost_dice: float) -> MaskHungarianMatcher:
        return MaskHungarianMatcher(cost_class, cost_mask, cost_dice, mask_alpha=-1.0, mask_gamma=0.0)  # BCE cost

    def predict(self, x: Tensor, mask_features: Tensor) -> tuple[Tensor, Tensor]:
        """(class logits [B, N, K + 1], mask logits [B, N, H/4, W/4]) of the decoder stream x [B, N, d]."""
        h = self.decoder_norm(x)
        return self.class_embed(h), torch.einsum("bqc,bchw->bqhw", self.mask_embed(h), mask_features)

    def decode(self, feats: list[Tensor], mask_features: Tensor, levels: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(class logits [L + 1, B, N, K + 1], mask logits [L + 1, B, N, H'/4, W'/4]): the prediction of the query
        features, then one per masked-attention layer, layer l on level l mod num_levels (coarsest first)."""
        srcs, poss, sizes = [], [], []
        for i in range(self.num_levels):
            f = self.input_proj[i](levels[i])
            B, d, h, w = f.shape
            pos = sine_positional_encoding_2d(torch.zeros(B, h, w, dtype=torch.bool, device=f.device), d)
            poss.append(pos.to(f.dtype).flatten(2).transpose(1, 2))
            srcs.append(f.flatten(2).transpose(1, 2) + self.level_embed.weight[i])
            sizes.append((h, w))
        B = mask_features.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).repeat(B, 1, 1)  # a copy, not a view (see DETR._run)
        x = self.query_feat.weight.unsqueeze(0).repeat(B, 1, 1)
        logits, masks = self.predict(x, mask_features)
        all_logits, all_masks = [logits], [masks]
        for i, layer in enumerate(self.layers):
            lvl = i % self.num_levels
            x = layer(x, srcs[lvl], poss[lvl], query_pos, masked_attention_mask(masks, sizes[lvl]))
            logits, masks = self.predict(x, mask_features)
            all_logits.append(logits)
            all_masks.append(masks)
        return torch.stack(all_logits), torch.stack(all_masks)

    def match_and_score(self, logits: Tensor, masks: Tensor, labels: list[Tensor], target_masks: list[Tensor],
                        num_masks: float) -> dict[str, Tensor]:
        """The unweighted loss terms of one prediction: matching on K uniform points per image, BCE and dice of the
        matched pairs on K importance-sampled points (every pixel centre of the canvas with num_points=None)."""
        canvas = target_masks[0].shape[-2:]
        every = pixel_centres(*canvas, device=masks.device) if self.num_points is None else None
        pred_pts, tgt_pts = [], []
        for m, t in zip(masks, target_masks):
            pts = every if every is not None else torch.rand(self.num_points, 2, device=m.device)
            pred_pts.append(point_sample(m[None], pts[None])[0])
            tgt_pts.append(point_sample(t[None].to(m.dtype), pts[None])[0])
        indices = self.matcher(logits, pred_pts, labels, tgt_pts)
        pred = torch.cat([m[rows] for m, (rows, _) in zip(masks, indices)])[:, None]
        gt = torch.cat([t[cols] for t, (_, cols) in zip(target_masks, indices)])[:, None].to(masks.dtype)
        if every is not None:
            pts = every[None].expand(len(pred), -1, -1)
        else:
            pts = uncertain_points(pred, self.num_points, self.oversample, self.importance)
        bce, dice = mask_pair_losses(point_sample(pred, pts)[:, 0], point_sample(gt, pts)[:, 0], num_masks,
                                     self.matcher.mask_alpha, self.matcher.mask_gamma)
        return {"loss_ce": set_class_loss(logits, indices, labels, self.eos_coef), "loss_mask": bce,
                "loss_dice": dice}


@register_model(input_size=(3, 512, 512))
def mask2former_resnet50(num_classes: int = 150, frozen_bn: bool = True, **kw) -> Mask2Former:
    """Mask2Former R50 for ADE20K-150 with the paper's decoder (9 masked-attention layers, d = 256, 8 heads, FFN
    2048, 100 queries, 3 levels in round robin, K = 12544 points) on MaskFormer's pixel decoder instead of the
    paper's deformable-attention one: 45,492,823 trainable parameters here against the paper's 44M, so no published
    count applies (module docstring). Notes: 002 §5.3.3."""
    return Mask2Former(num_classes, backbone="resnet50", frozen_bn=frozen_bn, **kw)


@register_model(input_size=(3, 64, 64))
def mask2former_tiny(num_classes: int = 5, in_chans: int = 3, **kw) -> Mask2Former:
    """A small Mask2Former for CPU tests: `maskformer_tiny`'s backbone and widths (32), 3 masked-attention layers
    (one round over the 3 levels), 10 queries, K = 256 points. Notes: 002 §5.3.3."""
    args = dict(backbone="resnet18", backbone_kwargs={"layers": (1, 1, 1, 1), "widths": (16, 32, 64, 128),
                                                      "stem_width": 16},
                frozen_bn=False, conv_dim=32, mask_dim=32, d_model=32, num_heads=4, num_decoder_layers=3,
                dim_feedforward=64, num_queries=10, num_points=256)
    model = Mask2Former(num_classes, in_chans=in_chans, **(args | kw))
    model.default_input_shape = (in_chans, 64, 64)
    return model
