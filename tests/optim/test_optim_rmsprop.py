"""RMSProp (Notes: 002 §1.4.2) against torch.optim.RMSprop and the notes' first-step value."""

import itertools
import math

import pytest
import torch
from optim_harness import assert_same, continue_training, train_together

from dlkit.errors import ConfigError
from dlkit.optim import RMSprop


@pytest.mark.parametrize("momentum,centered,weight_decay,maximize",
                         list(itertools.product([0.0, 0.9], [False, True], [0.0, 1e-2], [False, True])))
def test_rmsprop_matches_torch_for_every_option(momentum, centered, weight_decay, maximize):
    kw = dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=momentum, centered=centered, weight_decay=weight_decay,
              maximize=maximize)
    runs = train_together({
        "torch": lambda p: torch.optim.RMSprop(p, **kw, foreach=False),
        "foreach": lambda p: RMSprop(p, **kw),
        "loop": lambda p: RMSprop(p, **kw, foreach=False),
    })
    assert_same(runs["foreach"], runs["torch"])
    assert_same(runs["loop"], runs["torch"])


def test_rmsprop_state_dict_is_interchangeable_with_torch():
    kw = dict(lr=0.01, momentum=0.9, centered=True)
    runs = train_together({"torch": lambda p: torch.optim.RMSprop(p, **kw), "ours": lambda p: RMSprop(p, **kw)},
                          steps=30)
    (tm, to), (om, oo) = runs["torch"], runs["ours"]
    ours_from_torch, torch_from_ours = RMSprop(om.parameters()), torch.optim.RMSprop(tm.parameters())
    ours_from_torch.load_state_dict(to.state_dict())
    torch_from_ours.load_state_dict(oo.state_dict())
    assert ours_from_torch.param_groups[0]["centered"] and torch_from_ours.param_groups[0]["momentum"] == 0.9
    runs = {"ours": (om, ours_from_torch), "torch": (tm, torch_from_ours)}
    continue_training(runs, 30, start=30)
    assert_same(runs["ours"], runs["torch"])


@pytest.mark.parametrize("foreach", [True, False])
def test_rmsprop_first_step_is_lr_g_over_sqrt_one_minus_beta_abs_g(foreach):
    # s1 = (1 - beta) g^2, so the step is lr g / (sqrt(1 - beta) |g| + eps), about 3.162 lr sign(g) for beta = 0.9
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    w.grad = torch.tensor([0.5, -4.0, 1e-2], dtype=torch.float64)
    RMSprop([w], lr=0.01, alpha=0.9, eps=1e-8, foreach=foreach).step()
    g = w.grad
    torch.testing.assert_close(w.detach(), -0.01 * g / (math.sqrt(0.1) * g.abs() + 1e-8), rtol=1e-12, atol=0)
    torch.testing.assert_close(w.detach(), -0.01 * math.sqrt(10) * g.sign(), rtol=1e-5, atol=0)


def test_rmsprop_rejects_alpha_above_one():
    with pytest.raises(ConfigError, match="alpha"):
        RMSprop([torch.zeros(1, requires_grad=True)], alpha=1.5)
