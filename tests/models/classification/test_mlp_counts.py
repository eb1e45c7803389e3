"""MLP parameter counts (Notes: 000 §1.2.1: a dense layer has S_in * S_out + S_out parameters) and the notes'
shallow / deep distinction (000 §1.2: shallow = one hidden layer, deep = more than one)."""

import pytest
import torch
from torch import nn

from dlkit import create_model
from dlkit.models.classification.mlp import MLP


def _notes_count(widths):
    return sum(s_in * s_out + s_out for s_in, s_out in zip(widths[:-1], widths[1:]))


@pytest.mark.parametrize(
    "widths",
    [[3, 2], [784, 128, 10], [64, 128, 64, 10], [10, 7, 7, 7, 7, 7, 7, 7, 3], [3072, 4096, 4096, 4096, 1000]],
)
def test_parameter_count_by_the_notes_formula_equals_counting_parameters(widths):
    with torch.device("meta"):  # no memory for the 50,246,632-parameter case
        model = MLP(widths[0], widths[1:-1], widths[-1])
    assert sum(p.numel() for p in model.parameters()) == _notes_count(widths) == model.num_params_formula()
    per_layer = [sum(p.numel() for p in m.parameters()) for m in model.modules() if isinstance(m, nn.Linear)]
    assert per_layer == [a * b + b for a, b in zip(widths[:-1], widths[1:])]


def test_registered_mlps_have_the_hand_computed_counts():
    # 784-256-128-10: 200,960 + 32,896 + 1,290; 64-128-64-10: 8,320 + 8,256 + 650
    assert sum(p.numel() for p in create_model("mlp").parameters()) == 235_146
    assert sum(p.numel() for p in create_model("mlp_digits").parameters()) == 17_226


def test_count_grows_by_s_squared_plus_s_per_extra_hidden_layer_of_width_s():
    counts = [sum(p.numel() for p in MLP(20, [16] * depth, 5).parameters()) for depth in range(1, 6)]
    assert [b - a for a, b in zip(counts, counts[1:])] == [16 * 16 + 16] * 4


@pytest.mark.parametrize(("hidden", "deep"), [([], False), ([32], False), ([32, 32], True), ([8, 8, 8], True)])
def test_shallow_means_one_hidden_layer_and_deep_more_than_one(hidden, deep):
    model = MLP(6, hidden, 2)
    linear_layers = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert model.num_hidden_layers == len(hidden) == linear_layers - 1
    assert model.is_deep is deep
