"""SGD, momentum and Nesterov (Notes: 002 §1.1, §1.3; 000 §2.1) against torch.optim.SGD and the notes' formulas."""

import itertools

import pytest
import torch
from optim_harness import assert_same, continue_training, train_together

from dlkit.errors import ConfigError
from dlkit.optim import SGD

COMBOS = [c for c in itertools.product([0.0, 0.9], [0.0, 0.5], [False, True], [0.0, 1e-2], [False, True])
          if not (c[2] and (c[0] == 0 or c[1] != 0))]  # Nesterov needs momentum > 0 and no dampening


@pytest.mark.parametrize("momentum,dampening,nesterov,weight_decay,maximize", COMBOS)
def test_sgd_matches_torch_for_every_option(momentum, dampening, nesterov, weight_decay, maximize):
    kw = dict(lr=0.05, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
              maximize=maximize)
    runs = train_together({
        "torch": lambda p: torch.optim.SGD(p, **kw, foreach=False),
        "foreach": lambda p: SGD(p, **kw),
        "loop": lambda p: SGD(p, **kw, foreach=False),
        "fused": lambda p: SGD(p, **kw, fused=True),
    })
    assert_same(runs["foreach"], runs["torch"])
    assert_same(runs["loop"], runs["torch"])
    assert_same(runs["fused"], runs["torch"], tol=1e-5)  # the fused kernel rounds differently (FMA)


def test_sgd_state_dict_is_interchangeable_with_torch():
    kw = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    runs = train_together({"torch": lambda p: torch.optim.SGD(p, **kw), "ours": lambda p: SGD(p, **kw)}, steps=30)
    tm, to = runs["torch"]
    om, oo = runs["ours"]
    ours_from_torch = SGD(om.parameters(), lr=1.0)
    ours_from_torch.load_state_dict(to.state_dict())
    torch_from_ours = torch.optim.SGD(tm.parameters(), lr=1.0)
    torch_from_ours.load_state_dict(oo.state_dict())
    runs = {"ours": (om, ours_from_torch), "torch": (tm, torch_from_ours)}
    continue_training(runs, 30, start=30)
    assert_same(runs["ours"], runs["torch"])
    assert ours_from_torch.param_groups[0]["nesterov"] and torch_from_ours.param_groups[0]["nesterov"]


