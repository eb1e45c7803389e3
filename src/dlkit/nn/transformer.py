"""Transformer layers: layer norm, position-wise FFN, encoder and decoder layers and stacks.

Notes: 002 §3.1.3 (encoder: MHSA, LN, FFN, residuals; post-norm and pre-norm), 002 §3.1.4 (decoder: masked
self-attention, cross-attention, FFN), 000 §5.3, 003 §9.3, 004 TRANSFORMERS (Encoder/Decoder: Add & Norm).

    post-norm:  h' = LN(h + MHSA(h)),        h'' = LN(h' + FFN(h'))
    pre-norm:   h' = h + MHSA(LN(h)),        h'' = h' + FFN(LN(h'))

The decoder layer inserts cross-attention (queries from the decoder, keys and values from the encoder output)
between its masked self-attention and its FFN. Inputs are batch-first [B, L, d_model]. Dropout sits where
`nn.TransformerEncoderLayer` puts it (attention weights, FFN hidden units, each residual branch), so with
copied weights the layers equal torch's (tested). 004's decoder takes Q, K from the encoder and V from the
decoder; that is an erratum: K, V come from the encoder and Q from the decoder (000 §5.3, 002 §3.1.4).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .activations import get_activation
from .attention import MultiHeadAttention


class LayerNorm(nn.Module):
    """Layer normalisation written from the formula. Notes: 002 §3.1.3.

    mu = mean_j a_j, v = mean_j (a_j - mu)^2 (biased), a^_j = (a_j - mu) / sqrt(v + eps), s_j = gamma_j a^_j + beta_j,
    over the last dimension; independent of the batch and the same in training and evaluation.
    """

    def __init__(self, d: int, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True):
        super().__init__()
        self.d, self.eps = d, eps
        self.weight = nn.Parameter(torch.ones(d)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(d)) if elementwise_affine and bias else None

    def forward(self, a: Tensor) -> Tensor:
        mu = a.mean(-1, keepdim=True)
        v = ((a - mu) ** 2).mean(-1, keepdim=True)
        a_hat = (a - mu) / torch.sqrt(v + self.eps)
        if self.weight is not None:
            a_hat = a_hat * self.weight
        if self.bias is not None:
            a_hat = a_hat + self.bias
        return a_hat

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}"


def layer_norm(d: int, eps: float = 1e-5, bias: bool = True, explicit: bool = False) -> nn.Module:
    """A layer norm over the last dim: ours from the formula (`explicit`) or the fused `nn.LayerNorm` (same names)."""
    return LayerNorm(d, eps, bias=bias) if explicit else nn.LayerNorm(d, eps, bias=bias)


_FAST_ACTIVATIONS = {"relu": lambda: nn.ReLU(), "gelu": lambda: nn.GELU(),
                     "gelu_tanh": lambda: nn.GELU(approximate="tanh")}


def ffn_activation(name: str) -> nn.Module:
    """ReLU / GELU as torch's fused modules (fast); any other name through `get_activation`."""
    return _FAST_ACTIVATIONS[name]() if name in _FAST_ACTIVATIONS else get_activation(name)


