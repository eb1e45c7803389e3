"""Positional encodings added to token embeddings (Notes: 002 §3.1.5, 000 §5.3, 003 §9.3, 004 Input Embedding).

Self-attention is permutation-equivariant (002 §3.1.5), so order must be injected: a vector of width d is
added to each token's embedding. Fixed (sinusoidal, Vaswani et al. 2017):

    pe[pos, 2i] = sin(pos / 10000^(2i/d)),   pe[pos, 2i+1] = cos(pos / 10000^(2i/d))

or learned (BERT, GPT-2, ViT): a trainable table of max_len x d. 003 §9.3 calls self-attention permutation
"invariant"; it is equivariant (outputs permute with the inputs). DETR (002 §4.3.6) encodes the 2-D position of
each feature-map cell with two such encodings of width d/2, of its row and of its column
(`sine_positional_encoding_2d`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import ConfigError


def sinusoidal_positional_encoding(length: int, d_model: int, base: float = 10000.0) -> Tensor:
    """The [length, d_model] table pe[pos, 2i] = sin(pos / base^(2i/d)), pe[pos, 2i+1] = cos(...). Notes: 002 §3.1.5.

    Even columns use sin, odd columns cos, both at the frequency of their pair 2i; an odd d_model drops the last cos.
    """
    return sinusoid(torch.arange(length, dtype=torch.float64), d_model, base).to(torch.get_default_dtype())


def sinusoid(positions: Tensor, d_model: int, base: float = 10000.0) -> Tensor:
    """[..., d_model] encodings of (real-valued) `positions` of any shape, in their dtype: [..., 2i] =
    sin(pos / base^(2i/d)), [..., 2i+1] = cos(pos / base^(2i/d)). Notes: 002 §3.1.5."""
    two_i = torch.arange(0, d_model, 2, dtype=positions.dtype, device=positions.device)
    angle = positions[..., None] / base ** (two_i / d_model)
    pe = positions.new_zeros(*positions.shape, d_model)
    pe[..., 0::2] = torch.sin(angle)
    pe[..., 1::2] = torch.cos(angle[..., : d_model // 2])
    return pe


def sine_positional_encoding_2d(mask: Tensor, d_model: int, base: float = 10000.0, normalize: bool = True,
                                scale: float = 2 * math.pi, eps: float = 1e-6) -> Tensor:
    """DETR's 2-D sine encoding [B, d_model, H, W] of a feature map whose padding `mask` [B, H, W] is True at padded
    cells. Notes: 002 §4.3.6 (step 3), 002 §3.1.5.

    A cell's row y and column x are its 1-based counts of valid cells down its column and along its row; with
    `normalize` they are divided by the column's (row's) valid count (+ eps) and multiplied by `scale`, so they run
    over (0, 2 pi] whatever the image size. The first d/2 channels are `sinusoid(y, d/2)`, the last d/2
    `sinusoid(x, d/2)`.
    """
    if mask.dim() != 3 or mask.dtype != torch.bool:
        raise ConfigError(f"sine_positional_encoding_2d takes a boolean padding mask [B, H, W] (True = padding); got "
                          f"{mask.dtype} of shape {tuple(mask.shape)}")
    if d_model % 4:
        raise ConfigError(f"the 2-D encoding splits d_model into row and column halves of sin/cos pairs, so d_model "
                          f"must be a multiple of 4; got {d_model}")
    valid = (~mask).to(torch.float32)
    y, x = valid.cumsum(1), valid.cumsum(2)
    if normalize:
        y = y / (y[:, -1:, :] + eps) * scale
        x = x / (x[:, :, -1:] + eps) * scale
    return torch.cat([sinusoid(y, d_model // 2, base), sinusoid(x, d_model // 2, base)], -1).permute(0, 3, 1, 2)


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

