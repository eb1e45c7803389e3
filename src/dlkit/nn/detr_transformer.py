"""DETR's transformer: encoder and decoder layers that add positional encodings to the queries and keys of every
attention, at every layer (Notes: 002 §4.3.6; the layers of 002 §3.1.3-3.1.4).

The shared layers (`nn.transformer`) take positions once, added to the input tokens. DETR instead keeps the content
stream free of positions and adds them inside every attention, to the queries and keys but not to the values:

    encoder (post-norm):  h' = LN(h + MHSA(q = h + pos, k = h + pos, v = h)),   h'' = LN(h' + FFN(h'))
    decoder (post-norm):  t' = LN(t + MHSA(q = t + qpos, k = t + qpos, v = t))
                          t'' = LN(t' + MHA(q = t' + qpos, k = m + pos, v = m)),   t''' = LN(t'' + FFN(t''))

with `pos` the 2-D sine encoding of the feature-map cells, `m` the encoder output (memory) and `qpos` the learned
object queries. The decoder decodes in parallel (no causal mask: every object query sees every other). The layers
subclass the shared ones (same parameters, names, dropout placement and `load_torch_layer`) and only change where
the positions enter; with zero positions they compute exactly the shared layers (tested). `norm_first` gives the
pre-norm variant (positions added after the norm). `DETRDecoder` returns the output of every layer through the
final layer norm (the inputs of DETR's auxiliary heads).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .transformer import TransformerDecoderLayer, TransformerEncoderLayer, layer_norm


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


class DETREncoderLayer(TransformerEncoderLayer):
    """Encoder layer with `pos` added to the queries and keys of its self-attention. Notes: 002 §4.3.6."""

    def forward(self, x: Tensor, pos: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        def sa(h: Tensor) -> Tensor:
            qk = _with_pos(h, pos)
            return self.dropout1(self.self_attn(qk, qk, h, key_padding_mask=key_padding_mask)[0])

        if self.norm_first:
            x = x + sa(self.norm1(x))
            return x + self.dropout2(self.ffn(self.norm2(x)))
        x = self.norm1(x + sa(x))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class DETRDecoderLayer(TransformerDecoderLayer):
    """Decoder layer with `query_pos` added to the queries (and self-attention keys) and `pos` to the memory's keys;
    no causal mask. Returns (output, cross-attention weights [B, L, S] averaged over heads, or None unless
    `need_weights`). Notes: 002 §4.3.6."""

    def forward(self, x: Tensor, memory: Tensor, pos: Tensor | None = None, query_pos: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None, need_weights: bool = False
                ) -> tuple[Tensor, Tensor | None]:
        weights = None

        def sa(h: Tensor) -> Tensor:
            qk = _with_pos(h, query_pos)
            return self.dropout1(self.self_attn(qk, qk, h)[0])

        def ca(h: Tensor) -> Tensor:
            nonlocal weights
            out, weights = self.cross_attn(_with_pos(h, query_pos), _with_pos(memory, pos), memory,
                                           key_padding_mask=memory_key_padding_mask, need_weights=need_weights)
            return self.dropout2(out)

        if self.norm_first:
            x = x + sa(self.norm1(x))
            x = x + ca(self.norm2(x))
            return x + self.dropout3(self.ffn(self.norm3(x))), weights
        x = self.norm1(x + sa(x))
        x = self.norm2(x + ca(x))
        return self.norm3(x + self.dropout3(self.ffn(x))), weights


class DETREncoder(nn.Module):
    """`num_layers` DETR encoder layers (keyword arguments go to `DETREncoderLayer`); with `final_norm` (pre-norm
    stacks) a last layer norm. Notes: 002 §4.3.6."""

    def __init__(self, num_layers: int, d_model: int, num_heads: int, final_norm: bool = False, **layer_kw):
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"the DETR encoder needs num_layers >= 1; got {num_layers}")
        self.layers = nn.ModuleList(DETREncoderLayer(d_model, num_heads, **layer_kw) for _ in range(num_layers))
        self.norm = layer_norm(d_model, layer_kw.get("layer_norm_eps", 1e-5)) if final_norm else None

    def forward(self, x: Tensor, pos: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, pos, key_padding_mask)
        return self.norm(x) if self.norm is not None else x


class DETRDecoder(nn.Module):
    """`num_layers` DETR decoder layers and the final layer norm, applied to every layer's output: forward returns
    [num_layers, B, L, d] (the last entry is the decoder's output; the others feed DETR's auxiliary losses) and the
    last layer's cross-attention weights [B, L, S] when `need_weights`. Notes: 002 §4.3.6."""

    def __init__(self, num_layers: int, d_model: int, num_heads: int, **layer_kw):
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"the DETR decoder needs num_layers >= 1; got {num_layers}")
        self.layers = nn.ModuleList(DETRDecoderLayer(d_model, num_heads, **layer_kw) for _ in range(num_layers))
        self.norm = layer_norm(d_model, layer_kw.get("layer_norm_eps", 1e-5))

    def forward(self, x: Tensor, memory: Tensor, pos: Tensor | None = None, query_pos: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None, need_weights: bool = False
                ) -> tuple[Tensor, Tensor | None]:
        outputs, weights = [], None
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x, w = layer(x, memory, pos, query_pos, memory_key_padding_mask, need_weights and last)
            outputs.append(self.norm(x))
            weights = w if last else weights
        return torch.stack(outputs), weights
