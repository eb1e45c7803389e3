"""Recurrent cells and layers (Notes: 000 §5.2-5.2.1, 003 §8, 004 RNN/LSTM/GRU): outputs and every gradient equal
torch.nn.RNN/LSTM/GRU with the same weights, variable lengths equal packed sequences, the fast path equals the
Python loop, and the gates behave as the notes say."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dlkit.errors import ConfigError
from dlkit.nn.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, reverse_padded

D64 = torch.float64
CASES = {  # name: (our class, torch class, extra kwargs)
    "rnn_tanh": (RNN, nn.RNN, {}),
    "rnn_relu": (RNN, nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (LSTM, nn.LSTM, {}),
    "lstm_proj": (LSTM, nn.LSTM, {"proj_size": 3}),
    "gru": (GRU, nn.GRU, {}),
}


def pair(case: str, input_size=4, hidden=5, fast=False, **kw):
    """A torch reference module and ours holding the same (float64) weights, loaded with strict load_state_dict."""
    ours_cls, ref_cls, extra = CASES[case]
    ref = ref_cls(input_size, hidden, **extra, **kw).to(D64)
    ours = ours_cls(input_size, hidden, **extra, **kw, fast=fast, dtype=D64)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def initial_state(module, batch: int):
    n = module.num_layers * (2 if module.bidirectional else 1)
    h_size = getattr(module, "proj_size", 0) or module.hidden_size
    h0 = torch.randn(n, batch, h_size, dtype=D64, requires_grad=True)
    if isinstance(module, (nn.LSTM, LSTM)):
        return h0, torch.randn(n, batch, module.hidden_size, dtype=D64, requires_grad=True)
    return h0


def run_and_grad(module, x, hx, weights):
    """Forward, a random linear functional of output and final states, backward; returns values and gradients."""
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad()
    out, state = module(x, hx)
    states = state if isinstance(state, tuple) else (state,)
    loss = (out * weights[0]).sum() + sum((s * w).sum() for s, w in zip(states, weights[1:]))
    hx_leaves = hx if isinstance(hx, tuple) else (hx,)
    grads = torch.autograd.grad(loss, [x, *hx_leaves, *module.parameters()])
    return [out, *states], grads


def assert_same(ref_vals, our_vals, tol=1e-8):
    assert len(ref_vals) == len(our_vals)
    for a, b in zip(ref_vals, our_vals):
        torch.testing.assert_close(b, a, atol=tol, rtol=tol)


# ----------------------------------------------------------------------------- equality with torch


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True), (3, False)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_layer_outputs_and_every_gradient_equal_torch(case, layers, bidirectional, batch_first):
    ref, ours = pair(case, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    x = torch.randn((3, 6, 4) if batch_first else (6, 3, 4), dtype=D64)
    hx = initial_state(ref, 3)
    out_ref, state_ref = ref(x, hx)
    weights = [torch.randn_like(t) for t in [out_ref, *(state_ref if isinstance(state_ref, tuple) else (state_ref,))]]
    vals_ref, grads_ref = run_and_grad(ref, x, hx, weights)
    vals_ours, grads_ours = run_and_grad(ours, x, hx, weights)
    assert_same(vals_ref, vals_ours)
    assert_same(grads_ref, grads_ours)  # input, h_0 (c_0) and every weight, in torch's parameter order
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]


@pytest.mark.parametrize("case", list(CASES))
def test_zero_initial_state_is_the_default_as_in_torch(case):
    ref, ours = pair(case, num_layers=2)
    x = torch.randn(5, 2, 4, dtype=D64)
    out_ref, _ = ref(x)
    torch.testing.assert_close(ours(x)[0], out_ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("case", ["rnn_tanh", "lstm", "gru"])
def test_unbatched_input_equals_torch(case):
    ref, ours = pair(case, num_layers=2, bidirectional=True)
    x = torch.randn(7, 4, dtype=D64)
    out_ref, state_ref = ref(x)
    out, state = ours(x)
    assert out.shape == (7, 10)
    torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(state, state_ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("cell,ref_cls,kw", [(RNNCell, nn.RNNCell, {}), (RNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
                                             (LSTMCell, nn.LSTMCell, {}), (GRUCell, nn.GRUCell, {})])
def test_cells_equal_torch_cells(cell, ref_cls, kw):
    ref = ref_cls(4, 5, **kw).to(D64)
    ours = cell(4, 5, **kw, dtype=D64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, dtype=D64, requires_grad=True)
    h = torch.randn(3, 5, dtype=D64)
    hx = (h, torch.randn(3, 5, dtype=D64)) if cell is LSTMCell else h
    got, want = ours(x, hx), ref(x, hx)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    g_got = torch.autograd.grad(sum(t.sum() for t in (got if isinstance(got, tuple) else (got,))), x)[0]
    g_want = torch.autograd.grad(sum(t.sum() for t in (want if isinstance(want, tuple) else (want,))), x)[0]
    torch.testing.assert_close(g_got, g_want, atol=1e-12, rtol=0)
    torch.testing.assert_close(ours(x[0]), ref(x[0]), atol=1e-12, rtol=0)  # unbatched, zero state


# ----------------------------------------------------------------------------- variable lengths


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fast", [False, True])
def test_lengths_equal_torch_packed_sequences_at_valid_steps(case, fast):
    ref, ours = pair(case, num_layers=2, bidirectional=True, batch_first=True, fast=fast)
    lengths = torch.tensor([6, 2, 4, 1])
    x = torch.randn(4, 6, 4, dtype=D64, requires_grad=True)
    hx = initial_state(ref, 4)
    out_ref, state_ref = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), hx)
    out_ref = pad_packed_sequence(out_ref, batch_first=True, total_length=6)[0]
    out, state = ours(x, hx, lengths=lengths)
    torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=0)  # padded steps are 0 in both
    torch.testing.assert_close(state, state_ref, atol=1e-10, rtol=0)
    assert (out[1, 2:] == 0).all()
    g_ref = torch.autograd.grad(out_ref.pow(2).sum(), [x, *ref.parameters()])
    g_ours = torch.autograd.grad(out.pow(2).sum(), [x, *ours.parameters()])
    assert_same(g_ref, g_ours, tol=1e-10)
    assert (g_ours[0][1, 2:] == 0).all()  # padding gets no gradient


@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_sequence_input_returns_torch_packed_output(enforce_sorted):
    ref, ours = pair("lstm", num_layers=2, bidirectional=True)
    lengths = torch.tensor([5, 4, 2]) if enforce_sorted else torch.tensor([2, 5, 4])
    packed = pack_padded_sequence(torch.randn(5, 3, 4, dtype=D64), lengths, enforce_sorted=enforce_sorted)
    (o_ref, (h_ref, c_ref)), (o, (h, c)) = ref(packed), ours(packed)
    torch.testing.assert_close(o.data, o_ref.data, atol=1e-10, rtol=0)
    assert torch.equal(o.batch_sizes, o_ref.batch_sizes)
    assert (o.sorted_indices is None) == (o_ref.sorted_indices is None)
    torch.testing.assert_close((h, c), (h_ref, c_ref), atol=1e-10, rtol=0)


def test_reverse_padded_flips_each_sequence_within_its_length():
    x = torch.arange(24.0).reshape(6, 2, 2)  # [T, B, F]
    lengths = torch.tensor([4, 6])
    got = reverse_padded(x, lengths)
    want = x.clone()
    for b, n in enumerate(lengths.tolist()):
        want[:n, b] = x[:n, b].flip(0)
    assert torch.equal(got, want)
    assert torch.equal(reverse_padded(x, torch.tensor([6, 6])), x.flip(0))
    assert torch.equal(reverse_padded(x.transpose(0, 1), lengths, time_dim=1), want.transpose(0, 1))
    assert torch.equal(reverse_padded(got, lengths), x)  # an involution


# ----------------------------------------------------------------------------- fast path


@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_equals_the_python_loop_in_value_and_gradient(case):
    _, slow = pair(case, num_layers=2, bidirectional=True)
    _, fast = pair(case, num_layers=2, bidirectional=True, fast=True)
    fast.load_state_dict(slow.state_dict())
    x = torch.randn(7, 3, 4, dtype=D64)
    hx = initial_state(slow, 3)
    out, state = slow(x, hx)
    weights = [torch.randn_like(t) for t in [out, *(state if isinstance(state, tuple) else (state,))]]
    vals_slow, grads_slow = run_and_grad(slow, x, hx, weights)
    vals_fast, grads_fast = run_and_grad(fast, x, hx, weights)
    assert_same(vals_slow, vals_fast, tol=1e-10)
    assert_same(grads_slow, grads_fast, tol=1e-10)
    assert "_template" not in dict(fast.named_modules()) and len(fast.state_dict()) == len(slow.state_dict())


def test_fast_path_refuses_forms_torch_has_no_kernel_for():
    for kw in ({"update": "swapped"}, {"reset_after": False}):
        with pytest.raises(ConfigError, match="fast=True"):
            GRU(3, 4, fast=True, **kw)
    with pytest.raises(ConfigError, match="fast=True"):
        RNN(3, 4, nonlinearity="identity", fast=True)


# ----------------------------------------------------------------------------- dropout, initial states


def test_dropout_between_layers_matches_torch_in_train_and_is_off_in_eval():
    ref, ours = pair("lstm", num_layers=3, dropout=0.5)
    _, fast = pair("lstm", num_layers=3, dropout=0.5, fast=True)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(6, 3, 4, dtype=D64)
    torch.manual_seed(3)
    want = ref(x)[0]
    for module in (ours, fast):  # torch applies the same dropout call to each intermediate layer's output
        torch.manual_seed(3)
        torch.testing.assert_close(module(x)[0], want, atol=1e-10, rtol=0)
    torch.manual_seed(4)
    assert not torch.allclose(ours(x)[0], want)  # another mask
    ref.eval(), ours.eval()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-10, rtol=0)
    assert torch.equal(ours(x)[0], ours(x)[0])


def test_zero_initial_state_is_zeros():
    h, c = LSTM(3, 4, num_layers=2, bidirectional=True).initial_state(5)
    assert h.shape == c.shape == (4, 5, 4) and not h.any() and not c.any()


def test_sampled_initial_state_is_normal_with_the_configured_std():
    gru = GRU(3, 4, num_layers=2, init_state="sampled", init_std=0.5)
    torch.manual_seed(11)
    h = gru.initial_state(20_000)
    torch.manual_seed(11)
    assert torch.equal(h, 0.5 * torch.randn(2, 20_000, 4))  # seeded: exactly torch.randn * init_std
    assert abs(h.mean().item()) < 0.01 and abs(h.std().item() - 0.5) < 0.01
    assert not torch.equal(gru.initial_state(3), gru.initial_state(3))  # drawn afresh at every call


def test_learned_initial_state_is_a_parameter_that_receives_gradient():
    lstm = LSTM(3, 4, num_layers=2, init_state="learned")
    out, _ = lstm(torch.randn(5, 2, 3))
    out.pow(2).sum().backward()
    assert lstm.h0.grad is not None and lstm.h0.grad.abs().sum() > 0
    assert lstm.c0.grad is not None and lstm.c0.grad.abs().sum() > 0
    missing = lstm.load_state_dict(nn.LSTM(3, 4, num_layers=2).state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["c0", "h0"]
    ref = nn.LSTM(3, 4, num_layers=2)
    ref.load_state_dict({k: v for k, v in lstm.state_dict().items() if k not in ("h0", "c0")})
    with torch.no_grad():
        lstm.h0.normal_(), lstm.c0.normal_()
    x = torch.randn(5, 2, 3)
    want = ref(x, (lstm.h0.unsqueeze(1).expand(-1, 2, -1), lstm.c0.unsqueeze(1).expand(-1, 2, -1)))[0]
    torch.testing.assert_close(lstm(x)[0], want)


# ----------------------------------------------------------------------------- gates and the notes' claims


def lstm_with_gate_biases(i: float, f: float) -> LSTM:
    """An LSTM whose input and forget gates are fixed by their biases (their weights are zero)."""
    lstm = LSTM(3, 4, dtype=D64)
    with torch.no_grad():
        for w in (lstm.weight_ih_l0, lstm.weight_hh_l0):
            w[:8].zero_()  # gate order i, f, g, o
        lstm.bias_ih_l0[:4], lstm.bias_hh_l0[:4] = i, 0.0
        lstm.bias_ih_l0[4:8], lstm.bias_hh_l0[4:8] = f, 0.0
    return lstm


def test_lstm_with_forget_one_and_input_zero_keeps_its_memory():
    lstm = lstm_with_gate_biases(i=-60.0, f=60.0)  # sigma(60) rounds to 1.0 in float64, sigma(-60) ~ 1e-26
    c0 = torch.randn(1, 2, 4, dtype=D64)
    _, (_, c_n) = lstm(torch.randn(9, 2, 3, dtype=D64), (torch.randn(1, 2, 4, dtype=D64), c0))
    torch.testing.assert_close(c_n, c0, atol=1e-20, rtol=0)  # the constant error carousel


def test_lstm_with_forget_zero_and_input_one_writes_the_candidate():
    lstm = lstm_with_gate_biases(i=60.0, f=-60.0)
    x, h0 = torch.randn(1, 2, 3, dtype=D64), torch.randn(1, 2, 4, dtype=D64)
    _, (_, c1) = lstm(x, (h0, torch.randn(1, 2, 4, dtype=D64)))
    g = torch.tanh(x[0] @ lstm.weight_ih_l0[8:12].T + lstm.bias_ih_l0[8:12] + h0[0] @ lstm.weight_hh_l0[8:12].T
                   + lstm.bias_hh_l0[8:12])  # C~_t of the notes
    torch.testing.assert_close(c1[0], g, atol=1e-20, rtol=0)


def test_gru_with_update_gate_one_keeps_its_state():
    gru = GRU(3, 4, dtype=D64)
    with torch.no_grad():
        gru.weight_ih_l0[4:8].zero_(), gru.weight_hh_l0[4:8].zero_()  # gate order r, z, n
        gru.bias_ih_l0[4:8], gru.bias_hh_l0[4:8] = 60.0, 0.0
    h0 = torch.randn(1, 2, 4, dtype=D64)
    _, h_n = gru(torch.randn(8, 2, 3, dtype=D64), h0)
    torch.testing.assert_close(h_n, h0, atol=1e-20, rtol=0)


def test_swapped_gru_update_equals_torch_with_negated_update_gate():
    # z n + (1 - z) h with z = sigma(a) is (1 - z') n + z' h with z' = sigma(-a): negate the z-rows.
    ref = nn.GRU(4, 5, num_layers=2).to(D64)
    ours = GRU(4, 5, num_layers=2, update="swapped", dtype=D64)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    for v in state.values():
        v[5:10] *= -1
    ours.load_state_dict(state)
    x = torch.randn(6, 3, 4, dtype=D64)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-10, rtol=0)


def test_reset_before_product_equals_reset_after_only_for_diagonal_w_hn():
    # Cho et al. (2014) tanh(W x + U (r * h)) equals torch's tanh(W x + r * (U h)) when U is diagonal and b_hn = 0.
    ref = nn.GRU(4, 5).to(D64)
    ours = GRU(4, 5, reset_after=False, dtype=D64)
    x = torch.randn(6, 3, 4, dtype=D64)
    ours.load_state_dict(ref.state_dict())
    assert not torch.allclose(ours(x)[0], ref(x)[0], atol=1e-3)
    with torch.no_grad():
        ref.weight_hh_l0[10:] = torch.diag(torch.randn(5, dtype=D64))
        ref.bias_hh_l0[10:] = 0.0
    ours.load_state_dict(ref.state_dict())
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-10, rtol=0)


def test_only_the_sum_of_the_two_lstm_biases_matters():
    ref, ours = pair("lstm")
    x = torch.randn(5, 2, 4, dtype=D64)
    out = ours(x)[0]
    g_ih, g_hh = torch.autograd.grad(out.pow(2).sum(), [ours.bias_ih_l0, ours.bias_hh_l0])
    torch.testing.assert_close(g_ih, g_hh, atol=1e-12, rtol=0)
    with torch.no_grad():
        shift = torch.randn(20, dtype=D64)
        ours.bias_ih_l0 += shift
        ours.bias_hh_l0 -= shift
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-12, rtol=0)


def test_parameter_counts_match_the_notes_and_torch():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    dev = torch.device("meta")
    # 000/003: LSTM 4(n_h(n_h + n_x) + n_h) = 2,480 with one bias per gate; torch keeps two: 2,560.
    assert count(LSTM(10, 20, device=dev)) == count(nn.LSTM(10, 20, device=dev)) == 2_560 == 2_480 + 4 * 20
    assert count(LSTM(10, 20, bias=False, device=dev)) == 4 * 20 * (20 + 10) == 2_400
    # 003: Keras SimpleRNN H(D + H + 1) = 620; torch's two biases make 640.
    assert count(RNN(10, 20, device=dev)) == count(nn.RNN(10, 20, device=dev)) == 620 + 20
    # 004: GRU without biases 3(n_h n_x + n_h^2) = 1,800; 003: 3(H(D + H) + 2H) = 1,920 with torch's biases.
    assert count(GRU(10, 20, bias=False, device=dev)) == 1_800
    assert count(GRU(10, 20, device=dev)) == count(nn.GRU(10, 20, device=dev)) == 1_920
    # A bidirectional layer has twice the parameters (003 §8.2.1); a projection adds P x H per direction.
    assert count(LSTM(10, 20, bidirectional=True, device=dev)) == 2 * 2_560
    assert count(LSTM(10, 20, proj_size=5, device=dev)) == count(nn.LSTM(10, 20, proj_size=5, device=dev))


def test_bidirectional_backward_half_is_a_forward_lstm_on_the_reversed_sequence():
    bi = LSTM(4, 5, bidirectional=True, dtype=D64)
    uni = LSTM(4, 5, dtype=D64)
    uni.load_state_dict({k.replace("_reverse", ""): v for k, v in bi.state_dict().items() if "_reverse" in k})
    x, lengths = torch.randn(6, 3, 4, dtype=D64), torch.tensor([6, 3, 5])
    out, _ = bi(x, lengths=lengths)
    back, _ = uni(reverse_padded(x, lengths), lengths=lengths)
    torch.testing.assert_close(out[..., 5:], reverse_padded(back, lengths), atol=1e-12, rtol=0)
    x2 = x.clone()
    x2[-1, 0] += 1.0  # the last element changes the output at t = 0 (only through the backward half)
    out2, _ = bi(x2, lengths=lengths)
    assert not torch.allclose(out2[0, 0, 5:], out[0, 0, 5:]) and torch.equal(out2[0, 0, :5], out[0, 0, :5])


def test_same_weights_are_used_at_every_step():
    # Notes 004: U, V, W are shared across time; a 1-step run repeated equals a T-step run.
    rnn = RNN(3, 4, dtype=D64)
    cell = RNNCell(3, 4, dtype=D64)
    cell.load_state_dict({k[:-3]: v for k, v in rnn.state_dict().items()})
    x = torch.randn(7, 2, 3, dtype=D64)
    h = torch.zeros(2, 4, dtype=D64)
    for t in range(7):
        h = cell(x[t], h)
    torch.testing.assert_close(rnn(x)[1][0], h, atol=1e-12, rtol=0)


def test_bad_inputs_are_explained():
    lstm = LSTM(3, 4, num_layers=2, batch_first=True)
    with pytest.raises(ConfigError, match=r"\[B, T, input_size\] with input_size=3"):
        lstm(torch.randn(2, 5, 7))
    with pytest.raises(ConfigError, match=r"LSTM needs a sequence of at least one step; got input \(2, 0, 3\) with "
                                          r"T = 0 \(dim 1\)"):
        lstm(torch.randn(2, 0, 3))  # torch refuses it too ("Expected sequence length to be larger than 0")
    with pytest.raises(ConfigError, match="lengths must hold"):
        lstm(torch.randn(2, 5, 3), lengths=torch.tensor([5, 6]))
    with pytest.raises(ConfigError, match=r"h_0 must be .*\[2, 2, 4\]"):
        lstm(torch.randn(2, 5, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ConfigError, match="tuple"):
        lstm(torch.randn(2, 5, 3), torch.zeros(2, 2, 4))
    with pytest.raises(ConfigError, match="init_state"):
        GRU(3, 4, init_state="random")
    with pytest.raises(ConfigError, match="proj_size"):
        LSTM(3, 4, proj_size=4)
    with pytest.raises(ConfigError, match="expects input"):
        LSTMCell(3, 4)(torch.randn(2, 5))
