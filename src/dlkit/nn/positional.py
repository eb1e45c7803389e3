"""Positional encodings added to token embeddings (Notes: 002 §3.1.5, 000 §5.3, 003 §9.3, 004 Input Embedding).

Self-attention is permutation-equivariant (002 §3.1.5), so order must be injected: a vector of width d is
added to each token's embedding. Fixed (sinusoidal, Vaswani et al. 2017):

    pe[pos, 2i] = sin(pos / 10000^(2i/d)),   pe[pos, 2i+1] = cos(pos / 10000^(2i/d))

or learned (BERT, GPT-2, ViT): a trainable table of max_len x d. 003 §9.3 calls self-attention permutation
"invariant"; it is equivariant (outputs permute with the inputs).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError


def sinusoidal_positional_encoding(length: int, d_model: int, base: float = 10000.0) -> Tensor:
    """The [length, d_model] table pe[pos, 2i] = sin(pos / base^(2i/d)), pe[pos, 2i+1] = cos(...). Notes: 002 §3.1.5.

    Even columns use sin, odd columns cos, both at the frequency of their pair 2i; an odd d_model drops the last cos.
    """
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = pos / base ** (two_i / d_model)
    pe = torch.zeros(length, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe.to(torch.get_default_dtype())


def _check(x: Tensor, offset: int, max_len: int, d_model: int, name: str) -> None:
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ConfigError(f"{name} expects embeddings [B, L, {d_model}]; got {tuple(x.shape)}")
    if offset + x.shape[1] > max_len:
        raise ConfigError(f"{name} holds {max_len} positions; got positions {offset}..{offset + x.shape[1] - 1}. "
                          "Build it with a larger max_len or feed shorter sequences.")


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to embeddings [B, L, d]: x + pe[offset:offset+L]. Notes: 002 §3.1.5.

    The table is a non-persistent buffer (not in the state dict: it is a function of the shape).
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0, base: float = 10000.0):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model, base), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        _check(x, offset, self.max_len, self.d_model, "SinusoidalPositionalEncoding")
        return self.dropout(x + self.pe[offset : offset + x.shape[1]].to(x.dtype))


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned table to embeddings [B, L, d]: x + P[offset:offset+L], P in R^{max_len x d}. Notes: 002 §3.1.5.

    `init_std` is the normal initialisation's standard deviation (0.02 in GPT-2, BERT and ViT).
    """

    def __init__(self, max_len: int, d_model: int, init_std: float = 0.02):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        nn.init.normal_(self.weight, std=init_std)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        _check(x, offset, self.max_len, self.d_model, "LearnedPositionalEmbedding")
        return x + self.weight[offset : offset + x.shape[1]]

