"""Character-level RNN/LSTM/GRU language models (Notes: 004 RNN, 000 §5.2): parameter counts, shapes, the carried
state, the fast path, sampling, and a tiny string overfit."""

import pytest
import torch
from torch import nn

from dlkit import create_model
from dlkit.errors import ConfigError

TEXT = "hello world, hello recurrent nets! "
CHARS = sorted(set(TEXT))
IDS = torch.tensor([CHARS.index(c) for c in TEXT * 2])


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name,ref_cls", [("char_rnn", nn.RNN), ("char_lstm", nn.LSTM), ("char_gru", nn.GRU)])
def test_parameter_count_equals_embedding_plus_torch_layers_plus_readout(name, ref_cls):
    with torch.device("meta"):
        model = create_model(name)
        want = count(nn.Embedding(65, 64)) + count(ref_cls(64, 256, 2)) + count(nn.Linear(256, 65))
    assert count(model) == want
    if name == "char_lstm":  # 65*64 + [4*256*(64+256) + 8*256] + [4*256*(256+256) + 8*256] + 256*65 + 65
        assert want == 4_160 + 329_728 + 526_336 + 16_705 == 876_929


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_shapes_and_carried_state_equal_one_pass_over_the_whole_text(cell):
    model = create_model(f"char_{cell}", vocab_size=11, embed_dim=8, hidden_size=12, num_layers=2).double()
    idx = torch.randint(0, 11, (3, 10))
    logits, state = model(idx)
    assert logits.shape == (3, 10, 11)
    h = state[0] if cell == "lstm" else state
    assert h.shape == (2, 3, 12)
    first, mid = model(idx[:, :4])
    second, _ = model(idx[:, 4:], mid)  # the state carries the context across batches (truncated BPTT)
    torch.testing.assert_close(torch.cat([first, second], 1), logits, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_python_loop_model_equals_the_fast_model(cell):
    fast = create_model(f"char_{cell}", vocab_size=11, embed_dim=8, hidden_size=12).double()
    slow = create_model(f"char_{cell}", vocab_size=11, embed_dim=8, hidden_size=12, fast=False).double()
    slow.load_state_dict(fast.state_dict())
    idx = torch.randint(0, 11, (2, 9))
    torch.testing.assert_close(slow(idx)[0], fast(idx)[0], atol=1e-12, rtol=0)


def test_greedy_generation_with_carried_state_equals_rereading_the_prefix():
    model = create_model("char_lstm", vocab_size=11, embed_dim=8, hidden_size=12).double().eval()
    prompt = torch.randint(0, 11, (2, 3))
    out = model.generate(prompt, 6, temperature=0)
    assert out.shape == (2, 9) and torch.equal(out[:, :3], prompt)
    for i in range(3, 9):  # each new token is the argmax after reading everything before it from scratch
        assert torch.equal(out[:, i], model(out[:, :i])[0][:, -1].argmax(-1))
    g = torch.Generator().manual_seed(0)
    sampled = model.generate(prompt, 6, temperature=1.0, generator=g)
    assert torch.equal(sampled, model.generate(prompt, 6, temperature=1.0, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_loss_falls_when_overfitting_a_tiny_string(cell):
    model = create_model(f"char_{cell}", vocab_size=len(CHARS), embed_dim=16, hidden_size=48, num_layers=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = IDS[:-1].unsqueeze(0), IDS[1:].unsqueeze(0)
    losses = []
    for _ in range(120):
        loss, _ = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 2.0 and losses[-1] < 0.1, (losses[0], losses[-1])  # ln(15) = 2.71 at the start
    if cell == "lstm":  # the memorised text comes back from its first characters
        out = model.eval().generate(IDS[:12].unsqueeze(0), len(IDS) - 12, temperature=0)
        assert "".join(CHARS[i] for i in out[0]) == TEXT * 2


def test_bad_token_ids_are_explained():
    with pytest.raises(ConfigError, match=r"integer character ids \[B, T\]"):
        create_model("char_lstm")(torch.zeros(2, 5))
    with pytest.raises(ConfigError, match="cell must be"):
        create_model("char_lstm", cell="transformer")
