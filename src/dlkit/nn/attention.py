"""Attention: scaled dot-product, multi-head, and the key-value scores of the older seq2seq models.

Notes: 002 §3.1.1 (dot-product, scaled dot-product and self-attention), 002 §3.1.3 (multi-head),
002 §3.1.4 (masked self-attention, cross-attention), 000 §5.3 (key-value attention with a dot-product
or single-layer score, multi-head attention), 003 §9.2 (Bahdanau and Luong scores), 003 §9.3, 004 TRANSFORMERS.

    attention(Q, K, V) = softmax_rows(Q K^T / sqrt(d_k) + M) V

Masks. A boolean mask is True where attention is BLOCKED (as `nn.MultiheadAttention`'s `attn_mask` and
`key_padding_mask`: True = padding); a float mask is added to the scores (0 allowed, -inf blocked). The causal
mask blocks j > i (the future). A row whose keys are all blocked (a fully padded sequence) attends to nothing:
its weights, output and gradients are 0 on every path, as `F.scaled_dot_product_attention` gives (the softmax of
the formula is undefined there; `nn.MultiheadAttention` gives NaN, which would poison a whole batch's gradient).

Errata: 002 §3.1.1 writes q = x W_X and V = Y W_K; they are W_Q and V = Y W_V. 004 scales by the "square of
the dimension"; it is 1/sqrt(d_k). 003 §9.3 prints softmax(q k^T / sqrt(d_k) * v); V is outside the softmax.
004 gives the decoder's cross-attention Q, K from the encoder and V from the decoder; it is K, V from the
encoder and Q from the decoder (000 §5.3). 000 calls the dot-product score a "cosine similarity": it is not
normalised; its single-layer score tanh(W_k k + W_q q) is a vector and needs v^T to give a scalar.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

# ----------------------------------------------------------------------------- masks


def causal_mask(q_len: int, k_len: int | None = None, device=None) -> Tensor:
    """Boolean [q_len, k_len] mask, True where key j lies in the future of query i (j > i). Notes: 002 §3.1.4.

    Aligned at the top left, as `F.scaled_dot_product_attention(is_causal=True)`.
    """
    k_len = q_len if k_len is None else k_len
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).triu(1)


def padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Boolean [B, max_len] key padding mask, True at positions >= length (the <PAD> tokens). Notes: 003 §9."""
    lengths = torch.as_tensor(lengths)
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device) >= lengths[:, None]


