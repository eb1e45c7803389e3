"""AdaGrad: per-coordinate learning rates from the history of squared gradients (Notes: 002 §1.4.1).

Each coordinate's step is divided by the root of the sum of its past squared gradients, so coordinates with
large gradients take small steps. The sum only grows, so the effective learning rate only falls: AdaGrad can
stop before it reaches the minimum (the notes' Fig. 1.5). State keys `step`, `sum` as in torch.optim.Adagrad.
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


class Adagrad(Optimizer):
    """AdaGrad with optional learning-rate decay, L2 weight decay and maximisation.

    Notes: 002 §1.4.1. `g = grad + wd theta`; `s <- s + g*g`; `theta <- theta - lr_t g / (sqrt(s) + eps)` with
    `lr_t = lr / (1 + (t - 1) lr_decay)` (t = 1, 2, ...; lr_decay = 0 is the notes' form) and
    `s_0 = initial_accumulator_value`. eps is outside the square root, as in the notes. `foreach=True` (default)
    uses torch `_foreach` ops, `foreach=False` the per-tensor formula, `fused=True` torch's fused Adagrad kernel.
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, maximize: bool = False,
                 foreach: bool = True, fused: bool = False):
        check_hparams(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                      initial_accumulator_value=initial_accumulator_value, eps=eps)
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize, foreach=foreach,
                        fused=fused)
        super().__init__(params, defaults)
        for group in self.param_groups:  # torch creates the state up front too (share_memory needs it)
            for p in group["params"]:
                self._init_state(p, group)

    def _init_state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if "sum" not in state:
            state["step"] = new_step()
            state["sum"] = torch.full_like(p, group["initial_accumulator_value"], memory_format=torch.preserve_format)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        restore_defaults(self)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One AdaGrad update of every parameter with a gradient; returns the closure's loss (or None)."""
        loss = run_closure(closure)
        for group, params in groups_with_grads(self, dense_real=True):
            states = [self._init_state(p, group) for p in params]
            fn = _fused if group["fused"] else _foreach if group["foreach"] else _loop
            fn(params, [p.grad for p in params], [s["sum"] for s in states], [s["step"] for s in states],
               lr=group["lr"], lr_decay=group["lr_decay"],
               weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"])
        return loss


def _loop(params, grads, sums, steps, *, lr, lr_decay, weight_decay, eps, maximize) -> None:
    for p, g, s, t in zip(params, grads, sums, steps):
        t += 1
        g = -g if maximize else g
        if weight_decay != 0:
            g = g.add(p, alpha=weight_decay)
        clr = lr / (1 + (float(t) - 1) * lr_decay)
        s.addcmul_(g, g, value=1)  # s <- s + g * g
        p.addcdiv_(g, s.sqrt().add_(eps), value=-clr)  # theta <- theta - lr g / (sqrt(s) + eps)


def _foreach(params, grads, sums, steps, *, lr, lr_decay, weight_decay, eps, maximize) -> None:
    for ps, gs, ss, ts in group_by_device_dtype(params, grads, sums, steps).values():
        t = increment(ts)
        if maximize:
            gs = torch._foreach_neg(gs)
            if weight_decay != 0:
                torch._foreach_add_(gs, ps, alpha=weight_decay)
        elif weight_decay != 0:
            gs = torch._foreach_add(gs, ps, alpha=weight_decay)
        torch._foreach_addcmul_(ss, gs, gs, value=1)
        std = torch._foreach_sqrt(ss)
        torch._foreach_add_(std, eps)
        if lr_decay != 0:
            torch._foreach_addcdiv_(ps, gs, std, [-lr / (1 + (k - 1) * lr_decay) for k in t])
        else:
            torch._foreach_addcdiv_(ps, gs, std, value=-lr)


def _fused(params, grads, sums, steps, *, lr, lr_decay, weight_decay, eps, maximize) -> None:
    for ps, gs, ss, ts in group_by_device_dtype(params, grads, sums, steps).values():
        increment(ts)
        device = ps[0].device
        ts = ts if ts[0].device == device else [t.to(device) for t in ts]
        torch._fused_adagrad_(ps, gs, ss, ts, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                              maximize=maximize)
