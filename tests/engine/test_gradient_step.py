"""gradient_step: zero, backward, clip by global norm, step, schedule, against the same done by hand."""

import torch

from dlkit.engine.gradient_step import gradient_step


def _problem():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    frozen = torch.nn.Parameter(torch.randn(3), requires_grad=False)
    x = torch.randn(8, 5)
    return w, frozen, x


def test_step_equals_sgd_by_hand_with_clipping_and_schedule():
    w, frozen, x = _problem()
    opt = torch.optim.SGD([w, frozen], lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    w.grad = torch.full_like(w, 100.0)  # a stale gradient: must be cleared, not accumulated
    w0 = w.detach().clone()
    loss = ((x @ w) ** 2).mean() * 50  # a large gradient, so that clipping acts
    g = torch.autograd.grad(loss, w, retain_graph=True)[0]
    out = gradient_step(loss, opt, clip_norm=1.0, scheduler=sched)
    assert g.norm() > 1.0
    torch.testing.assert_close(w.detach(), w0 - 0.5 * g / g.norm(), rtol=1e-5, atol=1e-6)
    assert not out.requires_grad and out.item() == loss.item()
    assert opt.param_groups[0]["lr"] == 0.05  # the schedule advanced once
    assert frozen.grad is None


def test_without_clipping_the_full_gradient_is_used():
    w, _, x = _problem()
    opt = torch.optim.SGD([w], lr=0.1)
    w0 = w.detach().clone()
    loss = ((x @ w) ** 2).mean() * 50
    g = torch.autograd.grad(loss, w, retain_graph=True)[0]
    gradient_step(loss, opt)
    torch.testing.assert_close(w.detach(), w0 - 0.1 * g)
