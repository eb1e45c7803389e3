"""Adam, AMSGrad and AdamW (Notes: 002 §1.4.3, §1.4.4) against torch.optim and the notes' formulas.

The compiled update (`impl="compiled"`) is tested in test_optim_fast.py.
"""

import itertools
import math

import pytest
import torch
from optim_harness import assert_same, continue_training, train_together

from dlkit.errors import ConfigError
from dlkit.optim import Adam, AdamW


@pytest.mark.parametrize("cls,ref", [(Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW)], ids=["adam", "adamw"])
@pytest.mark.parametrize("amsgrad,weight_decay,maximize", list(itertools.product([False, True], [0.0, 0.05],
                                                                                  [False, True])))
def test_adam_and_adamw_match_torch_for_every_option(cls, ref, amsgrad, weight_decay, maximize):
    kw = dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, amsgrad=amsgrad, weight_decay=weight_decay, maximize=maximize)
    runs = train_together({
        "torch": lambda p: ref(p, **kw, foreach=False),
        "default": lambda p: cls(p, **kw),  # "auto": the foreach path on a run this small
        "foreach": lambda p: cls(p, **kw, impl="foreach"),
        "loop": lambda p: cls(p, **kw, foreach=False),
        "fused": lambda p: cls(p, **kw, fused=True),
    })
    assert_same(runs["default"], runs["torch"])
    assert_same(runs["foreach"], runs["torch"])
    assert_same(runs["loop"], runs["torch"])
    assert_same(runs["fused"], runs["torch"], tol=1e-5)  # the fused kernel rounds differently (FMA)


@pytest.mark.parametrize("cls,ref", [(Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW)], ids=["adam", "adamw"])
def test_adam_state_dict_is_interchangeable_with_torch(cls, ref):
    kw = dict(lr=0.01, amsgrad=True, weight_decay=0.05)
    runs = train_together({"torch": lambda p: ref(p, **kw), "ours": lambda p: cls(p, **kw)}, steps=30)
    (tm, to), (om, oo) = runs["torch"], runs["ours"]
    ours_from_torch, torch_from_ours = cls(om.parameters()), ref(tm.parameters())
    ours_from_torch.load_state_dict(to.state_dict())
    torch_from_ours.load_state_dict(oo.state_dict())
    assert torch_from_ours.param_groups[0]["decoupled_weight_decay"] == (cls is AdamW)
    runs = {"ours": (om, ours_from_torch), "torch": (tm, torch_from_ours)}
    continue_training(runs, 30, start=30)
    assert_same(runs["ours"], runs["torch"])


def test_adam_first_update_is_lr_per_coordinate_whatever_the_gradient_scale():
    # m^ = g and s^ = g^2 at t = 1, so the step is lr g / (|g| + eps)
    for scale in (1e-3, 1.0, 1e3):
        w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        w.grad = scale * torch.tensor([1.0, -3.0, 0.2], dtype=torch.float64)
        Adam([w], lr=0.01, eps=1e-12).step()
        torch.testing.assert_close(w.detach(), -0.01 * w.grad.sign(), rtol=1e-6, atol=0)


def _adam_formula(grads, theta, lr, b1, b2, eps, lam):
    """The notes' AdamW, step by step: theta <- theta - lr g^/(sqrt(s^) + eps) - lam theta."""
    m, s, path = torch.zeros_like(theta), torch.zeros_like(theta), []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        m_hat, s_hat = m / (1 - b1**t), s / (1 - b2**t)
        theta = theta - lr * m_hat / (s_hat.sqrt() + eps) - lam * theta
        path.append(theta)
    return path


@pytest.mark.parametrize("mode", ["foreach", "loop", "fused"])
def test_adamw_notes_form_follows_the_notes_formula(mode):
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(25)]
    theta0 = torch.randn(5, generator=gen, dtype=torch.float64)
    lr, lam = 0.05, 0.02
    path = _adam_formula(grads, theta0, lr, 0.9, 0.999, 1e-8, lam)
    w = theta0.clone().requires_grad_(True)
    opt = AdamW([w], lr=lr, weight_decay=lam, form="notes", foreach=mode == "foreach", fused=mode == "fused")
    for g, expected in zip(grads, path):
        w.grad = g.clone()
        opt.step()
        torch.testing.assert_close(w.detach(), expected, rtol=1e-12, atol=1e-12)


