"""Positional encodings: the sinusoidal formula by hand, the learned table, and what they do to self-attention."""

import math

import numpy as np
import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.nn.attention import MultiHeadAttention
from dlkit.nn.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_positional_encoding,
)


def test_sinusoidal_table_matches_formula_entry_by_entry():
    d, n = 10, 7
    expected = np.empty((n, d))
    for pos in range(n):
        for j in range(d):
            i = j // 2  # columns 2i (sin) and 2i+1 (cos) share the frequency 1 / 10000^(2i/d)
            angle = pos / 10000 ** (2 * i / d)
            expected[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    np.testing.assert_allclose(sinusoidal_positional_encoding(n, d).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_sinusoidal_hand_values():
    pe = sinusoidal_positional_encoding(50, 16)
    assert pe[0].tolist() == [0.0, 1.0] * 8  # pe[0] = [0, 1, 0, 1, ...]
    assert pe[5, 0].item() == pytest.approx(math.sin(5))  # 2i = 0: frequency 1
    assert pe[5, 1].item() == pytest.approx(math.cos(5))
    assert pe[3, 4].item() == pytest.approx(math.sin(3 / 10000 ** (4 / 16)))
    assert pe[3, 5].item() == pytest.approx(math.cos(3 / 10000 ** (4 / 16)))
    assert pe.abs().max() <= 1.0
    torch.testing.assert_close(pe.pow(2).sum(1), torch.full((50,), 8.0))  # ||pe[pos]||^2 = d/2
    assert sinusoidal_positional_encoding(4, 5).shape == (4, 5)  # odd width: last sin column has no cos partner


def test_sinusoidal_module_adds_the_table_with_offset_and_keeps_it_out_of_the_state_dict():
    m = SinusoidalPositionalEncoding(8, max_len=20)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(m(x), x + sinusoidal_positional_encoding(20, 8)[:5])
    torch.testing.assert_close(m(x, offset=3), x + sinusoidal_positional_encoding(20, 8)[3:8])
    assert "pe" not in m.state_dict() and not list(m.parameters())
    with pytest.raises(ConfigError, match="holds 20 positions"):
        m(torch.randn(1, 21, 8))


def test_learned_embedding_is_a_trained_table_and_only_used_rows_get_gradient():
    m = LearnedPositionalEmbedding(10, 4)
    assert m.weight.shape == (10, 4) and m.weight.requires_grad
    x = torch.randn(3, 6, 4)
    out = m(x)
    torch.testing.assert_close(out, x + m.weight[:6])
    out.sum().backward()
    torch.testing.assert_close(m.weight.grad[:6], torch.full((6, 4), 3.0))  # 3 sequences use each row once
    assert torch.all(m.weight.grad[6:] == 0)
    with pytest.raises(ConfigError, match=r"embeddings \[B, L, 4\]"):
        m(torch.randn(6, 4))


@pytest.mark.parametrize("pe", ["sinusoidal", "learned"])
def test_positional_encoding_breaks_permutation_equivariance(pe):
    attn = MultiHeadAttention(8, 2)
    enc = SinusoidalPositionalEncoding(8, 16) if pe == "sinusoidal" else LearnedPositionalEmbedding(16, 8, init_std=1.0)
    y = torch.randn(1, 6, 8)
    perm = torch.tensor([5, 3, 1, 0, 2, 4])
    without = attn(y[:, perm])[0] - attn(y)[0][:, perm]
    with_pe = attn(enc(y[:, perm]))[0] - attn(enc(y))[0][:, perm]
    assert without.abs().max() < 1e-5 and with_pe.abs().max() > 1e-2
