"""AdaGrad (Notes: 002 §1.4.1) against torch.optim.Adagrad and the notes' claims."""

import itertools

import pytest
import torch
from optim_harness import assert_same, continue_training, train_together

from dlkit.errors import ConfigError
from dlkit.optim import Adagrad


@pytest.mark.parametrize("lr_decay,initial_accumulator_value,weight_decay,maximize",
                         list(itertools.product([0.0, 1e-2], [0.0, 0.1], [0.0, 1e-2], [False, True])))
def test_adagrad_matches_torch_for_every_option(lr_decay, initial_accumulator_value, weight_decay, maximize):
    kw = dict(lr=0.1, lr_decay=lr_decay, initial_accumulator_value=initial_accumulator_value,
              weight_decay=weight_decay, maximize=maximize, eps=1e-8)
    runs = train_together({
        "torch": lambda p: torch.optim.Adagrad(p, **kw, foreach=False),
        "foreach": lambda p: Adagrad(p, **kw),
        "loop": lambda p: Adagrad(p, **kw, foreach=False),
        "fused": lambda p: Adagrad(p, **kw, fused=True),
    })
    assert_same(runs["foreach"], runs["torch"])
    assert_same(runs["loop"], runs["torch"])
    assert_same(runs["fused"], runs["torch"], tol=1e-5)  # the fused kernel rounds differently (FMA)


def test_adagrad_state_dict_is_interchangeable_with_torch():
    kw = dict(lr=0.1, lr_decay=1e-2, initial_accumulator_value=0.1)
    runs = train_together({"torch": lambda p: torch.optim.Adagrad(p, **kw), "ours": lambda p: Adagrad(p, **kw)},
                          steps=30)
    (tm, to), (om, oo) = runs["torch"], runs["ours"]
    ours_from_torch, torch_from_ours = Adagrad(om.parameters(), lr=1.0), torch.optim.Adagrad(tm.parameters(), lr=1.0)
    ours_from_torch.load_state_dict(to.state_dict())
    torch_from_ours.load_state_dict(oo.state_dict())
    runs = {"ours": (om, ours_from_torch), "torch": (tm, torch_from_ours)}
    continue_training(runs, 30, start=30)
    assert_same(runs["ours"], runs["torch"])
    assert float(ours_from_torch.state[next(om.parameters())]["step"]) == 60


def test_adagrad_first_step_moves_each_coordinate_by_lr():
    # s1 = g^2, so the step is lr g / (|g| + eps) = lr sign(g), whatever the gradient's scale
    w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    w.grad = torch.tensor([1e-3, -2.0, 50.0, -0.1], dtype=torch.float64)
    Adagrad([w], lr=0.01).step()
    torch.testing.assert_close(w.detach(), -0.01 * w.grad.sign(), rtol=1e-6, atol=0)


def test_adagrad_effective_lr_never_increases():
    # 002 §1.4.1: s only grows, so lr / (sqrt(s) + eps) only falls
    runs = train_together({"ours": lambda p: Adagrad(p, lr=0.1)}, steps=1)
    model, opt = runs["ours"]
    last = [opt.param_groups[0]["lr"] / (opt.state[p]["sum"].sqrt() + 1e-10) for p in model.parameters()]
    for t in range(1, 20):
        continue_training(runs, 1, start=t)
        now = [opt.param_groups[0]["lr"] / (opt.state[p]["sum"].sqrt() + 1e-10) for p in model.parameters()]
        assert all(bool((n <= l).all()) for n, l in zip(now, last))
        last = now


def test_adagrad_rejects_negative_values():
    with pytest.raises(ConfigError, match="eps"):
        Adagrad([torch.zeros(1, requires_grad=True)], eps=-1.0)
