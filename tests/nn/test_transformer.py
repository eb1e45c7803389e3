"""Transformer layers against torch.nn.Transformer{Encoder,Decoder}Layer, LayerNorm and the FFN's conv form."""

import pytest
import torch
from torch import nn

from dlkit.nn.attention import causal_mask, padding_mask
from dlkit.nn.transformer import (
    FeedForward,
    LayerNorm,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

D, H, FF = 16, 4, 32
f64 = torch.float64


def test_layer_norm_formula_equals_torch_and_hand_values():
    x = torch.randn(3, 5, 7, dtype=f64)
    ours, ref = LayerNorm(7, eps=1e-5).double(), nn.LayerNorm(7, eps=1e-5).double()
    with torch.no_grad():
        for p in (*ours.parameters(), *ref.parameters()):
            p.normal_()
        ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), ref(x))
    # 002 §3.1.3: [1, 2, 3] -> mean 2, biased variance 2/3 -> [-1.2247, 0, 1.2247]
    hand = LayerNorm(3, eps=0.0)(torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(hand, torch.tensor([-1.224745, 0.0, 1.224745]))
    ours.train()
    a = ours(x)
    ours.eval()
    torch.testing.assert_close(ours(x), a)  # same behaviour in training and evaluation


def test_ffn_equals_two_kernel_one_convolutions_and_is_token_wise():
    ffn = FeedForward(D, FF).double()
    conv1, conv2 = nn.Conv1d(D, FF, 1).double(), nn.Conv1d(FF, D, 1).double()
    with torch.no_grad():
        conv1.weight.copy_(ffn.linear1.weight[..., None])
        conv1.bias.copy_(ffn.linear1.bias)
        conv2.weight.copy_(ffn.linear2.weight[..., None])
        conv2.bias.copy_(ffn.linear2.bias)
    x = torch.randn(2, 6, D, dtype=f64)
    torch.testing.assert_close(ffn(x), conv2(torch.relu(conv1(x.transpose(1, 2)))).transpose(1, 2))
    perm = torch.randperm(6)
    torch.testing.assert_close(ffn(x[:, perm]), ffn(x)[:, perm])


def _grads(out, leaves):
    return torch.autograd.grad((out * torch.randn_like(out)).sum(), leaves)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("explicit_ln", [False, True])
def test_encoder_layer_equals_torch(norm_first, activation, explicit_ln):
    ref = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation=activation, batch_first=True,
                                     norm_first=norm_first).double()
    ours = TransformerEncoderLayer(D, H, FF, dropout=0.0, activation=activation, norm_first=norm_first,
                                   explicit_layer_norm=explicit_ln).double().load_torch_layer(ref)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    x = torch.randn(2, 6, D, dtype=f64, requires_grad=True)
    kpm = padding_mask(torch.tensor([6, 4]), 6)
    out_ref = ref(x, src_key_padding_mask=kpm)  # train mode with dropout 0: torch's reference (non-fused) path
    out = ours(x, key_padding_mask=kpm)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), x, retain_graph=True)[0],
                               torch.autograd.grad(out_ref.sum(), x, retain_graph=True)[0])
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (out_ref * w).sum().backward()
    a, r = ours.self_attn, ref.self_attn
    torch.testing.assert_close(torch.cat([a.q_proj.weight.grad, a.k_proj.weight.grad, a.v_proj.weight.grad]),
                               r.in_proj_weight.grad)
    torch.testing.assert_close(ours.ffn.linear1.weight.grad, ref.linear1.weight.grad)
    torch.testing.assert_close(ours.norm1.weight.grad, ref.norm1.weight.grad)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_equals_torch(norm_first):
    ref = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, activation="gelu", batch_first=True,
                                     norm_first=norm_first).double()
    ours = TransformerDecoderLayer(D, H, FF, dropout=0.0, activation="gelu",
                                   norm_first=norm_first).double().load_torch_layer(ref)
    tgt, mem = torch.randn(2, 5, D, dtype=f64, requires_grad=True), torch.randn(2, 7, D, dtype=f64, requires_grad=True)
    mem_kpm, tgt_kpm = padding_mask(torch.tensor([7, 5]), 7), padding_mask(torch.tensor([5, 4]), 5)
    out_ref = ref(tgt, mem, tgt_mask=causal_mask(5), tgt_key_padding_mask=tgt_kpm, memory_key_padding_mask=mem_kpm)
    out = ours(tgt, mem, tgt_key_padding_mask=tgt_kpm, memory_key_padding_mask=mem_kpm)  # causal by default
    torch.testing.assert_close(out, out_ref)
    torch.manual_seed(1)
    g_ref = _grads(out_ref, [tgt, mem])
    torch.manual_seed(1)
    g = _grads(out, [tgt, mem])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_and_decoder_stacks_equal_torch_stacks(norm_first):
    layer_kw = dict(dropout=0.0, batch_first=True, norm_first=norm_first)
    enc_ref = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, H, FF, **layer_kw), 3,
                                    norm=nn.LayerNorm(D) if norm_first else None, enable_nested_tensor=False).double()
    dec_ref = nn.TransformerDecoder(nn.TransformerDecoderLayer(D, H, FF, **layer_kw), 2,
                                    norm=nn.LayerNorm(D) if norm_first else None).double()
    enc = TransformerEncoder(3, D, H, d_ff=FF, dropout=0.0, norm_first=norm_first).double()
    dec = TransformerDecoder(2, D, H, d_ff=FF, dropout=0.0, norm_first=norm_first).double()
    for ours, ref in ((enc, enc_ref), (dec, dec_ref)):
        for a, b in zip(ours.layers, ref.layers):
            a.load_torch_layer(b)
        assert (ours.norm is None) == (ref.norm is None)
        if ours.norm is not None:
            ours.norm.load_state_dict(ref.norm.state_dict())
    src, tgt = torch.randn(2, 6, D, dtype=f64), torch.randn(2, 4, D, dtype=f64)
    mem = enc(src)
    assert mem.shape == src.shape  # the stack preserves token count and width
    torch.testing.assert_close(mem, enc_ref(src))
    torch.testing.assert_close(dec(tgt, mem), dec_ref(tgt, mem, tgt_mask=causal_mask(4), tgt_is_causal=True))


def test_decoder_is_causal_changing_a_future_target_leaves_earlier_outputs():
    dec = TransformerDecoder(2, D, H, d_ff=FF, dropout=0.0).double()
    tgt, mem = torch.randn(1, 6, D, dtype=f64), torch.randn(1, 3, D, dtype=f64)
    tgt2 = tgt.clone()
    tgt2[:, 4] += 1.0
    a, b = dec(tgt, mem), dec(tgt2, mem)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert (a[:, 4:] - b[:, 4:]).abs().amax() > 1e-3


def test_attention_is_the_only_place_tokens_interact():
    # 002 §3.1.3 remark: with the attention output zeroed, each output token depends on its own input only
    enc = TransformerEncoder(2, D, H, d_ff=FF, dropout=0.0).double()
    with torch.no_grad():
        for layer in enc.layers:
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()
    x = torch.randn(1, 5, D, dtype=f64)
    x2 = x.clone()
    x2[:, 1] += torch.randn(D, dtype=f64)
    changed = ((enc(x) - enc(x2)).abs().amax(-1) > 1e-9)[0].tolist()
    assert changed == [False, True, False, False, False]
