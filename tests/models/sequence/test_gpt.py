"""GPT: published GPT-2 parameter counts, weight tying, causality, the LM loss, sampling and a learning test."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.sequence.gpt import GPT


def count(name, **kw):
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(name, **kw).parameters())


# GPT-2 sizes as published with the Hugging Face checkpoints (tied head counted once); gpt2 small derived in gpt.py
GPT2 = {"gpt2_small": 124_439_808, "gpt2_medium": 354_823_168, "gpt2_large": 774_030_080, "gpt2_xl": 1_557_611_200}


@pytest.mark.parametrize("name", GPT2)
def test_gpt2_parameter_counts_are_published(name):
    assert count(name) == GPT2[name]


def test_head_is_tied_to_token_embedding_and_counted_once():
    with torch.device("meta"):
        model = create_model("gpt2_small")
    assert model.lm_head.weight is model.tok_emb.weight
    assert count("gpt2_small", tie_weights=False) == GPT2["gpt2_small"] + 50257 * 768
    # nanoGPT's "123.65M" is the count without the position table
    assert GPT2["gpt2_small"] - 1024 * 768 == 123_653_376


def tiny(**kw):
    return GPT(**{"vocab_size": 11, "block_size": 12, "n_layer": 2, "n_head": 2, "n_embd": 16, **kw})


def test_causal_mask_blocks_the_future():
    model = tiny().double().eval()
    idx = torch.randint(0, 11, (2, 10))
    for t in (0, 4, 8):
        idx2 = idx.clone()
        idx2[:, t + 1] = (idx2[:, t + 1] + 1) % 11
        a, b = model(idx), model(idx2)
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1])
        assert (a[:, t + 1] - b[:, t + 1]).abs().amax() > 1e-6


def test_fused_attention_path_equals_the_explicit_formula():
    model = tiny().double().eval()
    idx = torch.randint(0, 11, (3, 12))
    fast = model(idx)
    for layer in model.blocks.layers:
        layer.self_attn.explicit = True
    torch.testing.assert_close(model(idx), fast)


def test_loss_is_cross_entropy_against_next_tokens():
    model = tiny()
    seq = torch.randint(0, 11, (4, 13))
    idx, targets = seq[:, :-1], seq[:, 1:]
    logits = model(idx)
    assert logits.shape == (4, 12, 11)
    expected = sum(F.cross_entropy(logits[b, t], targets[b, t], reduction="sum") for b in range(4) for t in range(12))
    torch.testing.assert_close(model.loss(idx, targets), expected / 48)
    assert abs(model.loss(idx, targets).item() - math.log(11)) < 0.3  # small init: near-uniform predictions


def _greedy(model, idx, n):
    for _ in range(n):
        nxt = model(idx[:, -model.block_size :])[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt], 1)
    return idx


def test_generate_top_k_one_and_cold_temperature_are_greedy():
    model = tiny(n_embd=32, n_head=4).eval()
    with torch.no_grad():
        model.tok_emb.weight.mul_(20)  # sharper logits, so greedy decoding is well defined
    start = torch.randint(0, 11, (3, 4))
    greedy = _greedy(model, start, 15)  # 19 tokens > block_size 12: the context is cropped
    assert greedy.shape == (3, 19)
    assert torch.equal(model.generate(start, 15, top_k=1), greedy)
    assert torch.equal(model.generate(start, 15, temperature=0.0), greedy)
    assert torch.equal(model.generate(start, 15, temperature=1e-4), greedy)
    g = torch.Generator().manual_seed(0)
    hot = model.generate(start, 15, temperature=5.0, generator=g)
    assert not torch.equal(hot, greedy) and hot.min() >= 0 and hot.max() < 11


def test_top_k_samples_only_among_the_k_most_likely():
    model = tiny().eval()
    start = torch.zeros(2000, 1, dtype=torch.long)
    logits = model(start[:1])[0, -1]
    allowed = set(torch.topk(logits, 3).indices.tolist())
    drawn = set(model.generate(start, 1, top_k=3, generator=torch.Generator().manual_seed(0))[:, -1].tolist())
    assert drawn == allowed


def test_tiny_gpt_learns_a_repeating_sequence():
    torch.manual_seed(0)
    model = tiny(n_embd=32)
    pattern = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3])
    seq = pattern.repeat(3)
    starts = torch.arange(0, 30)
    batch = torch.stack([seq[s : s + 13] for s in starts])
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=1e-2)
    first = model.loss(batch[:, :-1], batch[:, 1:]).item()
    for _ in range(150):
        loss = model.loss(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert first > 2.0 and loss.item() < 0.1
    out = model.eval().generate(pattern[None, :4], 8, temperature=0.0)
    assert out[0].tolist() == pattern[:12].tolist()


def test_param_groups_cover_every_parameter_once():
    model = tiny()
    groups = model.param_groups(0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    # nanoGPT's configure_optimizers: every parameter with dim >= 2 decays (both embedding tables included)
    assert all(p.dim() >= 2 for p in groups[0]["params"]) and all(p.dim() < 2 for p in groups[1]["params"])
    assert any(p is model.pos_emb.weight for p in groups[0]["params"])
    assert any(p is model.tok_emb.weight for p in groups[0]["params"])
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0


def test_bad_inputs_are_explained():
    model = tiny()
    with pytest.raises(ConfigError, match="block_size = 12"):
        model(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ConfigError, match="integer token ids"):
        model(torch.zeros(1, 5))
    with pytest.raises(ConfigError, match="temperature"):
        model.generate(torch.zeros(1, 1, dtype=torch.long), 1, temperature=-1)


def test_cpu_variants_build_and_run():
    for name in ("gpt_char_nano", "gpt_char_small"):
        model = create_model(name)
        assert model(torch.zeros(2, 8, dtype=torch.long)).shape == (2, 8, 65)
    # nanoGPT's shakespeare_char (bias=False) prints "10.65M": wte 24,960 + 6 * (12 * 384^2 + 2 * 384) + 384
    assert count("gpt_shakespeare_char") - 256 * 384 == 24_960 + 6 * (12 * 384**2 + 2 * 384) + 384 == 10_646_784