def _quadratic(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = q @ q.T / n + torch.diag(torch.linspace(0.1, 2.0, n, dtype=torch.float64))
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return a, b, lambda th: 0.5 * th @ a @ th - b @ th


def test_momentum_two_steps_match_hand_computation():
    # f(w) = w^2, w0 = 1, lr 0.1, mu 0.9: v1 = -0.2, w1 = 0.8; v2 = 0.9 (-0.2) - 0.1 * 1.6 = -0.34, w2 = 0.46
    for form in ("notes", "torch"):
        w = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
        opt = SGD([w], lr=0.1, momentum=0.9, form=form)
        path = []
        for _ in range(2):
            opt.zero_grad()
            (w**2).sum().backward()
            opt.step()
            path.append(w.item())
        assert path == pytest.approx([0.8, 0.46], abs=1e-12)


def test_notes_velocity_form_equals_torch_with_constant_lr():
    kw = dict(lr=0.05, momentum=0.9, weight_decay=1e-2)
    runs = train_together({"notes": lambda p: SGD(p, **kw, form="notes"),
                           "notes_loop": lambda p: SGD(p, **kw, form="notes", foreach=False),
                           "torch": lambda p: torch.optim.SGD(p, **kw)}, steps=100)
    for name in ("notes", "notes_loop"):
        for pa, pb in zip(runs[name][0].parameters(), runs["torch"][0].parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach", [True, False])
def test_notes_velocity_form_follows_its_formula_when_lr_changes(foreach):
    a, b, _ = _quadratic()
    lrs = [0.3 * 0.9**t for t in range(40)]
    mu = 0.8
    theta = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    ref = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = SGD([theta], lr=lrs[0], momentum=mu, form="notes", foreach=foreach)
    opt_torch = torch.optim.SGD([ref], lr=lrs[0], momentum=mu)
    x, v = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    for lr in lrs:
        v = mu * v - lr * (a @ x - b)  # v <- mu v - lr grad L(theta)
        x = x + v  # theta <- theta + v
        for p, o in ((theta, opt), (ref, opt_torch)):
            o.param_groups[0]["lr"] = lr
            o.zero_grad()
            (0.5 * p @ a @ p - b @ p).backward()
            o.step()
        torch.testing.assert_close(theta.detach(), x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(opt.state[theta]["velocity"], v, rtol=1e-12, atol=1e-12)
    assert (theta - ref).abs().max() > 1e-3  # torch's buffer form differs once lr changes


def test_velocity_tends_to_minus_lr_g_over_one_minus_mu_for_constant_gradient():
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = SGD([theta], lr=0.1, momentum=0.9, form="notes")
    for _ in range(400):
        opt.zero_grad()
        (g @ theta).backward()
        opt.step()
    torch.testing.assert_close(opt.state[theta]["velocity"], -0.1 * g / (1 - 0.9), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("foreach", [True, False])
def test_notes_nesterov_equals_torch_nesterov_after_the_shift(foreach):
    a, b, f = _quadratic(seed=1)
    mu, lr = 0.9, 0.1
    theta = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    shifted = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    ours = SGD([theta], lr=lr, momentum=mu, nesterov=True, form="notes", foreach=foreach)
    ref = torch.optim.SGD([shifted], lr=lr, momentum=mu, nesterov=True)
    evaluated_at = []

    def closure():
        ours.zero_grad()
        evaluated_at.append(theta.detach().clone())
        loss = f(theta)
        loss.backward()
        return loss

    for _ in range(30):
        v = ours.state[theta].get("velocity", torch.zeros(4, dtype=torch.float64)).clone()
        before = theta.detach().clone()
        ours.step(closure)
        # the gradient was taken at the look-ahead point theta + mu v, and the step starts from theta
        torch.testing.assert_close(evaluated_at[-1], before + mu * v, rtol=0, atol=1e-15)
        v_new = ours.state[theta]["velocity"]
        torch.testing.assert_close(theta.detach(), before + v_new, rtol=0, atol=1e-15)
        ref.zero_grad()
        f(shifted).backward()
        ref.step()
        torch.testing.assert_close(theta.detach() + mu * v_new, shifted.detach(), rtol=1e-10, atol=1e-12)


def test_notes_nesterov_two_steps_match_hand_computation():
    # f(w) = w^2, w0 = 1, lr 0.1, mu 0.5: g(1) = 2 -> v1 = -0.2, w1 = 0.8;
    # look-ahead 0.8 + 0.5 (-0.2) = 0.7, g = 1.4 -> v2 = -0.1 - 0.14 = -0.24, w2 = 0.56
    w = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = SGD([w], lr=0.1, momentum=0.5, nesterov=True, form="notes")

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    path = []
    for _ in range(2):
        opt.step(closure)
        path.append(w.item())
    assert path == pytest.approx([0.8, 0.56], abs=1e-12)


def test_notes_nesterov_without_closure_explains_what_is_needed():
    w = torch.zeros(2, requires_grad=True)
    w.grad = torch.ones(2)
    with pytest.raises(ConfigError, match="closure"):
        SGD([w], lr=0.1, momentum=0.9, nesterov=True, form="notes").step()


def test_l2_on_sgd_is_weight_decay_scaled_by_lr():
    # 002 §1.4.4 remark: for SGD, theta - lr (g + lam theta) = (1 - lr lam) theta - lr g
    a, b, f = _quadratic(seed=2)
    lr, lam = 0.1, 0.3
    theta = torch.ones(4, dtype=torch.float64, requires_grad=True)
    opt = SGD([theta], lr=lr, weight_decay=lam)
    x = torch.ones(4, dtype=torch.float64)
    for _ in range(20):
        opt.zero_grad()
        f(theta).backward()
        opt.step()
        x = (1 - lr * lam) * x - lr * (a @ x - b)
    torch.testing.assert_close(theta.detach(), x, rtol=1e-12, atol=1e-12)


def test_momentum_reaches_lower_loss_than_sgd_in_a_canyon():
    # 002 §1.3 / Fig. 1.1: f = 1/2 (w1^2 + 100 w2^2) is a canyon; plain SGD needs lr < 0.02 and crawls along w1
    def run(momentum):
        w = torch.tensor([5.0, 1.0], dtype=torch.float64, requires_grad=True)
        opt = SGD([w], lr=0.015, momentum=momentum)
        for _ in range(60):
            opt.zero_grad()
            loss = 0.5 * (w[0] ** 2 + 100 * w[1] ** 2)
            loss.backward()
            opt.step()
        return 0.5 * (w[0].item() ** 2 + 100 * w[1].item() ** 2)

    assert run(0.9) < 0.1 * run(0.0)


def test_step_leaves_the_gradients_untouched():
    for kw in (dict(momentum=0.9, nesterov=True), dict(momentum=0.9, weight_decay=0.1, maximize=True)):
        w = torch.randn(5, requires_grad=True)
        w.grad = torch.randn(5)
        before = w.grad.clone()
        opt = SGD([w], lr=0.1, **kw)
        opt.step()
        opt.step()
        assert torch.equal(w.grad, before)


def test_foreach_groups_mixed_dtypes_like_torch():
    def make():
        return [torch.linspace(-1, 1, 6, requires_grad=True),
                torch.linspace(2, 3, 4, dtype=torch.float64, requires_grad=True),
                torch.full((3,), 0.5, requires_grad=True)]

    ours, ref = make(), make()
    o = SGD(ours, lr=0.05, momentum=0.9)
    r = torch.optim.SGD(ref, lr=0.05, momentum=0.9)
    for _ in range(20):
        for ps, opt in ((ours, o), (ref, r)):
            opt.zero_grad()
            sum((p**2).sum().to(torch.float64) for p in ps).backward()
            opt.step()
    for a, b in zip(ours, ref):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(lr=-1.0), dict(momentum=-0.1), dict(nesterov=True),
                                dict(momentum=0.9, dampening=0.1, form="notes"), dict(form="velocity"),
                                dict(momentum=0.9, form="notes", fused=True)])
def test_sgd_rejects_bad_options(kw):
    with pytest.raises(ConfigError):
        SGD([torch.zeros(1, requires_grad=True)], **{"lr": 0.1, **kw})
