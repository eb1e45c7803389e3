"""DETR's transformer layers and 2-D sine positions (Notes: 002 §4.3.6): the layers against torch's own layers
driven the way DETR drives them (positions added to queries and keys), and the 2-D encoding against DETR's formula
written out with its frequency table and against the 1-D table of `nn.positional`."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlkit.errors import ConfigError
from dlkit.nn.detr_transformer import DETRDecoder, DETRDecoderLayer, DETREncoder, DETREncoderLayer
from dlkit.nn.positional import sine_positional_encoding_2d, sinusoidal_positional_encoding
from dlkit.nn.transformer import TransformerDecoderLayer, TransformerEncoderLayer

D, H, FF = 16, 4, 32


def torch_encoder_step(t: nn.TransformerEncoderLayer, x, pos, kpm=None):
    """DETR's post-norm encoder layer from torch's modules: attention with q = k = x + pos, v = x."""
    x = t.norm1(x + t.self_attn(x + pos, x + pos, x, key_padding_mask=kpm)[0])
    return t.norm2(x + t.linear2(F.relu(t.linear1(x))))


def torch_decoder_step(t: nn.TransformerDecoderLayer, x, memory, pos, qpos, kpm=None):
    x = t.norm1(x + t.self_attn(x + qpos, x + qpos, x)[0])
    out, w = t.multihead_attn(x + qpos, memory + pos, memory, key_padding_mask=kpm)
    x = t.norm2(x + out)
    return t.norm3(x + t.linear2(F.relu(t.linear1(x)))), w


def test_encoder_layer_adds_positions_to_queries_and_keys_as_detr():
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True).eval()
    ours = DETREncoderLayer(D, H, FF, dropout=0.0).load_torch_layer(ref).eval()
    x, pos = torch.randn(2, 7, D), torch.randn(2, 7, D)
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[1, 5:] = True
    torch.testing.assert_close(ours(x, pos, kpm), torch_encoder_step(ref, x, pos, kpm))
    # without positions it is the shared layer (which equals torch's layer, tests/nn/test_transformer.py)
    shared = TransformerEncoderLayer(D, H, FF, dropout=0.0).load_torch_layer(ref).eval()
    torch.testing.assert_close(ours(x), shared(x))
    assert not torch.allclose(ours(x, pos), ours(x))


def test_decoder_layer_adds_query_and_memory_positions_and_decodes_in_parallel():
    torch.manual_seed(1)
    ref = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, batch_first=True).eval()
    ours = DETRDecoderLayer(D, H, FF, dropout=0.0).load_torch_layer(ref).eval()
    x, qpos = torch.randn(2, 5, D), torch.randn(2, 5, D)
    memory, pos = torch.randn(2, 9, D), torch.randn(2, 9, D)
    kpm = torch.zeros(2, 9, dtype=torch.bool)
    kpm[0, 6:] = True
    out, w = ours(x, memory, pos, qpos, kpm, need_weights=True)
    ref_out, ref_w = torch_decoder_step(ref, x, memory, pos, qpos, kpm)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)  # averaged over the heads, as torch's default
    assert (w[0, :, 6:] == 0).all()
    shared = TransformerDecoderLayer(D, H, FF, dropout=0.0).load_torch_layer(ref).eval()
    torch.testing.assert_close(ours(x, memory)[0], shared(x, memory, tgt_is_causal=False))
    # no causal mask: the first query's output depends on the last query
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(ours(x2, memory, pos, qpos)[0][:, 0], out[:, 0])


def test_pre_norm_variant_adds_positions_after_the_norm():
    torch.manual_seed(2)
    ref = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=True).eval()
    layer = DETREncoderLayer(D, H, FF, dropout=0.0, norm_first=True).load_torch_layer(ref).eval()
    x, pos = torch.randn(1, 6, D), torch.randn(1, 6, D)
    h = ref.norm1(x)
    mid = x + ref.self_attn(h + pos, h + pos, h)[0]
    torch.testing.assert_close(layer(x, pos), mid + ref.linear2(F.relu(ref.linear1(ref.norm2(mid)))))


def test_decoder_stack_returns_every_layer_through_the_final_norm():
    torch.manual_seed(3)
    dec = DETRDecoder(3, D, H, d_ff=FF, dropout=0.0).eval()
    x, memory = torch.zeros(2, 4, D), torch.randn(2, 6, D)
    pos, qpos = torch.randn(2, 6, D), torch.randn(2, 4, D)
    outs, w = dec(x, memory, pos, qpos, need_weights=True)
    assert outs.shape == (3, 2, 4, D) and w.shape == (2, 4, 6)
    h = x
    for i, layer in enumerate(dec.layers):
        h, wi = layer(h, memory, pos, qpos, need_weights=True)
        torch.testing.assert_close(outs[i], dec.norm(h))
    torch.testing.assert_close(w, wi)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4))
    enc = DETREncoder(2, D, H, d_ff=FF, dropout=0.0).eval()
    assert enc(memory, pos).shape == memory.shape and enc.norm is None
    with pytest.raises(ConfigError, match="num_layers >= 1"):
        DETRDecoder(0, D, H)


def detr_formula(mask: torch.Tensor, d: int, normalize: bool) -> torch.Tensor:
    """DETR's sine encoding as its paper's code states it: a frequency table T^(2 floor(k/2) / (d/2)) for k < d/2,
    sin on the even and cos on the odd columns, y channels then x channels."""
    not_mask = ~mask
    y, x = not_mask.cumsum(1, dtype=torch.float32), not_mask.cumsum(2, dtype=torch.float32)
    if normalize:
        y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
        x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    npf = d // 2
    k = torch.arange(npf, dtype=torch.float32)
    dim_t = 10000 ** (2 * torch.div(k, 2, rounding_mode="floor") / npf)
    py, px = y[..., None] / dim_t, x[..., None] / dim_t
    out = torch.empty(*mask.shape, d)
    out[..., 0:npf:2], out[..., 1:npf:2] = py[..., 0::2].sin(), py[..., 1::2].cos()
    out[..., npf::2], out[..., npf + 1::2] = px[..., 0::2].sin(), px[..., 1::2].cos()
    return out.permute(0, 3, 1, 2)


@pytest.mark.parametrize("normalize", [True, False])
def test_sine_2d_encoding_equals_detrs_formula(normalize):
    mask = torch.zeros(2, 5, 7, dtype=torch.bool)
    mask[1, 3:, :] = True
    mask[1, :, 4:] = True  # the second image covers a 3 x 4 corner
    pe = sine_positional_encoding_2d(mask, 32, normalize=normalize)
    assert pe.shape == (2, 32, 5, 7)
    torch.testing.assert_close(pe, detr_formula(mask, 32, normalize), rtol=1e-5, atol=1e-5)
    if not normalize:  # each half is the 1-D table at the (1-based) row or column
        table = sinusoidal_positional_encoding(8, 16)
        torch.testing.assert_close(pe[0, :16, :, 2].T, table[1:6], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pe[0, 16:, 3, :].T, table[1:8], rtol=1e-5, atol=1e-5)
    else:  # normalised, the last valid row and column sit at 2 pi whatever the image size
        torch.testing.assert_close(pe[1, 16 + 1, 0, 3], torch.tensor(1.0), atol=1e-4, rtol=0)  # cos(2 pi)
        torch.testing.assert_close(pe[0, 16 + 1, 0, 6], torch.tensor(1.0), atol=1e-4, rtol=0)


def test_sine_2d_encoding_refuses_bad_input():
    with pytest.raises(ConfigError, match="multiple of 4"):
        sine_positional_encoding_2d(torch.zeros(1, 2, 2, dtype=torch.bool), 10)
    with pytest.raises(ConfigError, match="boolean padding mask"):
        sine_positional_encoding_2d(torch.zeros(1, 2, 2), 8)
