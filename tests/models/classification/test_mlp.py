"""MLP (Notes: 000 §1.2, §1.2.1): depth, shallow vs deep, the notes' parameter and FLOP formulas."""

import pytest
import torch
from torch import nn

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.classification.mlp import MLP, dense_flops, dense_params


def test_dense_layer_formulas_match_the_notes_example():
    assert dense_params(784, 128) == 100_480 == sum(p.numel() for p in nn.Linear(784, 128).parameters())
    assert dense_flops(784, 128) == 100_352


@pytest.mark.parametrize("hidden", [[], [7], [32, 16], [8, 8, 8, 8, 8]])
def test_parameter_count_equals_the_formula_for_any_depth(hidden):
    model = MLP(20, hidden, 3)
    assert sum(p.numel() for p in model.parameters()) == model.num_params_formula()
    assert model.flops_formula() == sum(a * b for a, b in zip([20, *hidden], [*hidden, 3]))
    assert model(torch.randn(5, 20)).shape == (5, 3)


def test_shallow_has_one_hidden_layer_deep_has_more():
    assert not MLP(4, [8], 2).is_deep and MLP(4, [8], 2).num_hidden_layers == 1
    assert MLP(4, [8, 8], 2).is_deep
    assert not MLP(4, [], 2).is_deep


def test_images_are_flattened_and_wrong_sizes_are_explained():
    model = create_model("mlp")
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match="expects 784 features per sample; got input of shape"):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ConfigError, match="positive"):
        MLP(4, [0], 2)


def test_dropout_and_batchnorm_options_build_the_right_layers():
    model = MLP(4, [8, 8], 2, dropout=0.5, batchnorm=True, activation="tanh")
    kinds = [type(m).__name__ for m in model.layers]
    assert kinds.count("Dropout") == 2 and kinds.count("BatchNorm1d") == 2


def test_mlp_learns_to_overfit_a_tiny_batch():
    torch.manual_seed(0)
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    model = MLP(10, [64], 3)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model(x).argmax(1) == y).all()
