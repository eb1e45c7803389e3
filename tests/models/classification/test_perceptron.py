"""The perceptron and its learning rules (Notes: 000 §1.1-1.2, 003 §1.1-1.2.1)."""

import itertools

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.models.classification.perceptron import Perceptron, logic_gate, step, xor_network

X = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)))
TRUTH = {
    "and": [0, 0, 0, 1],
    "or": [0, 1, 1, 1],
    "nand": [1, 1, 1, 0],
    "nor": [1, 0, 0, 0],
    "xor": [0, 1, 1, 0],
}


def test_input_on_boundary_gives_1_in_01_and_minus1_in_pm1_convention():
    assert step(torch.tensor([0.0]), "01").item() == 1.0
    assert step(torch.tensor([0.0]), "pm1").item() == -1.0
    for conv, expected in (("01", 1.0), ("pm1", -1.0)):
        p = Perceptron(2, conv, torch.tensor([1.0, 1.0]), -1.0)
        assert p.net_input(torch.tensor([0.5, 0.5])).item() == 0.0
        assert p(torch.tensor([[0.5, 0.5]])).item() == expected
    torch.testing.assert_close(step(torch.tensor([-2.0, 3.0]), "pm1"), torch.tensor([-1.0, 1.0]))


@pytest.mark.parametrize("gate", ["and", "or", "nand", "nor"])
def test_hand_set_gates_truth_tables(gate):
    assert logic_gate(gate)(X).tolist() == TRUTH[gate]
    pm1 = logic_gate(gate, "pm1")(X)
    assert pm1.tolist() == [2 * v - 1 for v in TRUTH[gate]]


def test_folded_bias_gives_identical_outputs():
    p = Perceptron(2, "pm1", torch.tensor([1.0, 1.0]), -1.5)
    x1 = torch.cat([torch.ones(4, 1), X], 1)
    torch.testing.assert_close(step(x1 @ p.folded_weight, "pm1"), p(X))


@pytest.mark.parametrize("rule", ["perceptron", "hebbian"])
@pytest.mark.parametrize("convention", ["01", "pm1"])
@pytest.mark.parametrize("gate", ["nand", "and", "or"])
def test_learning_converges_on_linearly_separable_gates(gate, convention, rule):
    t = torch.tensor(TRUTH[gate], dtype=torch.float32)
    if convention == "pm1":
        t = 2 * t - 1
    for seed in range(5):
        p = Perceptron(2, convention)
        history = p.fit(
            X, t, rule=rule, lr=0.5, max_epochs=100, generator=torch.Generator().manual_seed(seed)
        )
        assert history[-1] == 0 and len(history) < 100
        assert torch.equal(p(X), t)


@pytest.mark.parametrize("rule", ["perceptron", "hebbian"])
def test_xor_never_reaches_100_percent(rule):
    t = torch.tensor(TRUTH["xor"], dtype=torch.float32)
    p = Perceptron(2, "01")
    history = p.fit(X, t, rule=rule, lr=0.5, max_epochs=1000, generator=torch.Generator().manual_seed(0))
    assert len(history) == 1000 and min(history) > 0
    assert (p(X) == t).float().mean().item() < 1.0


def test_xor_is_impossible_for_any_single_perceptron_on_a_weight_grid():
    grid = torch.linspace(-3, 3, 25)
    w1, w2, b = torch.meshgrid(grid, grid, grid, indexing="ij")
    z = X[:, 0, None, None, None] * w1 + X[:, 1, None, None, None] * w2 + b  # [4, 25, 25, 25]
    y = step(z, "01")
    target = torch.tensor(TRUTH["xor"], dtype=torch.float32)[:, None, None, None]
    assert not (y == target).all(0).any()
    assert (y == torch.tensor(TRUTH["nand"], dtype=torch.float32)[:, None, None, None]).all(0).any()


def test_correctly_classified_sample_leaves_weights_bit_identical():
    p = logic_gate("and", "pm1")
    w, b = p.weight.clone(), p.bias.clone()
    hist = p.fit(X, torch.tensor([-1.0, -1.0, -1.0, 1.0]), rule="hebbian", init="keep")
    assert hist == [0] and torch.equal(p.weight, w) and torch.equal(p.bias, b)


def test_hebbian_update_is_eta_x_t_on_a_mistake():
    p = Perceptron(2, "pm1", torch.tensor([0.0, 0.0]), 0.0)  # predicts -1 everywhere
    p.fit(torch.tensor([[2.0, 3.0]]), torch.tensor([1.0]), rule="hebbian", lr=0.1, max_epochs=1, init="keep")
    torch.testing.assert_close(p.weight, torch.tensor([0.2, 0.3]))
    torch.testing.assert_close(p.bias, torch.tensor(0.1))


def test_hand_set_xor_network_truth_table():
    net = xor_network()
    assert net(X)[:, 0].tolist() == TRUTH["xor"]
    assert net.num_hidden_layers == 1  # shallow: exactly one hidden layer (000 §1.2)


def test_bad_input_raises_config_error():
    with pytest.raises(ConfigError, match="convention"):
        Perceptron(2, "binary")
    with pytest.raises(ConfigError, match="targets"):
        Perceptron(2, "pm1").fit(X, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    with pytest.raises(ConfigError, match="rule"):
        Perceptron(2).fit(X, torch.tensor([0.0, 1.0, 1.0, 0.0]), rule="delta")
    with pytest.raises(ConfigError, match=r"inputs \[N, 2\]"):
        Perceptron(2)(torch.zeros(3, 3))
    with pytest.raises(ConfigError, match="xor_network"):
        logic_gate("xor")