def _as_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def merge_masks(q: Tensor, k: Tensor, attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor | None:
    """One additive mask (0 allowed, -inf blocked) broadcastable to the scores [..., L, S], or None.

    `attn_mask`: [L, S], or with leading dims broadcastable to q's; bool True = blocked, or float added.
    `key_padding_mask`: [B, S] with B = q.shape[0], bool True = padding (blocked), or float added.
    """
    L, S = q.shape[-2], k.shape[-2]
    parts = []
    if is_causal:
        parts.append(_as_additive(causal_mask(L, S, q.device), q.dtype))
    if attn_mask is not None:
        if attn_mask.shape[-2:] != (L, S):
            raise ConfigError(f"attn_mask must end in [L, S] = [{L}, {S}] (queries, keys); "
                              f"got {tuple(attn_mask.shape)}")
        parts.append(_as_additive(attn_mask, q.dtype))
    if key_padding_mask is not None:
        if key_padding_mask.shape != (q.shape[0], S):
            raise ConfigError(f"key_padding_mask must be [batch, keys] = [{q.shape[0]}, {S}] (True = padding); "
                              f"got {tuple(key_padding_mask.shape)}")
        kpm = _as_additive(key_padding_mask, q.dtype)
        parts.append(kpm.view(q.shape[0], *([1] * (q.dim() - 2)), S))
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


# ----------------------------------------------------------------------------- scaled dot-product attention


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ConfigError(f"attention expects q [..., L, d_k], k [..., S, d_k], v [..., S, d_v] with the same number "
                          f"of dims; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ConfigError(f"attention needs q and k of equal width d_k and as many values as keys; got q "
                          f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")


def attention_weights(q: Tensor, k: Tensor, attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None,
                      is_causal: bool = False, scale: float | None = None) -> Tensor:
    """Attention weights softmax_rows(Q K^T / sqrt(d_k) + M), shape [..., L, S]. Notes: 002 §3.1.1, 000 §5.3.

    Each row sums to 1; blocked positions get weight exactly 0 (002 §3.1.4: the -inf realisation), and a row
    whose keys are all blocked is all 0.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    mask = merge_masks(q, k, attn_mask, key_padding_mask, is_causal)
    if mask is None:
        return torch.softmax(scores, dim=-1)
    nothing = torch.isneginf(mask).all(-1, keepdim=True)  # no key to attend to: unmask, then zero (no NaN)
    return torch.softmax(scores + mask.masked_fill(nothing, 0.0), dim=-1).masked_fill(nothing, 0.0)


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None,
                                 key_padding_mask: Tensor | None = None, is_causal: bool = False,
                                 dropout_p: float = 0.0, scale: float | None = None, explicit: bool = False) -> Tensor:
    """Scaled dot-product attention softmax(Q K^T / sqrt(d_k) + M) V, shape [..., L, d_v]. Notes: 002 §3.1.1.

    q [..., L, d_k], k [..., S, d_k], v [..., S, d_v]. `explicit=True` computes the formula step by step
    (dropout on the weights); the default calls the fused `F.scaled_dot_product_attention`, which computes the
    same thing (tested) and uses flash/memory-efficient kernels where it can (e.g. a causal mask alone).
    """
    _check_qkv(q, k, v)
    if explicit:
        w = attention_weights(q, k, attn_mask, key_padding_mask, is_causal, scale)
        if dropout_p > 0:
            w = F.dropout(w, dropout_p)
        return w @ v
    if attn_mask is None and key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal, scale=scale)
    mask = merge_masks(q, k, attn_mask, key_padding_mask, is_causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


# ----------------------------------------------------------------------------- multi-head attention


class MultiHeadAttention(nn.Module):
    """Multi-head attention concat(head_1..head_h) W_O, head_i = attention(Q W_i^Q, K W_i^K, V W_i^V).

    Notes: 002 §3.1.3, 000 §5.3. The per-head projections W_i^Q, W_i^K in R^{d_model x d_k} and W_i^V in
    R^{d_model x d_v} are concatenated column-wise into one linear layer each (`q_proj`, `k_proj`, `v_proj`);
    `out_proj` is W_O in R^{h d_v x d_model}. Default d_k = d_v = d_model / h, giving 4 d^2 + 4 d parameters.
    Inputs are batch-first [B, L, d_model]; `key`/`value` default to `query` (self-attention); cross-attention
    passes the encoder output as key and value (002 §3.1.4). `kdim`/`vdim` are the key and value input widths.
    Self-attention computes Q, K, V in one product with the three weights stacked (`_fused_qkv`; tested equal).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None, head_dim: int | None = None,
                 v_head_dim: int | None = None, explicit: bool = False):
        super().__init__()
        if head_dim is None and embed_dim % num_heads:
            raise ConfigError(f"embed_dim must be divisible by num_heads (d_k = d_model / h); got {embed_dim} and "
                              f"{num_heads}. Pick another num_heads or pass head_dim.")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = head_dim or embed_dim // num_heads
        self.v_head_dim = v_head_dim or self.head_dim
        self.dropout, self.explicit = dropout, explicit
        self.q_proj = nn.Linear(embed_dim, num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(kdim or embed_dim, num_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(vdim or embed_dim, num_heads * self.v_head_dim, bias=bias)
        self.out_proj = nn.Linear(num_heads * self.v_head_dim, embed_dim, bias=bias)

    def _heads(self, x: Tensor, d: int) -> Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, d).transpose(1, 2)  # [B, h, L, d]

    def _fused_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention's Q, K, V from one matrix product x [W_Q; W_K; W_V]^T (the same numbers as three).

        One [B L, d] x [d, 3 h d_k] product (and one in the backward pass, with no summing of three input
        gradients) is faster than three narrow ones; concatenating the weights copies only 3 d^2 numbers.
        """
        projs = (self.q_proj, self.k_proj, self.v_proj)
        weight = torch.cat([p.weight for p in projs])
        bias = torch.cat([p.bias for p in projs]) if self.q_proj.bias is not None else None
        sizes = (self.q_proj.out_features, self.k_proj.out_features, self.v_proj.out_features)
        q, k, v = F.linear(x, weight, bias).split(sizes, dim=-1)
        return self._heads(q, self.head_dim), self._heads(k, self.head_dim), self._heads(v, self.v_head_dim)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None, *,
                key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None, is_causal: bool = False,
                need_weights: bool = False, average_attn_weights: bool = True) -> tuple[Tensor, Tensor | None]:
        """Returns (output [B, L, d_model], weights or None); weights [B, L, S] averaged, or [B, h, L, S] per head.

        `attn_mask` [L, S], [B, L, S] or [B, h, L, S] (bool True = blocked, or float added to the scores).
        """
        self_attention = (key is None or key is query) and (value is None or value is query)
        key = query if key is None else key
        value = key if value is None else value
        if query.dim() != 3 or key.dim() != 3 or value.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ConfigError(f"MultiHeadAttention expects batch-first [B, L, {self.embed_dim}] query and [B, S, .] "
                              f"key/value; got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
        if attn_mask is not None and attn_mask.dim() == 3:
            attn_mask = attn_mask.unsqueeze(1)
        if self_attention and self.k_proj.in_features == self.v_proj.in_features == self.embed_dim:
            q, k, v = self._fused_qkv(query)
        else:
            q = self._heads(self.q_proj(query), self.head_dim)
            k = self._heads(self.k_proj(key), self.head_dim)
            v = self._heads(self.v_proj(value), self.v_head_dim)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            weights = attention_weights(q, k, attn_mask, key_padding_mask, is_causal)
            out = (F.dropout(weights, p) if p > 0 else weights) @ v
        else:
            out = scaled_dot_product_attention(q, k, v, attn_mask, key_padding_mask, is_causal, p,
                                               explicit=self.explicit)
        B, _, L, _ = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(B, L, self.num_heads * self.v_head_dim))
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        return out, weights

    @torch.no_grad()
    def load_torch_mha(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a `torch.nn.MultiheadAttention` (its in_proj = [W_Q; W_K; W_V] stacked row-wise)."""
        if mha.embed_dim != self.embed_dim or mha.num_heads != self.num_heads:
            raise ConfigError(f"nn.MultiheadAttention({mha.embed_dim}, {mha.num_heads}) does not match "
                              f"MultiHeadAttention({self.embed_dim}, {self.num_heads})")
        if mha.in_proj_weight is not None:
            wq, wk, wv = mha.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        for lin, w in ((self.q_proj, wq), (self.k_proj, wk), (self.v_proj, wv)):
            lin.weight.copy_(w)
        if mha.in_proj_bias is not None:
            for lin, b in zip((self.q_proj, self.k_proj, self.v_proj), mha.in_proj_bias.chunk(3)):
                lin.bias.copy_(b)
        self.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.out_proj.bias is not None:
            self.out_proj.bias.copy_(mha.out_proj.bias)
        return self

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, d_k={self.head_dim}, d_v={self.v_head_dim}, dropout={self.dropout}"


# ----------------------------------------------------------------------------- key-value attention scores


class DotScore(nn.Module):
    """Dot-product score alpha(q, k) = <q, k> (Luong "dot"). Notes: 000 §5.3, 003 §9.2, 002 §3.1.1."""

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(-2, -1)


class GeneralScore(nn.Module):
    """Luong's multiplicative ("general") score alpha(h_t, h_s) = h_t^T W h_s. Notes: 003 §9.2."""

    def __init__(self, query_dim: int, key_dim: int):
        super().__init__()
        self.W = nn.Linear(key_dim, query_dim, bias=False)  # W h_s

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ self.W(k).transpose(-2, -1)


class AdditiveScore(nn.Module):
    """Additive (Bahdanau) score alpha(q, k) = v^T tanh(W_q q + W_k k). Notes: 003 §9.2, 000 §5.3.

    000 §5.3's "single-layer network" tanh(W_k k + W_q q) is a vector; the v^T that makes it a score is added.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int):
        super().__init__()
        self.W_q = nn.Linear(query_dim, hidden_dim, bias=False)
        self.W_k = nn.Linear(key_dim, hidden_dim, bias=False)
        self.v = nn.Linear(hidden_dim, 1, bias=False)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        h = torch.tanh(self.W_q(q).unsqueeze(-2) + self.W_k(k).unsqueeze(-3))  # [..., L, S, A]
        return self.v(h).squeeze(-1)


class KeyValueAttention(nn.Module):
    """Key-value attention: a_i = alpha(q, k_i), b = softmax(a), o = sum_i b_i v_i. Notes: 000 §5.3, 003 §9.2.

    `score`: "dot" (needs query_dim == key_dim), "general" (Luong) or "additive" (Bahdanau, `hidden_dim` units).
    forward(query [B, Dq] or [B, L, Dq], keys [B, S, Dk], values [B, S, Dv] = keys by default, key_padding_mask
    [B, S] True = padding) returns (context [B, Dv] or [B, L, Dv], weights [B, S] or [B, L, S]). When values are
    the keys themselves this is 000's self-attention ("values are also keys").
    """

    def __init__(self, query_dim: int, key_dim: int | None = None, score: str = "dot", hidden_dim: int | None = None):
        super().__init__()
        key_dim = query_dim if key_dim is None else key_dim
        if score == "dot":
            if query_dim != key_dim:
                raise ConfigError(f"the dot score needs query_dim == key_dim; got {query_dim} and {key_dim}. "
                                  "Use score='general' or 'additive' for different widths.")
            self.score = DotScore()
        elif score == "general":
            self.score = GeneralScore(query_dim, key_dim)
        elif score == "additive":
            self.score = AdditiveScore(query_dim, key_dim, hidden_dim or query_dim)
        else:
            raise ConfigError(f"score must be 'dot', 'general' or 'additive'; got {score!r}")

    def forward(self, query: Tensor, keys: Tensor, values: Tensor | None = None,
                key_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        values = keys if values is None else values
        single = query.dim() == 2
        q = query.unsqueeze(1) if single else query
        if q.dim() != 3 or keys.dim() != 3 or values.shape[:2] != keys.shape[:2]:
            raise ConfigError(f"KeyValueAttention expects query [B, Dq] or [B, L, Dq], keys [B, S, Dk], values "
                              f"[B, S, Dv]; got {tuple(query.shape)}, {tuple(keys.shape)}, {tuple(values.shape)}")
        a = self.score(q, keys)
        if key_padding_mask is not None:
            a = a.masked_fill(key_padding_mask[:, None, :], float("-inf"))
        b = torch.softmax(a, dim=-1)
        o = b @ values
        return (o.squeeze(1), b.squeeze(1)) if single else (o, b)


class BahdanauAttention(KeyValueAttention):
    """Bahdanau (additive) attention, score v^T tanh(W_1 h_t + W_2 h_s). Notes: 003 §9.2."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int):
        super().__init__(query_dim, key_dim, "additive", hidden_dim)


class LuongAttention(KeyValueAttention):
    """Luong (multiplicative) attention, score h_t^T h_s ("dot") or h_t^T W h_s ("general"). Notes: 003 §9.2."""

    def __init__(self, query_dim: int, key_dim: int | None = None, score: str = "general"):
        if score not in ("dot", "general"):
            raise ConfigError(f"Luong attention scores are 'dot' or 'general'; got {score!r} (use BahdanauAttention "
                              "for the additive score)")
        super().__init__(query_dim, key_dim, score)
