"""Mask2Former's masked attention (Notes: 002 §5.3.3): the blocked keys of a hand case, the empty-mask fallback, and
a layer whose output ignores the memory outside each query's mask."""

import torch

from dlkit.nn.masked_attention import MaskedAttentionDecoderLayer, masked_attention_mask


def test_the_attention_mask_of_a_hand_case_and_the_empty_mask_fallback():
    logits = torch.tensor([[[[2.0, -2.0], [-1.0, 3.0]],    # sigmoid >= 0.5 at (0, 0) and (1, 1)
                            [[-5.0, -1.0], [-0.1, -3.0]],  # empty mask: attends everywhere
                            [[0.0, 0.0], [0.0, -0.1]]]])   # sigmoid(0) = 0.5 is inside
    blocked = masked_attention_mask(logits)
    assert blocked.tolist() == [[[False, True, True, False], [False] * 4, [False, False, False, True]]]


def test_the_attention_mask_reads_the_mask_at_the_attended_maps_size():
    logits = torch.full((1, 1, 4, 4), -5.0)
    logits[..., :2, :2] = 5.0  # the top-left quarter: one cell of a 2 x 2 map
    assert masked_attention_mask(logits, (2, 2)).tolist() == [[[False, True, True, True]]]


def test_a_layer_ignores_the_memory_outside_the_mask_and_attends_everywhere_for_an_empty_mask():
    torch.manual_seed(0)
    layer = MaskedAttentionDecoderLayer(16, 4, d_ff=32, dropout=0.0).eval()
    x, memory, pos, qpos = torch.randn(1, 2, 16), torch.randn(1, 6, 16), torch.randn(1, 6, 16), torch.randn(1, 2, 16)
    mask_logits = torch.tensor([[[[3.0, 3.0, -3.0], [-3.0, -3.0, -3.0]], [[-3.0] * 3] * 2]])  # query 1: empty
    blocked = masked_attention_mask(mask_logits)
    out = layer(x, memory, pos, qpos, blocked)
    changed = memory.clone()
    changed[:, 2:] = torch.randn(1, 4, 16)  # outside query 0's mask
    out2 = layer(x, changed, pos, qpos, blocked)
    # query 0 is unchanged after its cross-attention; self-attention then mixes in query 1, which saw everything,
    # so compare the cross-attention itself
    ca = lambda m: layer.cross_attn(x + qpos, m + pos, m, attn_mask=blocked, need_weights=True)  # noqa: E731
    (a, wa), (b, _) = ca(memory), ca(changed)
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert (wa[0, 0, 2:] == 0).all() and torch.isclose(wa[0, 0, :2].sum(), torch.tensor(1.0))
    assert not torch.allclose(a[:, 1], b[:, 1])  # the empty-mask query attends to every position
    full = layer.cross_attn(x + qpos, memory + pos, memory, need_weights=True)[1]
    torch.testing.assert_close(wa[0, 1], full[0, 1])
    assert not torch.allclose(out, out2)
