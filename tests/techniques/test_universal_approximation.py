"""Universal approximation by a shallow network (Notes: 000 §1.2 "Expressivity", 003 §1.2.2): a hand-built
one-hidden-layer network of steps / sigmoids approximates a continuous f: R -> [0, 1], with the sup error
bounded by the hand-derived L h / 2 and falling as units are added."""

import math

import pytest
import torch
from torch import nn

from dlkit.errors import ConfigError
from dlkit.models.classification.mlp import dense_params
from dlkit.techniques.universal_approximation import Step, bump_network, fit_shallow_network, max_error


def f(x):  # the notes' setting: a continuous f: R -> [0, 1]; Lipschitz constant L = 1/2
    return (torch.sin(x) + 1) / 2


A, B = -math.pi, math.pi


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only spin when the 2 cores are shared (500 Adam steps: 0.7 s vs 9 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_step_network_error_is_below_the_hand_bound_l_h_over_2_for_every_width():
    for n in (4, 16, 64, 256):
        h = (B - A) / n
        assert max_error(bump_network(f, A, B, n, "step"), f, A, B) <= 0.5 * h / 2 + 1e-12


def test_max_error_falls_as_the_number_of_units_grows():
    for activation in ("step", "sigmoid"):
        errors = [max_error(bump_network(f, A, B, n, activation), f, A, B) for n in (8, 16, 32, 64, 128)]
        assert all(b < a for a, b in zip(errors, errors[1:])), (activation, errors)
        assert errors[-1] < errors[0] / 10  # first order: doubling the units roughly halves the error


def test_sigmoid_network_reaches_eps_0_05_with_64_units_but_not_with_4():
    assert max_error(bump_network(f, A, B, 64, "sigmoid"), f, A, B) < 0.05 / 2
    assert max_error(bump_network(f, A, B, 4, "sigmoid"), f, A, B) > 0.05


def test_step_network_is_exact_on_the_grid_and_is_one_hidden_layer():
    n = 10
    net = bump_network(f, A, B, n, "step")
    grid = torch.linspace(A, B, n + 1, dtype=torch.float64)
    torch.testing.assert_close(net(grid.unsqueeze(1)).squeeze(1), f(grid), rtol=0, atol=1e-12)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert len(linears) == 2 and isinstance(net[1], Step)  # shallow: exactly one hidden layer (000 §1.2)
    assert sum(p.numel() for p in net.parameters()) == dense_params(1, n) + dense_params(n, 1)


def test_step_unit_follows_the_perceptron_convention_at_zero():
    torch.testing.assert_close(Step()(torch.tensor([-1.0, 0.0, 2.0])), torch.tensor([0.0, 1.0, 1.0]))


def test_a_trained_shallow_tanh_network_fits_sine_with_mse_below_0_01():
    net, mse = fit_shallow_network(torch.sin, A, B, n_units=50, activation="tanh", steps=500,
                                   generator=torch.Generator().manual_seed(0))
    x = torch.linspace(A, B, 1000).unsqueeze(1)
    with torch.no_grad():
        assert float(((net(x) - torch.sin(x)) ** 2).mean()) < 1e-2 and mse < 1e-2


def test_bad_arguments_are_explained():
    with pytest.raises(ConfigError, match="a < b"):
        bump_network(f, 1.0, 0.0, 4)
    with pytest.raises(ConfigError, match="n_units must be a positive integer"):
        bump_network(f, A, B, 0)
    with pytest.raises(ConfigError, match="'step' or 'sigmoid'"):
        bump_network(f, A, B, 4, "relu")