class FeedForward(nn.Module):
    """Position-wise FFN(x) = act(x W_1 + b_1) W_2 + b_2, applied to each token alone. Notes: 002 §3.1.3, 000 §5.3.

    Equal to two kernel-1 Conv1d layers (002 §3.1.3 remark). d_ff defaults to 4 d_model; dropout is applied to the
    hidden units.
    """

    def __init__(self, d_model: int, d_ff: int | None = None, activation: str = "relu", dropout: float = 0.0,
                 bias: bool = True):
        super().__init__()
        d_ff = d_ff or 4 * d_model
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.activation = ffn_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class TransformerEncoderLayer(nn.Module):
    """Encoder layer: MHSA then FFN, each with a residual and LN (post-norm or `norm_first`). Notes: 002 §3.1.3.

    GPT's block is this layer with `norm_first=True` called with `is_causal=True` (a decoder without
    cross-attention, 000 §5.3 remark); BERT's is post-norm with GELU; ViT's is pre-norm with GELU.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int | None = None, dropout: float = 0.1,
                 activation: str = "relu", norm_first: bool = False, layer_norm_eps: float = 1e-5, bias: bool = True,
                 attn_dropout: float | None = None, explicit_layer_norm: bool = False):
        super().__init__()
        self.norm_first = norm_first
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.self_attn = MultiHeadAttention(d_model, num_heads, attn_dropout, bias=bias)
        self.ffn = FeedForward(d_model, d_ff, activation, dropout, bias)
        self.norm1 = layer_norm(d_model, layer_norm_eps, bias, explicit_layer_norm)
        self.norm2 = layer_norm(d_model, layer_norm_eps, bias, explicit_layer_norm)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def _sa(self, x: Tensor, key_padding_mask, attn_mask, is_causal) -> Tensor:
        out, _ = self.self_attn(x, key_padding_mask=key_padding_mask, attn_mask=attn_mask, is_causal=is_causal)
        return self.dropout1(out)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        if self.norm_first:
            x = x + self._sa(self.norm1(x), key_padding_mask, attn_mask, is_causal)
            return x + self.dropout2(self.ffn(self.norm2(x)))
        x = self.norm1(x + self._sa(x, key_padding_mask, attn_mask, is_causal))
        return self.norm2(x + self.dropout2(self.ffn(x)))

    @torch.no_grad()
    def load_torch_layer(self, layer: nn.TransformerEncoderLayer) -> TransformerEncoderLayer:
        """Copy the weights of a `torch.nn.TransformerEncoderLayer` of the same shape."""
        self.self_attn.load_torch_mha(layer.self_attn)
        _copy_ffn_norms(self, layer, 2)
        return self


class TransformerDecoderLayer(nn.Module):
    """Decoder layer: masked MHSA, cross-attention to the encoder output, FFN; each with residual + LN.

    Notes: 002 §3.1.4, 000 §5.3. Cross-attention takes queries from the decoder stream and keys and values from
    `memory` (the encoder output). `tgt_is_causal` (default True) blocks attention to future target tokens.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int | None = None, dropout: float = 0.1,
                 activation: str = "relu", norm_first: bool = False, layer_norm_eps: float = 1e-5, bias: bool = True,
                 attn_dropout: float | None = None, explicit_layer_norm: bool = False):
        super().__init__()
        self.norm_first = norm_first
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.self_attn = MultiHeadAttention(d_model, num_heads, attn_dropout, bias=bias)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, attn_dropout, bias=bias)
        self.ffn = FeedForward(d_model, d_ff, activation, dropout, bias)
        self.norm1 = layer_norm(d_model, layer_norm_eps, bias, explicit_layer_norm)
        self.norm2 = layer_norm(d_model, layer_norm_eps, bias, explicit_layer_norm)
        self.norm3 = layer_norm(d_model, layer_norm_eps, bias, explicit_layer_norm)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, tgt_key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None, tgt_mask: Tensor | None = None,
                memory_mask: Tensor | None = None, tgt_is_causal: bool = True) -> Tensor:
        def sa(h):
            out, _ = self.self_attn(h, key_padding_mask=tgt_key_padding_mask, attn_mask=tgt_mask,
                                    is_causal=tgt_is_causal)
            return self.dropout1(out)

        def ca(h):
            out, _ = self.cross_attn(h, memory, memory, key_padding_mask=memory_key_padding_mask,
                                     attn_mask=memory_mask)
            return self.dropout2(out)

        if self.norm_first:
            x = x + sa(self.norm1(x))
            x = x + ca(self.norm2(x))
            return x + self.dropout3(self.ffn(self.norm3(x)))
        x = self.norm1(x + sa(x))
        x = self.norm2(x + ca(x))
        return self.norm3(x + self.dropout3(self.ffn(x)))

    @torch.no_grad()
    def load_torch_layer(self, layer: nn.TransformerDecoderLayer) -> TransformerDecoderLayer:
        """Copy the weights of a `torch.nn.TransformerDecoderLayer` of the same shape."""
        self.self_attn.load_torch_mha(layer.self_attn)
        self.cross_attn.load_torch_mha(layer.multihead_attn)
        _copy_ffn_norms(self, layer, 3)
        return self


def _copy_ffn_norms(ours: nn.Module, theirs: nn.Module, n_norms: int) -> None:
    ours.ffn.linear1.load_state_dict(theirs.linear1.state_dict())
    ours.ffn.linear2.load_state_dict(theirs.linear2.state_dict())
    for i in range(1, n_norms + 1):
        getattr(ours, f"norm{i}").load_state_dict(getattr(theirs, f"norm{i}").state_dict())


def _build_stack(stack: nn.Module, layer_cls, kind: str, num_layers: int, d_model: int, num_heads: int,
                 final_norm: bool | None, layer_kw: dict) -> None:
    """Give `stack` its `layers` (num_layers copies of layer_cls) and its final `norm` (None when off)."""
    if num_layers < 1:
        raise ConfigError(f"{kind} stack needs num_layers >= 1; got {num_layers}")
    stack.layers = nn.ModuleList(layer_cls(d_model, num_heads, **layer_kw) for _ in range(num_layers))
    final_norm = layer_kw.get("norm_first", False) if final_norm is None else final_norm
    stack.norm = layer_norm(d_model, layer_kw.get("layer_norm_eps", 1e-5), layer_kw.get("bias", True),
                            layer_kw.get("explicit_layer_norm", False)) if final_norm else None


class TransformerEncoder(nn.Module):
    """Encoder stack: L encoder layers, shape-preserving, plus a final LN when `final_norm`. Notes: 002 §3.1.3.

    `final_norm` defaults to `norm_first` (a pre-norm stack ends unnormalised, so GPT, ViT and pre-norm
    Transformers add one). Keyword arguments go to `TransformerEncoderLayer`.
    """

    def __init__(self, num_layers: int, d_model: int, num_heads: int, final_norm: bool | None = None, **layer_kw):
        super().__init__()
        _build_stack(self, TransformerEncoderLayer, "an encoder", num_layers, d_model, num_heads, final_norm, layer_kw)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        for layer in self.layers:
            x = layer(x, key_padding_mask, attn_mask, is_causal)
        return self.norm(x) if self.norm is not None else x


class TransformerDecoder(nn.Module):
    """Decoder stack: L decoder layers attending to the same encoder output, plus an optional final LN.

    Notes: 002 §3.1.4. `final_norm` defaults to `norm_first`; keyword arguments go to `TransformerDecoderLayer`.
    """

    def __init__(self, num_layers: int, d_model: int, num_heads: int, final_norm: bool | None = None, **layer_kw):
        super().__init__()
        _build_stack(self, TransformerDecoderLayer, "a decoder", num_layers, d_model, num_heads, final_norm, layer_kw)

    def forward(self, x: Tensor, memory: Tensor, tgt_key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None, tgt_mask: Tensor | None = None,
                memory_mask: Tensor | None = None, tgt_is_causal: bool = True) -> Tensor:
        for layer in self.layers:
            x = layer(x, memory, tgt_key_padding_mask, memory_key_padding_mask, tgt_mask, memory_mask, tgt_is_causal)
        return self.norm(x) if self.norm is not None else x
