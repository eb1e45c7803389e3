"""Masked attention, Mask2Former's transformer decoder layer (Cheng et al. 2022; Notes: 002 §5.3.3).

The cross-attention of query q only looks at the pixels of its own mask predicted by the previous layer:

    X_l = softmax(M_{l-1} + Q_l K_l^T) V_l + X_{l-1},   M_{l-1}(q, (x, y)) = 0 if sigmoid(m_{l-1, q}(x, y)) >= 0.5,
                                                                         -inf otherwise

(`masked_attention_mask` builds the boolean form, True = blocked). A query whose mask is empty would attend to
nothing; it attends to every pixel instead (Mask2Former's fallback). The layer runs masked cross-attention, then
self-attention among the queries, then the FFN, each with a residual and a post-norm; as in DETR the positions are
added to the queries and keys of every attention, not to the values (`nn.detr_transformer`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .detr_transformer import _with_pos
from .transformer import TransformerDecoderLayer


@torch.no_grad()
def masked_attention_mask(mask_logits: Tensor, size: tuple[int, int] | None = None, threshold: float = 0.5
                          ) -> Tensor:
    """The blocked keys [B, N, h w] (True = not attended) of mask logits [B, N, H, W], first resized bilinearly to
    `size` (h, w) (the attended feature map's): a key is blocked where sigmoid < `threshold`; a query with every key
    blocked gets none blocked (the empty-mask fallback). Notes: 002 §5.3.3."""
    if mask_logits.dim() != 4:
        raise ConfigError(f"masked attention takes mask logits [B, N, H, W]; got {tuple(mask_logits.shape)}")
    if size is not None and tuple(size) != tuple(mask_logits.shape[-2:]):
        mask_logits = F.interpolate(mask_logits, size=tuple(size), mode="bilinear", align_corners=False)
    blocked = mask_logits.flatten(2).sigmoid() < threshold
    return blocked & ~blocked.all(-1, keepdim=True)


class MaskedAttentionDecoderLayer(TransformerDecoderLayer):
    """Mask2Former's decoder layer: masked cross-attention to `memory` (keys `memory + pos`), self-attention
    (queries and keys `x + query_pos`), FFN; residual and layer norm after each (norm1, norm2, norm3 in this order).
    `attn_mask` [B, N, S] bool, True = blocked (`masked_attention_mask`). Notes: 002 §5.3.3."""

    def forward(self, x: Tensor, memory: Tensor, pos: Tensor | None = None, query_pos: Tensor | None = None,
                attn_mask: Tensor | None = None) -> Tensor:
        out, _ = self.cross_attn(_with_pos(x, query_pos), _with_pos(memory, pos), memory, attn_mask=attn_mask)
        x = self.norm1(x + self.dropout1(out))
        qk = _with_pos(x, query_pos)
        out, _ = self.self_attn(qk, qk, x)
        x = self.norm2(x + self.dropout2(out))
        return self.norm3(x + self.dropout3(self.ffn(x)))
