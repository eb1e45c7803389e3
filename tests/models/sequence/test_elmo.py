"""ELMo biLM (Notes: 004 ELMo): shapes, the residual connection between the first and second layers, each LM reads
only its own direction, padding, contextual embeddings, the parameter count and a tiny overfit."""

import pytest
import torch
from torch import nn

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.sequence.elmo import ELMo
from dlkit.nn.recurrent import reverse_padded


def tiny(**kw) -> ELMo:
    return ELMo(**{"vocab_size": 13, "embed_dim": 6, "hidden_size": 10, "dropout": 0.0, **kw}).double().eval()


def test_elmo_small_parameter_count_equals_its_parts():
    with torch.device("meta"):
        model = create_model("elmo_small")
        lstmp = sum(p.numel() for p in nn.LSTM(64, 256, proj_size=64).parameters())
    assert lstmp == 4 * 256 * (64 + 64) + 8 * 256 + 64 * 256  # W_ih, W_hh (on the projected state), biases, W_hr
    want = 65 * 64 + 4 * lstmp + (64 * 65 + 65) + 3 + 1  # embedding, 2 layers x 2 directions, softmax, s, gamma
    assert sum(p.numel() for p in model.parameters()) == want == 606_405


def test_shapes_and_the_elmo_vector_is_twice_the_width():
    model = tiny()
    tokens = torch.randint(0, 13, (3, 8))
    fwd, bwd = model(tokens)
    assert fwd.shape == bwd.shape == (3, 8, 13)
    layers = model.layer_outputs(tokens)
    assert len(layers) == 3 and all(h.shape == (3, 8, 12) for h in layers)
    x = model.embed(tokens)
    assert torch.equal(layers[0], torch.cat([x, x], -1))  # layer 0 is [x; x]
    assert model.embed_tokens(tokens).shape == (3, 8, 12)


def test_scalar_mix_is_gamma_times_softmax_weighted_layers():
    model = tiny()
    tokens = torch.randint(0, 13, (2, 5))
    with torch.no_grad():
        model.mix_weights.copy_(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64))
        model.gamma.fill_(1.7)
    layers = model.layer_outputs(tokens)
    s = torch.softmax(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), 0)
    want = 1.7 * (s[0] * layers[0] + s[1] * layers[1] + s[2] * layers[2])
    torch.testing.assert_close(model.embed_tokens(tokens), want, atol=1e-12, rtol=0)


def test_second_layer_output_is_lstm2_of_h1_plus_h1():
    model = tiny()
    tokens = torch.randint(0, 13, (2, 7))
    x, fwd, bwd = model.directional_states(tokens)
    torch.testing.assert_close(fwd[0], model.forward_lm[0](x)[0], atol=1e-12, rtol=0)  # no residual on layer 1
    torch.testing.assert_close(fwd[1], model.forward_lm[1](fwd[0])[0] + fwd[0], atol=1e-12, rtol=0)
    b1 = reverse_padded(bwd[0], time_dim=1)  # the backward LM works in reversed time
    torch.testing.assert_close(reverse_padded(bwd[1], time_dim=1), model.backward_lm[1](b1)[0] + b1, atol=1e-12,
                               rtol=0)


def test_forward_lm_ignores_future_tokens_and_backward_lm_ignores_past_ones():
    model = tiny()
    tokens = torch.randint(0, 13, (2, 9))
    fwd, bwd = model(tokens)
    for s in (0, 4, 8):
        changed = tokens.clone()
        changed[:, s] = (changed[:, s] + 1) % 13
        fwd2, bwd2 = model(changed)
        moved_f = (fwd2 - fwd).abs().amax(dim=(0, 2))
        moved_b = (bwd2 - bwd).abs().amax(dim=(0, 2))
        assert (moved_f[:s] == 0).all() and (moved_f[s:] > 1e-9).all()  # fwd at t predicts t+1 from tokens <= t
        assert (moved_b[s + 1:] == 0).all() and (moved_b[:s + 1] > 1e-9).all()  # bwd at t predicts t-1 from >= t


def test_padded_sequences_equal_their_unpadded_runs():
    model = tiny()
    tokens = torch.randint(0, 13, (2, 8))
    lengths = torch.tensor([8, 5])
    fwd, bwd = model(tokens, lengths=lengths)
    alone_f, alone_b = model(tokens[1:, :5])
    torch.testing.assert_close(fwd[1, :5], alone_f[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(bwd[1, :5], alone_b[0], atol=1e-12, rtol=0)  # the backward LM starts at token 4
    full = model.lm_loss(tokens[1:, :5])
    torch.testing.assert_close(model.lm_loss(tokens[1:], lengths=lengths[1:]), full, atol=1e-12, rtol=0)


def test_the_same_token_gets_different_vectors_in_different_contexts():
    model = tiny()
    a = torch.tensor([[1, 2, 7, 3, 4]])
    b = torch.tensor([[5, 6, 7, 8, 9]])
    ea, eb = model.embed_tokens(a)[0, 2], model.embed_tokens(b)[0, 2]
    assert torch.equal(model.layer_outputs(a)[0][0, 2], model.layer_outputs(b)[0][0, 2])  # static layer 0 agrees
    assert (ea - eb).abs().max() > 1e-3


def test_python_loop_elmo_equals_the_fast_elmo():
    fast = tiny()
    slow = tiny(fast=False)
    slow.load_state_dict(fast.state_dict())
    tokens, lengths = torch.randint(0, 13, (2, 6)), torch.tensor([6, 4])
    for a, b in zip(fast(tokens, lengths), slow(tokens, lengths)):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)


def test_lm_loss_falls_when_overfitting_a_tiny_string():
    text = "the cat sat on the mat. "
    chars = sorted(set(text))
    ids = torch.tensor([[chars.index(c) for c in text * 2]])
    model = ELMo(vocab_size=len(chars), embed_dim=24, hidden_size=24, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = model.lm_loss(ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 2.0 and losses[-1] < 0.2, (losses[0], losses[-1])


def test_bad_configuration_is_explained():
    with pytest.raises(ConfigError, match="hidden_size >= embed_dim"):
        ELMo(embed_dim=32, hidden_size=16)
    with pytest.raises(ConfigError, match=r"integer token ids \[B, T\]"):
        tiny()(torch.zeros(2, 3))
