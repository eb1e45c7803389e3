"""BPTT (Notes: 000 §5.2, 003 §8.1, 004 RNN): the hand-written backward pass equals autograd, truncation cuts
gradients at chunk boundaries and equals full BPTT when k >= T, and the measured gradient norms vanish or explode
as the notes say."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlkit.errors import ConfigError
from dlkit.nn.recurrent import RNN
from dlkit.techniques.bptt import (
    detach_state,
    gradient_norm_vs_distance,
    rnn_bptt,
    sequence_cross_entropy,
    train_tbptt,
    truncated_forward,
)

D64 = torch.float64


class Tagger(nn.Module):
    """A recurrent layer and a per-step linear read-out: model(x, state) -> (y, state)."""

    def __init__(self, cell=RNN, input_size=3, hidden=6, out=2):
        super().__init__()
        self.rnn = cell(input_size, hidden, batch_first=True, dtype=D64)
        self.head = nn.Linear(hidden, out, dtype=D64)

    def forward(self, x, state=None):
        h, state = self.rnn(x, state)
        return self.head(h), state


# ----------------------------------------------------------------------------- BPTT by hand


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_hand_bptt_equals_autograd_and_sums_per_step_gradients(reduction):
    T, B, D, H = 7, 3, 4, 5
    x, h0 = torch.randn(T, B, D, dtype=D64, requires_grad=True), torch.randn(B, H, dtype=D64, requires_grad=True)
    w_ih = (torch.randn(H, D, dtype=D64) * 0.5).requires_grad_()
    w_hh = (torch.randn(H, H, dtype=D64) * 0.5).requires_grad_()
    b = torch.randn(H, dtype=D64, requires_grad=True)
    target = torch.randn(T, B, H, dtype=D64)
    hs, h = [], h0
    for t in range(T):
        h = torch.tanh(x[t] @ w_ih.T + h @ w_hh.T + b)
        hs.append(h)
    step_losses = torch.stack([((h_t - y_t) ** 2).sum() / 2 for h_t, y_t in zip(hs, target)])  # L_t
    loss = step_losses.sum() if reduction == "sum" else step_losses.mean()
    want = torch.autograd.grad(loss, [w_ih, w_hh, b], retain_graph=True)
    want_x_h0 = torch.autograd.grad(step_losses.sum(), [x, h0])
    grad_h = torch.stack(hs).detach() - target  # dL_t/dh_t of the squared error
    got = rnn_bptt(x.detach(), h0.detach(), w_ih.detach(), w_hh.detach(), b.detach(), grad_h, reduction)
    for name, w in zip(("weight_ih", "weight_hh", "bias"), want):
        torch.testing.assert_close(got[name], w, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(got["x"], want_x_h0[0], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(got["h0"], want_x_h0[1], atol=1e-12, rtol=1e-10)


def test_mean_and_sum_over_time_differ_by_exactly_t():
    logits, targets = torch.randn(4, 9, 5, dtype=D64), torch.randint(0, 5, (4, 9))
    total = sequence_cross_entropy(logits, targets, reduction="sum")
    mean = sequence_cross_entropy(logits, targets, reduction="mean")
    torch.testing.assert_close(total, 9 * mean)
    torch.testing.assert_close(mean, F.cross_entropy(logits.reshape(-1, 5), targets.reshape(-1)))  # equal counts
    hand = sum(F.cross_entropy(logits[:, t], targets[:, t]) for t in range(9))  # 004: L = sum_t L_t
    torch.testing.assert_close(total, hand)
    masked = targets.clone()
    masked[0, 3:] = -100
    want = sum(F.cross_entropy(logits[:, t], masked[:, t]) for t in range(9))
    torch.testing.assert_close(sequence_cross_entropy(logits, masked, reduction="sum"), want)
    with pytest.raises(ConfigError, match="'mean'"):
        sequence_cross_entropy(logits, targets, reduction="avg")


# ----------------------------------------------------------------------------- truncated BPTT


def test_truncated_forward_keeps_values_and_cuts_gradients_at_chunk_starts():
    model, T, k = Tagger(), 11, 3
    x = torch.randn(2, T, 3, dtype=D64, requires_grad=True)
    out, state = truncated_forward(model, x, k)
    full, full_state = model(x)
    torch.testing.assert_close(out, full, atol=1e-12, rtol=0)  # the cut changes gradients, not values
    torch.testing.assert_close(state, full_state, atol=1e-12, rtol=0)
    for t in range(T):
        (g,) = torch.autograd.grad(out[:, t].sum(), x, retain_graph=True)
        influence = g.abs().sum(dim=(0, 2))  # |d loss_t / d x_s| for every s
        start = (t // k) * k
        assert (influence[:start] == 0).all(), t  # includes s = t - k - 1: nothing flows beyond the cut
        assert (influence[start:t + 1] > 0).all(), t
        assert (influence[t + 1:] == 0).all(), t  # and nothing from the future
    # without truncation the first input reaches the last output
    (g,) = torch.autograd.grad(full[:, -1].sum(), x)
    assert g[:, 0].abs().sum() > 0


def test_detach_state_keeps_structure_and_values():
    h, c = torch.randn(2, 3, requires_grad=True) * 2, torch.randn(2, 3, requires_grad=True) * 2
    got = detach_state((h, c))
    assert isinstance(got, tuple) and not got[0].requires_grad and torch.equal(got[1], c)
    assert detach_state(None) is None


@pytest.mark.parametrize("k", [12, 50])
def test_tbptt_with_k_at_least_t_is_one_step_of_full_bptt(k):
    torch.manual_seed(1)
    model = Tagger()
    twin = copy.deepcopy(model)
    x, y = torch.randn(2, 12, 3, dtype=D64), torch.randn(2, 12, 2, dtype=D64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = train_tbptt(model, x, y, F.mse_loss, opt, k=k)
    assert len(res.losses) == 1
    opt2 = torch.optim.SGD(twin.parameters(), lr=0.1)
    loss = F.mse_loss(twin(x)[0], y)
    loss.backward()
    opt2.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, atol=1e-14, rtol=0)
    assert res.losses[0] == pytest.approx(loss.item())


def test_tbptt_updates_every_k_steps_and_carries_the_state():
    torch.manual_seed(2)
    model = Tagger()
    twin = copy.deepcopy(model)
    x, y = torch.randn(2, 10, 3, dtype=D64), torch.randn(2, 10, 2, dtype=D64)
    res = train_tbptt(model, x, y, F.mse_loss, torch.optim.SGD(model.parameters(), lr=0.1), k=4)
    assert len(res.losses) == 3 and not res.state.requires_grad  # chunks [0,4), [4,8), [8,10)
    opt, state = torch.optim.SGD(twin.parameters(), lr=0.1), None  # the same loop written out
    for s, e in ((0, 4), (4, 8), (8, 10)):
        out, state = twin(x[:, s:e], state)
        opt.zero_grad()
        F.mse_loss(out, y[:, s:e]).backward()
        opt.step()
        state = state.detach()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, atol=1e-14, rtol=0)


def test_tbptt_clips_the_global_gradient_norm():
    torch.manual_seed(3)
    model = Tagger()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(2, 6, 3, dtype=D64), 100 * torch.randn(2, 6, 2, dtype=D64)  # a huge gradient
    res = train_tbptt(model, x, y, F.mse_loss, torch.optim.SGD(model.parameters(), lr=1.0), k=6, clip_norm=0.5)
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert res.grad_norms[0] > 10  # the norm before clipping is reported
    assert step.item() == pytest.approx(0.5, rel=1e-5)  # the update has length lr * clip_norm


def test_bad_truncation_length_is_explained():
    with pytest.raises(ConfigError, match="positive int"):
        truncated_forward(Tagger(), torch.randn(1, 4, 3, dtype=D64), k=0)


# ----------------------------------------------------------------------------- vanishing and exploding


@pytest.mark.parametrize("rho", [0.9, 1.1])
def test_linear_rnn_with_scaled_orthogonal_weights_gives_rho_to_the_t(rho):
    # 004: the gradient scales with the largest singular value of W_hh; for W_hh = rho Q it is rho^(T - t) exactly.
    rnn = RNN(3, 8, nonlinearity="identity", dtype=D64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=D64))
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(rho * q)
    T = 30
    norms = gradient_norm_vs_distance(rnn, T)
    torch.testing.assert_close(norms, rho ** torch.arange(T, -1, -1, dtype=D64), atol=0, rtol=1e-10)


def decay_rate(norms, near=10, far=40):
    T = len(norms) - 1
    return float((norms[T - far] / norms[T - near]) ** (1 / (far - near)))


def test_tanh_rnn_with_small_weights_vanishes_geometrically_and_lstm_far_slower():
    T = 40
    for seed in range(3):
        rnn = gradient_norm_vs_distance("rnn", T, weight_scale=0.5, seed=seed)
        distance = torch.arange(T, -1, -1, dtype=D64)
        assert (rnn <= 0.5 ** distance * (1 + 1e-10)).all()  # |tanh'| <= 1: ||dh_T/dh_t|| <= ||W_hh||^(T-t)
        lstm = gradient_norm_vs_distance("lstm", T, weight_scale=0.5, forget_bias=1.0, seed=seed)
        lstm3 = gradient_norm_vs_distance("lstm", T, weight_scale=0.5, forget_bias=3.0, seed=seed)
        # measured over seeds 0-5: RNN 0.22-0.29 per step, LSTM (forget bias 1) 0.77-0.80, (bias 3) 0.97-1.0
        assert decay_rate(rnn) < 0.4
        assert decay_rate(lstm) > 0.7 and decay_rate(lstm3) > 0.93
        assert lstm[T - 20] > 1e6 * rnn[T - 20]  # measured 6e7-9e10
        assert rnn[T] == 1.0 and lstm[T] == pytest.approx(1.0)


def test_tanh_rnn_with_large_weights_can_explode_at_short_range():
    norms = gradient_norm_vs_distance("rnn", 20, weight_scale=1.5, input_scale=0.01)
    assert norms[19] > 1.2  # near the linear regime one step multiplies the norm by about 1.5


def test_gradient_norm_needs_a_one_layer_recurrent_layer():
    with pytest.raises(ConfigError, match="one-layer"):
        gradient_norm_vs_distance(RNN(3, 4, num_layers=2), 5)
    with pytest.raises(ConfigError, match="cell must be"):
        gradient_norm_vs_distance("transformer", 5)
