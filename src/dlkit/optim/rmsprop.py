"""RMSProp: AdaGrad with an exponential moving average of squared gradients (Notes: 002 §1.4.2).

Replacing AdaGrad's ever-growing sum by a moving average lets the step size recover, so RMSProp does not stall.
Options beyond the notes, as in torch.optim.RMSprop: `centered` (divide by an estimate of the gradient's
standard deviation instead of its root mean square) and `momentum` on the scaled step. State keys `step`,
`square_avg`, `momentum_buffer`, `grad_avg` as in torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import (
    check_hparams,
    group_by_device_dtype,
    groups_with_grads,
    increment,
    new_step,
    restore_defaults,
    run_closure,
)


class RMSprop(Optimizer):
    """RMSProp with optional centring, momentum, L2 weight decay and maximisation.

    Notes: 002 §1.4.2. `g = grad + wd theta`; `s <- alpha s + (1 - alpha) g*g` (the notes' beta is alpha here);
    `d = sqrt(s) + eps` (centred: `m <- alpha m + (1 - alpha) g`, `d = sqrt(s - m*m) + eps`);
    `theta <- theta - lr g / d`, or with momentum `b <- mu b + g / d`, `theta <- theta - lr b`.
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, *, maximize: bool = False, foreach: bool = True):
        check_hparams(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
                        maximize=maximize, foreach=foreach)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        restore_defaults(self)

    def _init_state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = new_step()
            state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["momentum"] > 0:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["centered"]:
                state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One RMSProp update of every parameter with a gradient; returns the closure's loss (or None)."""
        loss = run_closure(closure)
        for group, params in groups_with_grads(self, dense_real=True):
            states = [self._init_state(p, group) for p in params]
            fn = _foreach if group["foreach"] else _loop
            fn(params, [p.grad for p in params], [s["square_avg"] for s in states],
               [s.get("grad_avg") for s in states], [s.get("momentum_buffer") for s in states],
               [s["step"] for s in states], lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
               weight_decay=group["weight_decay"], momentum=group["momentum"], centered=group["centered"],
               maximize=group["maximize"])
        return loss


def _loop(params, grads, square_avgs, grad_avgs, bufs, steps, *, lr, alpha, eps, weight_decay, momentum, centered,
          maximize) -> None:
    for i, (p, g) in enumerate(zip(params, grads)):
        steps[i] += 1
        g = -g if maximize else g
        if weight_decay != 0:
            g = g.add(p, alpha=weight_decay)
        s = square_avgs[i].mul_(alpha).addcmul_(g, g, value=1 - alpha)  # s <- alpha s + (1 - alpha) g^2
        if centered:
            m = grad_avgs[i].lerp_(g, 1 - alpha)  # m <- alpha m + (1 - alpha) g
            d = s.addcmul(m, m, value=-1).sqrt_().add_(eps)
        else:
            d = s.sqrt().add_(eps)
        if momentum > 0:
            bufs[i].mul_(momentum).addcdiv_(g, d)
            p.add_(bufs[i], alpha=-lr)
        else:
            p.addcdiv_(g, d, value=-lr)  # theta <- theta - lr g / (sqrt(s) + eps)


def _foreach(params, grads, square_avgs, grad_avgs, bufs, steps, *, lr, alpha, eps, weight_decay, momentum,
             centered, maximize) -> None:
    for ps, gs, ss, ms, bs, ts in group_by_device_dtype(params, grads, square_avgs, grad_avgs, bufs, steps).values():
        increment(ts)
        if maximize:
            gs = torch._foreach_neg(gs)
            if weight_decay != 0:
                torch._foreach_add_(gs, ps, alpha=weight_decay)
        elif weight_decay != 0:
            gs = torch._foreach_add(gs, ps, alpha=weight_decay)
        torch._foreach_mul_(ss, alpha)
        torch._foreach_addcmul_(ss, gs, gs, value=1 - alpha)
        if centered:
            torch._foreach_lerp_(ms, gs, 1 - alpha)
            d = torch._foreach_addcmul(ss, ms, ms, value=-1)
            torch._foreach_sqrt_(d)
        else:
            d = torch._foreach_sqrt(ss)
        torch._foreach_add_(d, eps)
        if momentum > 0:
            torch._foreach_mul_(bs, momentum)
            torch._foreach_addcdiv_(bs, gs, d)
            torch._foreach_add_(ps, bs, alpha=-lr)
        else:
            torch._foreach_addcdiv_(ps, gs, d, value=-lr)