def test_adamw_notes_form_with_zero_gradient_only_decays():
    w = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    opt = AdamW([w], lr=0.1, weight_decay=0.05, form="notes")
    for t in range(1, 6):
        w.grad = torch.zeros(3, dtype=torch.float64)
        opt.step()
        torch.testing.assert_close(w.detach(), torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64) * 0.95**t)


def test_adamw_notes_lambda_equals_torch_lr_times_weight_decay():
    lr, wd = 0.01, 0.3
    runs = train_together({"notes": lambda p: AdamW(p, lr=lr, weight_decay=lr * wd, form="notes"),
                           "torch": lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=wd)})
    for a, b in zip(runs["notes"][0].parameters(), runs["torch"][0].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adam_with_l2_differs_from_adamw():
    # 002 §1.4.4 remark: with Adam the L2 term is rescaled by the adaptive denominator, so it is not weight decay
    lr, wd = 0.01, 0.5
    runs = train_together({"l2": lambda p: Adam(p, lr=lr, weight_decay=wd),
                           "decoupled": lambda p: AdamW(p, lr=lr, weight_decay=wd)}, steps=50)
    diff = max((a - b).abs().max().item() for a, b in zip(runs["l2"][0].parameters(),
                                                         runs["decoupled"][0].parameters()))
    assert diff > 1e-2


def test_amsgrad_keeps_the_running_maximum_of_the_second_moment():
    runs = train_together({"ams": lambda p: Adam(p, lr=0.01, amsgrad=True)}, steps=1)
    model, opt = runs["ams"]
    previous = [opt.state[p]["max_exp_avg_sq"].clone() for p in model.parameters()]
    for t in range(1, 15):
        continue_training(runs, 1, start=t)
        for p, prev in zip(model.parameters(), previous):
            st = opt.state[p]
            torch.testing.assert_close(st["max_exp_avg_sq"], torch.maximum(prev, st["exp_avg_sq"]), rtol=0, atol=0)
        previous = [opt.state[p]["max_exp_avg_sq"].clone() for p in model.parameters()]


def test_adam_foreach_groups_mixed_dtypes_like_torch():
    def make():
        return [torch.linspace(-1, 1, 6, requires_grad=True), torch.linspace(2, 3, 4, dtype=torch.float64,
                                                                             requires_grad=True)]

    ours, ref = make(), make()
    o, r = Adam(ours, lr=0.05, weight_decay=0.1), torch.optim.Adam(ref, lr=0.05, weight_decay=0.1)
    for _ in range(20):
        for ps, opt in ((ours, o), (ref, r)):
            opt.zero_grad()
            sum((p**2).sum().to(torch.float64) for p in ps).backward()
            opt.step()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(betas=(1.0, 0.999)), dict(betas=(0.9,)), dict(eps=-1.0), dict(lr=-0.1)])
def test_adam_rejects_bad_hyperparameters(kw):
    with pytest.raises(ConfigError):
        Adam([torch.zeros(1, requires_grad=True)], **kw)


def test_adamw_notes_form_rejects_decay_of_one_or_more():
    with pytest.raises(ConfigError, match="lr"):
        AdamW([torch.zeros(1, requires_grad=True)], weight_decay=1.0, form="notes")


def test_bias_correction_uses_the_one_based_step():
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = Adam([w], lr=1.0, betas=(0.5, 0.5), eps=0.0)
    for g in (2.0, 4.0):
        w.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
    # t = 2: m = 0.5 (0.5 * 2) + 0.5 * 4 = 2.5, s = 0.5 (0.5 * 4) + 0.5 * 16 = 9; m^ = 2.5 / 0.75, s^ = 9 / 0.75
    step2 = (2.5 / 0.75) / math.sqrt(9 / 0.75)
    assert w.item() == pytest.approx(-1.0 - step2, abs=1e-12)
