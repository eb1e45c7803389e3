"""Adam: moving averages of the gradient and of its square, with bias correction (Notes: 002 §1.4.3, §1.4.4).

Adam extends RMSProp with a moving average of the gradient itself (the first moment). Both averages start at
0, so early on they are biased towards 0; dividing by `1 - beta^t` removes that bias. Weight decay here is the
coupled L2 form of the notes' remark in §1.4.4: `lambda theta` is added to the gradient before the averages, so
it is rescaled by the adaptive denominator (unlike SGD, this is not the same as weight decay; see AdamW).
AMSGrad (Reddi et al., 2018; beyond the notes) divides by the running maximum of the second moment. State keys
`step`, `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq` as in torch.optim.Adam.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import (
    check,
    check_hparams,
    group_by_device_dtype,
    groups_with_grads,
    increment,
    new_step,
    restore_defaults,
    run_closure,
)


class Adam(Optimizer):
    """Adam with bias correction, optional AMSGrad, L2 (coupled) weight decay and maximisation.

    Notes: 002 §1.4.3. `g = grad + wd theta`; `m <- b1 m + (1 - b1) g`; `s <- b2 s + (1 - b2) g*g`;
    `m^ = m / (1 - b1^t)`, `s^ = s / (1 - b2^t)` (t = 1, 2, ...; AMSGrad uses the running max of s);
    `theta <- theta - lr m^ / (sqrt(s^) + eps)`. `foreach=True` (default) uses torch `_foreach` ops per
    device/dtype, `foreach=False` the per-tensor formula, `fused=True` torch's fused Adam kernel (one pass).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False, foreach: bool = True,
                 fused: bool = False, decoupled_weight_decay: bool = False):
        check(len(betas) == 2, "betas", "a pair (beta1, beta2)", betas)
        check_hparams(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        restore_defaults(self)

    def _init_state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = new_step()
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _decay(self, group: dict) -> str:
        """How weight decay acts: 'l2' (added to the gradient), 'decoupled' (lr-scaled) or 'notes' (not scaled)."""
        return "l2" if not group["decoupled_weight_decay"] else "decoupled"

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One Adam update of every parameter with a gradient; returns the closure's loss (or None)."""
        loss = run_closure(closure)
        for group, params in groups_with_grads(self):
            states = [self._init_state(p, group) for p in params]
            fn = _fused if group["fused"] else _foreach if group["foreach"] else _loop
            fn(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
               [s.get("max_exp_avg_sq") for s in states], [s["step"] for s in states], lr=group["lr"],
               beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"], weight_decay=group["weight_decay"],
               amsgrad=group["amsgrad"], maximize=group["maximize"], decay=self._decay(group))
        return loss


def _loop(params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, *, lr, beta1, beta2, eps, weight_decay, amsgrad,
          maximize, decay) -> None:
    for i, (p, g) in enumerate(zip(params, grads)):
        steps[i] += 1
        t = float(steps[i])
        g = -g if maximize else g
        if weight_decay != 0:
            if decay == "l2":
                g = g.add(p, alpha=weight_decay)  # the gradient of L + wd/2 |theta|^2
            else:
                p.mul_(1 - (lr * weight_decay if decay == "decoupled" else weight_decay))  # theta <- theta - lam theta
        m = exp_avgs[i].lerp_(g, 1 - beta1)  # m <- b1 m + (1 - b1) g
        s = exp_avg_sqs[i].mul_(beta2).addcmul_(g, g, value=1 - beta2)  # s <- b2 s + (1 - b2) g^2
        if amsgrad:
            s = torch.maximum(max_sqs[i], s, out=max_sqs[i])
        bc1, bc2 = 1 - beta1**t, 1 - beta2**t
        denom = (s.sqrt() / math.sqrt(bc2)).add_(eps)  # sqrt(s / (1 - b2^t)) + eps
        p.addcdiv_(m, denom, value=-lr / bc1)  # theta <- theta - lr (m / (1 - b1^t)) / denom


def _foreach(params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, *, lr, beta1, beta2, eps, weight_decay, amsgrad,
             maximize, decay) -> None:
    for ps, gs, ms, ss, xs, ts in group_by_device_dtype(params, grads, exp_avgs, exp_avg_sqs, max_sqs,
                                                        steps).values():
        t = increment(ts)
        if maximize:
            gs = torch._foreach_neg(gs)
        if weight_decay != 0:
            if decay == "l2":
                if maximize:
                    torch._foreach_add_(gs, ps, alpha=weight_decay)
                else:
                    gs = torch._foreach_add(gs, ps, alpha=weight_decay)
            else:
                torch._foreach_mul_(ps, 1 - (lr * weight_decay if decay == "decoupled" else weight_decay))
        torch._foreach_lerp_(ms, gs, 1 - beta1)
        torch._foreach_mul_(ss, beta2)
        torch._foreach_addcmul_(ss, gs, gs, value=1 - beta2)
        if amsgrad:
            torch._foreach_maximum_(xs, ss)
            ss = xs
        denom = torch._foreach_sqrt(ss)  # sqrt(s / (1 - b2^t)) + eps
        torch._foreach_div_(denom, [math.sqrt(1 - beta2**k) for k in t])
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(ps, ms, denom, [-lr / (1 - beta1**k) for k in t])


def _fused(params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, *, lr, beta1, beta2, eps, weight_decay, amsgrad,
           maximize, decay) -> None:
    for ps, gs, ms, ss, xs, ts in group_by_device_dtype(params, grads, exp_avgs, exp_avg_sqs, max_sqs,
                                                        steps).values():
        increment(ts)
        device = ps[0].device
        ts = ts if ts[0].device == device else [t.to(device) for t in ts]
        wd = weight_decay
        if decay == "notes" and wd != 0:  # theta <- (1 - lam) theta before the Adam step
            torch._foreach_mul_(ps, 1 - wd)
            wd = 0.0
        kernel = torch._fused_adamw_ if decay == "decoupled" else torch._fused_adam_
        kernel(ps, gs, ms, ss, xs if amsgrad else [], ts, lr=lr, beta1=beta1, beta2=beta2, weight_decay=wd, eps=eps,
               amsgrad=amsgrad, maximize=maximize)
