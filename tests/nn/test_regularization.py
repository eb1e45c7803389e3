"""Regularisation (Notes: 003 §2.3.1-2.3.2, 000 §2.1, 002 §1.4.4): penalties against torch's weight decay,
parameter groups, early stopping on the notes' example sequence."""

import copy
import math

import pytest
import torch
from torch import nn

from dlkit.errors import ConfigError
from dlkit.models.classification.mlp import MLP
from dlkit.nn.regularization import (
    EarlyStopping,
    decoupled_weight_decay_,
    l1_penalty,
    l2_penalty,
    weight_decay_param_groups,
)


def _data(seed=0, n=16, d=5, k=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, k, generator=g, dtype=torch.float64)


def test_l2_penalty_matches_the_notes_example_in_both_conventions():
    w = torch.tensor([1.0, 2.0, 3.0])
    assert l2_penalty([w], 0.1, half=False).item() == pytest.approx(1.4)  # notes: lam * sum w^2 (003 §A)
    assert l2_penalty(w, 0.1).item() == pytest.approx(0.7)  # default: lam / 2 * sum w^2
    assert l2_penalty([w, torch.ones(2, 2)], 1.0, half=False).item() == pytest.approx(14 + 4)


def test_l2_penalty_gradients_are_lam_w_halved_and_2_lam_w_in_the_notes_form():
    w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    (g_half,) = torch.autograd.grad(l2_penalty([w], 0.1), w)
    (g_notes,) = torch.autograd.grad(l2_penalty([w], 0.1, half=False), w)
    torch.testing.assert_close(g_half, 0.1 * w.detach())
    torch.testing.assert_close(g_notes, 2 * 0.1 * w.detach())


def test_loss_plus_l2_penalty_trains_exactly_like_sgd_coupled_weight_decay():
    x, y = _data()
    torch.manual_seed(0)
    model_a = nn.Linear(5, 3).double()
    model_b = copy.deepcopy(model_a)
    lam, lr = 0.3, 0.1
    opt_a = torch.optim.SGD(model_a.parameters(), lr=lr)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=lr, weight_decay=lam)  # grad += lam * w
    for _ in range(5):
        loss_a = nn.functional.mse_loss(model_a(x), y) + l2_penalty(model_a.parameters(), lam)
        opt_a.zero_grad()
        loss_a.backward()
        opt_a.step()
        loss_b = nn.functional.mse_loss(model_b(x), y)
        opt_b.zero_grad()
        loss_b.backward()
        opt_b.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-12)


def test_l1_penalty_value_and_subgradient_are_lam_abs_and_lam_sign():
    w = torch.tensor([1.5, -2.0, 0.5], requires_grad=True)
    pen = l1_penalty([w], 0.2)
    assert pen.item() == pytest.approx(0.2 * 4.0)
    (g,) = torch.autograd.grad(pen, w)
    torch.testing.assert_close(g, torch.tensor([0.2, -0.2, 0.2]))


def test_decoupled_decay_then_adam_equals_torch_adamw_step():
    x, y = _data(1)
    torch.manual_seed(1)
    model_a = nn.Linear(5, 3).double()
    model_b = copy.deepcopy(model_a)
    lr, wd = 0.05, 0.2
    opt_a = torch.optim.Adam(model_a.parameters(), lr=lr)
    opt_b = torch.optim.AdamW(model_b.parameters(), lr=lr, weight_decay=wd)
    for _ in range(4):
        for model, opt in ((model_a, opt_a), (model_b, opt_b)):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
        decoupled_weight_decay_(model_a.parameters(), lr, wd)  # torch AdamW decays before its Adam update
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-12)


def test_notes_form_of_decoupled_decay_uses_unscaled_lambda():
    w = torch.tensor([2.0, -4.0])
    decoupled_weight_decay_([w], lr=0.1, lam=0.25, scale_by_lr=False)  # theta - lam theta (002 §1.4.4)
    torch.testing.assert_close(w, torch.tensor([1.5, -3.0]))
    v = torch.tensor([2.0, -4.0])
    decoupled_weight_decay_([v], lr=0.1, lam=2.5)  # torch: theta - lr lam theta; lam_notes = lr lam_torch
    torch.testing.assert_close(v, w)


