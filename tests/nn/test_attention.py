"""Attention: the formula against F.scaled_dot_product_attention and nn.MultiheadAttention, masks, and scores."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlkit.errors import ConfigError
from dlkit.nn.attention import (
    AdditiveScore,
    BahdanauAttention,
    KeyValueAttention,
    LuongAttention,
    MultiHeadAttention,
    attention_weights,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)

B, H, L, S, D = 2, 3, 5, 6, 8


def _qkv(q_len=L, k_len=S, dtype=torch.float64):
    q = torch.randn(B, H, q_len, D, dtype=dtype, requires_grad=True)
    k = torch.randn(B, H, k_len, D, dtype=dtype, requires_grad=True)
    v = torch.randn(B, H, k_len, D + 1, dtype=dtype, requires_grad=True)
    return q, k, v


def _grads(out, *leaves):
    return torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(), leaves)


MASKS = ["none", "causal", "key_padding", "bool_attn_mask", "float_attn_mask", "causal+key_padding"]


def _masks(kind, q_len, k_len):
    """Our arguments (True = blocked) and the torch SDPA arguments (True = allowed) for the same mask."""
    kpm = torch.zeros(B, k_len, dtype=torch.bool)
    kpm[0, -2:] = True
    bool_mask = torch.rand(q_len, k_len) < 0.3
    bool_mask[:, 0] = False  # no fully blocked rows
    float_mask = torch.randn(q_len, k_len, dtype=torch.float64)
    allowed_kpm = (~kpm)[:, None, None, :]
    causal_allowed = torch.ones(q_len, k_len, dtype=torch.bool).tril()
    return {
        "none": ({}, {}),
        "causal": ({"is_causal": True}, {"is_causal": True}),
        "key_padding": ({"key_padding_mask": kpm}, {"attn_mask": allowed_kpm}),
        "bool_attn_mask": ({"attn_mask": bool_mask}, {"attn_mask": ~bool_mask}),
        "float_attn_mask": ({"attn_mask": float_mask}, {"attn_mask": float_mask}),
        "causal+key_padding": ({"is_causal": True, "key_padding_mask": kpm},
                               {"attn_mask": allowed_kpm & causal_allowed}),
    }[kind]


@pytest.mark.parametrize("kind", MASKS)
def test_explicit_and_fast_paths_equal_torch_sdpa_with_gradients(kind):
    q_len = k_len = L if "causal" in kind else None
    q, k, v = _qkv(q_len or L, k_len or S)
    ours_kw, torch_kw = _masks(kind, q.shape[-2], k.shape[-2])
    ref = F.scaled_dot_product_attention(q, k, v, **torch_kw)
    ref_grads = _grads(ref, q, k, v)
    for explicit in (True, False):
        out = scaled_dot_product_attention(q, k, v, explicit=explicit, **ours_kw)
        torch.testing.assert_close(out, ref)
        for g, rg in zip(_grads(out, q, k, v), ref_grads):
            torch.testing.assert_close(g, rg)


def test_a_fully_blocked_row_attends_to_nothing_on_every_path_as_torch_sdpa():
    q, k, v = _qkv()
    kpm = torch.zeros(B, S, dtype=torch.bool)
    kpm[1] = True  # the second sequence is all padding
    bool_mask = torch.rand(L, S) < 0.3
    bool_mask[2] = True  # query 2 may see no key
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=~bool_mask & ~kpm[:, None, None, :])
    ref_grads = _grads(ref, q, k, v)
    assert ref[1].abs().max() == 0 and ref[:, :, 2].abs().max() == 0
    for explicit in (True, False):
        out = scaled_dot_product_attention(q, k, v, attn_mask=bool_mask, key_padding_mask=kpm, explicit=explicit)
        torch.testing.assert_close(out, ref)
        for g, rg in zip(_grads(out, q, k, v), ref_grads):
            torch.testing.assert_close(g, rg)
    weights = attention_weights(q, k, bool_mask, kpm)
    assert weights[1].abs().max() == 0 and weights[:, :, 2].abs().max() == 0 and not weights.isnan().any()
    torch.testing.assert_close(weights[0, :, 0].sum(-1), torch.ones(H, dtype=weights.dtype))
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 3, 8)
    pad = torch.tensor([[False] * 3, [True] * 3])
    fast, (slow, w) = mha(x, key_padding_mask=pad)[0], mha(x, key_padding_mask=pad, need_weights=True)
    torch.testing.assert_close(fast, slow)  # the output bias alone where nothing is attended
    assert w[1].abs().max() == 0 and torch.allclose(slow[1], mha.out_proj.bias.expand(3, 8))


def test_attention_hand_example_scales_by_sqrt_dk():
    # Q = K = I (d_k = 2), V = [[1, 2], [3, 4]]: row 0 weights softmax([1/sqrt 2, 0]) (003 §9.3, misprint corrected)
    q = k = torch.eye(2, dtype=torch.float64)
    v = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    w0 = math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + 1)
    expected = torch.tensor([[w0 * 1 + (1 - w0) * 3, w0 * 2 + (1 - w0) * 4],
                             [(1 - w0) * 1 + w0 * 3, (1 - w0) * 2 + w0 * 4]], dtype=torch.float64)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, explicit=True), expected)
    # d_k = 64 scales the scores by exactly 1/8
    q, k = torch.randn(1, 64, dtype=torch.float64), torch.randn(3, 64, dtype=torch.float64)
    torch.testing.assert_close(attention_weights(q, k), torch.softmax(q @ k.T / 8, -1))


def test_dot_product_attention_single_query_averages_rows():
    # 002 §3.1.1: a_1 = softmax(x_1 Y^T) Y; equal rows give that row, a dominating score selects its row
    row = torch.randn(4)
    y = row.repeat(5, 1)
    torch.testing.assert_close(scaled_dot_product_attention(torch.randn(1, 4), y, y, scale=1.0), row[None])
    y = torch.randn(5, 4)
    x = 100 * y[2:3] / y[2].norm()
    y = y / y.norm(dim=1, keepdim=True)
    out = scaled_dot_product_attention(x, y, y, scale=1.0, explicit=True)
    torch.testing.assert_close(out, y[2:3], atol=1e-4, rtol=0)


def test_causal_weights_are_lower_triangular_rows_sum_to_one():
    q, k, _ = _qkv(L, L)
    w = attention_weights(q, k, is_causal=True)
    lower = torch.ones(L, L, dtype=torch.bool).tril()
    assert torch.all(w[..., ~lower] == 0) and torch.all(w[..., lower] > 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, L, dtype=w.dtype))


def test_mask_helpers_match_hand_values():
    assert causal_mask(3).tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    assert causal_mask(2, 3).tolist() == [[False, True, True], [False, False, True]]
    assert padding_mask(torch.tensor([1, 3])).tolist() == [[False, True, True], [False, False, False]]
    assert padding_mask(torch.tensor([2]), 4).tolist() == [[False, False, True, True]]


def test_padding_keys_get_zero_weight():
    q, k, _ = _qkv()
    kpm = padding_mask(torch.tensor([4, 6]), S)
    w = attention_weights(q, k, key_padding_mask=kpm)
    assert torch.all(w[0, ..., 4:] == 0) and torch.all(w[1] > 0)


def test_bad_shapes_are_explained():
    q, k, v = _qkv()
    with pytest.raises(ConfigError, match="key_padding_mask must be"):
        scaled_dot_product_attention(q, k, v, key_padding_mask=torch.zeros(B, S + 1, dtype=torch.bool))
    with pytest.raises(ConfigError, match="equal width"):
        scaled_dot_product_attention(q, k[..., :-1], v)
    with pytest.raises(ConfigError, match="divisible"):
        MultiHeadAttention(10, 3)


# ----------------------------------------------------------------------------- multi-head attention


def _pair(d=16, h=4, bias=True, kdim=None):
    ref = nn.MultiheadAttention(d, h, bias=bias, batch_first=True, kdim=kdim, vdim=kdim).double()
    ours = MultiHeadAttention(d, h, bias=bias, kdim=kdim, vdim=kdim).double().load_torch_mha(ref)
    return ours, ref


@pytest.mark.parametrize("case", ["self", "self_causal_padding", "cross", "cross_other_width", "no_bias"])
def test_multi_head_attention_equals_torch(case):
    d = 16
    kdim = 12 if case == "cross_other_width" else None
    ours, ref = _pair(d, 4, bias=case != "no_bias", kdim=kdim)
    x = torch.randn(B, L, d, dtype=torch.float64, requires_grad=True)
    mem = torch.randn(B, S, kdim or d, dtype=torch.float64, requires_grad=True)
    kw_ref, kw_ours = {}, {}
    if case == "self_causal_padding":
        kpm = padding_mask(torch.tensor([3, 5]), L)
        cm = causal_mask(L)
        kw_ref = {"key_padding_mask": kpm, "attn_mask": cm}
        kw_ours = {"key_padding_mask": kpm, "attn_mask": cm}
    if case.startswith("cross"):
        kpm = padding_mask(torch.tensor([6, 4]), S)
        kw_ref = kw_ours = {"key_padding_mask": kpm}
        args_ref, args_ours = (x, mem, mem), (x, mem, mem)
    else:
        args_ref, args_ours = (x, x, x), (x,)
    out_ref, w_ref = ref(*args_ref, need_weights=True, average_attn_weights=True, **kw_ref)
    out, w = ours(*args_ours, need_weights=True, **kw_ours)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(w, w_ref)
    _, w_heads_ref = ref(*args_ref, need_weights=True, average_attn_weights=False, **kw_ref)
    _, w_heads = ours(*args_ours, need_weights=True, average_attn_weights=False, **kw_ours)
    assert w_heads.shape == (B, 4, L, mem.shape[1] if case.startswith("cross") else L)
    torch.testing.assert_close(w_heads, w_heads_ref)
    fast, none = ours(*args_ours, **kw_ours)
    assert none is None
    torch.testing.assert_close(fast, out_ref)
    leaves = (x, mem) if case.startswith("cross") else (x,)
    for g, rg in zip(_grads(fast, *leaves), _grads(out_ref, *leaves)):
        torch.testing.assert_close(g, rg)


@pytest.mark.parametrize("bias", [True, False])
def test_fused_qkv_self_attention_equals_three_projections_with_gradients(bias):
    # self-attention (key and value are the query) takes one x [W_Q; W_K; W_V]^T product; passing an equal copy
    # as key/value takes the three-projection path: outputs and every parameter gradient must agree
    m = MultiHeadAttention(16, 4, bias=bias).double()
    x = torch.randn(B, L, 16, dtype=torch.float64)
    fused, _ = m(x, is_causal=True)
    g_fused = torch.autograd.grad(fused.square().sum(), list(m.parameters()))
    three, _ = m(x, x.clone(), x.clone(), is_causal=True)
    g_three = torch.autograd.grad(three.square().sum(), list(m.parameters()))
    torch.testing.assert_close(fused, three)
    for a, b in zip(g_fused, g_three):
        torch.testing.assert_close(a, b)


def test_is_causal_equals_a_causal_attn_mask():
    ours, _ = _pair()
    x = torch.randn(B, L, 16, dtype=torch.float64)
    torch.testing.assert_close(ours(x, is_causal=True)[0], ours(x, attn_mask=causal_mask(L))[0])


def test_multi_head_attention_parameter_count_is_4d2_plus_4d():
    # 000 §5.3 / 003 §9.3: d_model 512, h 8: 4 * 512^2 = 1,048,576 without biases, 1,050,624 with
    assert sum(p.numel() for p in MultiHeadAttention(512, 8, bias=False).parameters()) == 1_048_576
    assert sum(p.numel() for p in MultiHeadAttention(512, 8).parameters()) == 1_050_624


def test_one_head_is_scaled_dot_product_attention_then_w_o():
    m = MultiHeadAttention(6, 1, bias=False).double()
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    q, k, v = x @ m.q_proj.weight.T, x @ m.k_proj.weight.T, x @ m.v_proj.weight.T
    expected = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(6), -1) @ v @ m.out_proj.weight.T
    torch.testing.assert_close(m(x)[0], expected)


def test_self_attention_is_permutation_equivariant():
    # 002 §3.1.5 remark: SA(P Y) = P SA(Y) without positional information
    m = MultiHeadAttention(16, 4).double()
    y = torch.randn(1, 7, 16, dtype=torch.float64)
    perm = torch.randperm(7)
    torch.testing.assert_close(m(y[:, perm])[0], m(y)[0][:, perm])


def test_cross_attention_rows_depend_only_on_their_own_query():
    m = MultiHeadAttention(16, 4).double()
    x, mem = torch.randn(1, L, 16, dtype=torch.float64), torch.randn(1, S, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 2] += 1.0
    a, b = m(x, mem)[0], m(x2, mem)[0]
    changed = (a - b).abs().amax(-1)[0] > 1e-9
    assert changed.tolist() == [False, False, True, False, False]


# ----------------------------------------------------------------------------- key-value scores (000 §5.3, 003 §9.2)


def test_key_value_attention_weights_sum_to_one_and_select_dominant_key():
    att = KeyValueAttention(4, score="dot")
    keys = torch.eye(4)[None] * torch.tensor([1.0, 1.0, 50.0, 1.0])[:, None]
    values = torch.arange(12.0).view(1, 4, 3)
    o, b = att(torch.ones(1, 4), keys, values)
    torch.testing.assert_close(b.sum(-1), torch.ones(1))
    torch.testing.assert_close(o, values[:, 2], atol=1e-4, rtol=0)
    # self-attention of 000: values are also keys
    o_self, _ = att(torch.ones(1, 4), keys)
    torch.testing.assert_close(o_self, b @ keys[0])


def test_additive_score_matches_hand_formula():
    torch.manual_seed(1)
    score = AdditiveScore(3, 2, 5).double()
    q, k = torch.randn(1, 2, 3, dtype=torch.float64), torch.randn(1, 4, 2, dtype=torch.float64)
    Wq, Wk, v = (score.W_q.weight.detach().numpy(), score.W_k.weight.detach().numpy(),
                 score.v.weight.detach().numpy()[0])
    expected = np.array([[v @ np.tanh(Wq @ q[0, i].numpy() + Wk @ k[0, j].numpy()) for j in range(4)]
                         for i in range(2)])
    np.testing.assert_allclose(score(q, k)[0].detach().numpy(), expected, rtol=1e-12)
    att = BahdanauAttention(3, 2, 5).double()
    o, b = att(q[:, 0], k, key_padding_mask=torch.tensor([[False, False, False, True]]))
    assert o.shape == (1, 2) and b.shape == (1, 4) and b[0, 3] == 0
    torch.testing.assert_close(b.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_luong_general_with_identity_equals_dot():
    general, dot = LuongAttention(4, score="general"), LuongAttention(4, score="dot")
    with torch.no_grad():
        general.score.W.weight.copy_(torch.eye(4))
    q, k = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    torch.testing.assert_close(general(q, k)[1], dot(q, k)[1])
    # hand value of h_t^T W h_s
    with torch.no_grad():
        general.score.W.weight.copy_(torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0])))
    s = general.score(torch.tensor([[[1.0, 1.0, 1.0, 1.0]]]), torch.tensor([[[1.0, 0.0, 1.0, 2.0]]]))
    assert s.item() == 1 + 0 + 3 + 8


def test_key_value_attention_rejects_unknown_scores():
    with pytest.raises(ConfigError, match="score must be"):
        KeyValueAttention(4, score="cosine")
    with pytest.raises(ConfigError, match="query_dim == key_dim"):
        KeyValueAttention(4, 3, score="dot")
    with pytest.raises(ConfigError, match="Luong"):
        LuongAttention(4, score="additive")
