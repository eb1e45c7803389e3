"""Gradient descent with full batches, mini-batches and single samples (Notes: 002 §1.1 with its erratum,
000 §2.1, 003 §2.2.3): batching, hand-computed least-squares updates, convergence to numpy's lstsq."""

import numpy as np
import pytest
import torch
from torch import nn

from dlkit.errors import ConfigError
from dlkit.techniques.gradient_descent import (
    batching_mode,
    gradient_descent,
    least_squares,
    minibatch_indices,
    num_batches,
    train_linear_regression,
)


def _problem(n=10, d=3, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_true = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64)[:d]
    y = x @ w_true + 0.3 + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def _linear(w0, b0):
    model = nn.Linear(len(w0), 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([w0], dtype=torch.float64))
        model.bias.fill_(b0)
    return model


def _mse(pred, t):
    return ((pred.squeeze(1) - t) ** 2).mean()


def test_n10_b3_gives_four_batches_covering_every_sample_once():
    assert num_batches(10, 3) == 4  # U = ceil(N / B); the notes' u = 0..U would make 5 (erratum)
    batches = minibatch_indices(10, 3, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    unshuffled = minibatch_indices(10, 3, shuffle=False)
    assert [b.tolist() for b in unshuffled] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]  # samples B u .. B(u+1)-1


def test_batch_size_names_the_three_modes_of_the_notes():
    assert batching_mode(10, 10) == "full-batch"
    assert batching_mode(10, 1) == "online"
    assert batching_mode(10, 4) == "mini-batch"


def test_full_batch_epoch_equals_one_hand_computed_gradient_step_on_least_squares():
    x, y = _problem()
    w0, b0, lr = [0.2, -0.1, 0.4], 0.05, 0.1
    model = _linear(w0, b0)
    hist = gradient_descent(model, _mse, x, y, batch_size=10, lr=lr, epochs=1)
    X, Y, w = x.numpy(), y.numpy(), np.array(w0)
    r = X @ w + b0 - Y  # L = mean(r^2): dL/dw = 2/N X^T r, dL/db = 2/N sum r
    w1 = w - lr * 2 / len(Y) * X.T @ r
    b1 = b0 - lr * 2 / len(Y) * r.sum()
    np.testing.assert_allclose(model.weight.detach().numpy()[0], w1, rtol=1e-12)
    np.testing.assert_allclose(model.bias.item(), b1, rtol=1e-12)
    assert hist.steps == 1 and hist.mode == "full-batch"
    assert hist.loss[0] == pytest.approx(np.mean(r**2))
    assert hist.loss[1] == pytest.approx(np.mean((X @ w1 + b1 - Y) ** 2))


def test_minibatch_epoch_equals_the_hand_loop_over_the_same_shuffled_batches():
    x, y = _problem()
    w0, b0, lr = [0.0, 0.0, 0.0], 0.0, 0.2
    model = _linear(w0, b0)
    gradient_descent(model, _mse, x, y, batch_size=3, lr=lr, epochs=2, generator=torch.Generator().manual_seed(7))
    X, Y, w, b = x.numpy(), y.numpy(), np.array(w0), b0
    gen = torch.Generator().manual_seed(7)
    for _ in range(2):
        for idx in minibatch_indices(10, 3, gen):
            xb, yb = X[idx.numpy()], Y[idx.numpy()]
            r = xb @ w + b - yb
            w, b = w - lr * 2 / len(yb) * xb.T @ r, b - lr * 2 / len(yb) * r.sum()  # mean over the batch
    np.testing.assert_allclose(model.weight.detach().numpy()[0], w, rtol=1e-12)
    np.testing.assert_allclose(model.bias.item(), b, rtol=1e-12)


def test_updates_per_epoch_are_1_ceil_n_over_b_and_n():
    x, y = _problem(n=12)
    for batch_size, per_epoch in [(12, 1), (5, 3), (1, 12)]:
        hist = gradient_descent(_linear([0.0] * 3, 0.0), _mse, x, y, batch_size, lr=0.01, epochs=3)
        assert hist.steps == 3 * per_epoch == len(hist.batch_loss)
        assert len(hist.loss) == len(hist.time) == 4


def test_all_three_modes_reach_the_least_squares_solution_of_numpy():
    x, y = _problem(n=32)
    X1 = np.c_[x.numpy(), np.ones(32)]
    ref = np.linalg.lstsq(X1, y.numpy(), rcond=None)[0]
    w, b = least_squares(x, y)
    np.testing.assert_allclose(np.r_[w.numpy(), b.item()], ref, rtol=1e-10)
    for batch_size, lr, epochs in [(32, 0.3, 200), (8, 0.05, 150), (1, 0.005, 100)]:
        model = _linear([0.0] * 3, 0.0)
        hist = gradient_descent(model, _mse, x, y, batch_size, lr, epochs, torch.Generator().manual_seed(0))
        got = np.r_[model.weight.detach().numpy()[0], model.bias.item()]
        np.testing.assert_allclose(got, ref, atol=2e-2, err_msg=f"batch_size={batch_size}")
        assert hist.loss[-1] < 1.1 * np.mean((X1 @ ref - y.numpy()) ** 2)


def test_full_batch_loss_decreases_monotonically_for_a_small_step():
    x, y = _problem(n=20)
    hist = gradient_descent(_linear([1.0, 1.0, 1.0], 1.0), _mse, x, y, lr=0.05, epochs=30)
    assert all(b < a for a, b in zip(hist.loss, hist.loss[1:]))


def test_wall_time_is_cumulative_and_zero_when_not_recorded():
    x, y = _problem()
    hist = gradient_descent(_linear([0.0] * 3, 0.0), _mse, x, y, 2, lr=0.01, epochs=3)
    assert hist.time[0] == 0.0 and all(b >= a for a, b in zip(hist.time, hist.time[1:])) and hist.time[-1] > 0
    quiet = gradient_descent(_linear([0.0] * 3, 0.0), _mse, x, y, 2, lr=0.01, epochs=3, record_time=False)
    assert quiet.time == [0.0] * 4


def test_train_linear_regression_fits_the_closed_form_solution():
    x, y = _problem(n=40, noise=0.0)
    model, hist = train_linear_regression(x, y, batch_size=10, lr=0.1, epochs=100,
                                          generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.weight.detach()[0], torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64))
    assert model.bias.item() == pytest.approx(0.3) and hist.loss[-1] < 1e-12


def test_bad_batch_sizes_and_shapes_are_explained():
    x, y = _problem()
    with pytest.raises(ConfigError, match=r"batch_size must be an integer in \[1, N=10\]; got 0"):
        gradient_descent(_linear([0.0] * 3, 0.0), _mse, x, y, batch_size=0)
    with pytest.raises(ConfigError, match="same number of samples"):
        gradient_descent(_linear([0.0] * 3, 0.0), _mse, x, y[:5])
    with pytest.raises(ConfigError, match="batch_size"):
        minibatch_indices(10, 11)