def test_param_groups_decay_only_the_linear_weights_of_an_mlp_with_batchnorm():
    model = MLP(4, [8, 8], 2, batchnorm=True)
    decay, no_decay = weight_decay_param_groups(model, 0.1)
    linear_weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    others = [p for p in model.parameters() if all(p is not w for w in linear_weights)]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(w) for w in linear_weights}
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in others} and len(others) == 3 + 2 * 2


def test_param_groups_in_torch_sgd_shrink_weights_and_leave_biases_and_norms_alone():
    model = MLP(4, [8], 2, batchnorm=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(weight_decay_param_groups(model, 0.5), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        is_linear_weight = p.ndim == 2
        expected = before[name] * (1 - 0.1 * 0.5) if is_linear_weight else before[name]
        torch.testing.assert_close(p.detach(), expected, msg=name)


class _RMSNormLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 3)
        self.scale = nn.Parameter(torch.ones(3))
        self.norm_layer = _RMSNormLike()
        self.frozen = nn.Parameter(torch.ones(3, 3), requires_grad=False)
        self.tied = self.proj  # the same parameters reachable twice


def test_param_groups_match_names_and_norm_classes_and_skip_frozen_and_duplicates():
    net = _Net()
    decay, no_decay = weight_decay_param_groups(net, 0.1, skip_1d=False)
    assert {id(p) for p in decay["params"]} == {id(net.proj.weight), id(net.scale)} and len(decay["params"]) == 2
    assert {id(p) for p in no_decay["params"]} == {id(net.proj.bias), id(net.norm_layer.weight)}
    decay, no_decay = weight_decay_param_groups(net, 0.1)  # timm default: every 1-D parameter is skipped
    assert [id(p) for p in decay["params"]] == [id(net.proj.weight)]
    assert len(no_decay["params"]) == 3
    with pytest.raises(ConfigError, match="weight_decay must be a finite number >= 0"):
        weight_decay_param_groups(net, -1.0)


def test_early_stopping_on_the_notes_sequence_stops_at_index_4_with_best_index_2():
    stopper = EarlyStopping(patience=2)
    decisions = [stopper.step(v) for v in [1.0, 0.8, 0.7, 0.75, 0.8, 0.9]]
    assert decisions == [False, False, False, False, True, True]
    assert stopper.best == 0.7 and stopper.best_step == 2 and stopper.should_stop


def test_early_stopping_max_mode_min_delta_nan_and_zero_patience():
    acc = EarlyStopping(patience=1, mode="max")
    assert [acc.step(v) for v in [0.5, 0.6, 0.6]] == [False, False, True]
    assert acc.best == 0.6 and acc.best_step == 1
    delta = EarlyStopping(patience=3, min_delta=0.1)
    for v in [1.0, 0.95, 0.91, 0.85]:  # only 0.85 beats 1.0 - 0.1
        delta.step(v)
    assert delta.best == 0.85 and delta.best_step == 3 and delta.num_bad == 0
    nan = EarlyStopping(patience=1)
    assert [nan.step(v) for v in [1.0, math.nan]] == [False, True]
    zero = EarlyStopping(patience=0)
    assert [zero.step(v) for v in [2.0, 1.0, 1.5]] == [False, False, True]


def test_early_stopping_restores_the_weights_of_the_best_epoch():
    model = nn.Linear(2, 1)
    stopper = EarlyStopping(patience=2)
    kept = None
    for epoch, val in enumerate([0.9, 0.5, 0.6, 0.7]):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        if epoch == 1:
            kept = copy.deepcopy(model.state_dict())
        stopper.step(val, model)
    stopper.restore_best(model)
    torch.testing.assert_close(model.state_dict(), kept)


def test_early_stopping_explains_bad_arguments():
    with pytest.raises(ConfigError, match="mode must be one of"):
        EarlyStopping(mode="lowest")
    with pytest.raises(ConfigError, match="patience must be an integer >= 0"):
        EarlyStopping(patience=-1)
    with pytest.raises(ConfigError, match="pass the model"):
        EarlyStopping().restore_best(nn.Linear(1, 1))
