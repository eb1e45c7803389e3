"""Stochastic gradient descent with momentum and Nesterov momentum (Notes: 002 §1.1, §1.3; 000 §2.1).

Two forms of momentum are offered. The notes keep a velocity, `v <- mu v - lr g`, `theta <- theta + v`
(`form="notes"`); PyTorch keeps a gradient buffer, `buf <- mu buf + g`, `theta <- theta - lr buf`
(`form="torch"`, the default, state key `momentum_buffer` as in torch.optim.SGD). With a constant learning rate
`v = -lr buf` and the two give the same iterates; when lr changes they differ (the velocity remembers old
learning rates). The notes' Nesterov momentum evaluates the gradient at the look-ahead point `theta + mu v`
(`form="notes", nesterov=True`, which needs a closure); torch's Nesterov is the reformulation in the shifted
variable `theta~ = theta + mu v`, `theta~ <- theta~ - lr (g + mu buf)`, which needs no second gradient.
Notes 000 §2.1 print the step with a + sign (ascent): descent is implemented.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..errors import ConfigError
from ._common import check, check_hparams, group_by_device_dtype, groups_with_grads, restore_defaults, run_closure


class SGD(Optimizer):
    """Mini-batch SGD with optional momentum, dampening, Nesterov, L2 weight decay and maximisation.

    Notes: 002 §1.1, §1.3. `g = grad + wd theta` (negated first when `maximize`), then
    torch form: `buf <- mu buf + (1 - dampening) g` (`buf = g` at the first step), `d = g + mu buf` (Nesterov) or
    `d = buf`, `theta <- theta - lr d`;
    notes form: `v <- mu v - lr g` with g taken at `theta + mu v` for Nesterov, `theta <- theta + v`.
    `foreach=True` (default) updates all tensors of one device/dtype with torch `_foreach` ops; `foreach=False`
    runs the per-tensor formula; `fused=True` (torch form only) calls torch's fused SGD kernel, one pass per tensor.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False, foreach: bool = True,
                 fused: bool = False, form: str = "torch"):
        check_hparams(lr=lr, momentum=momentum, weight_decay=weight_decay)
        check(form in ("torch", "notes"), "SGD form", "'torch' or 'notes'", form)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ConfigError(f"Nesterov momentum needs momentum > 0 and dampening = 0; got momentum={momentum}, "
                              f"dampening={dampening}. Set momentum (e.g. 0.9) and dampening=0.")
        if form == "notes" and fused:
            raise ConfigError("fused=True runs torch's kernel, which implements form='torch'; got form='notes'. "
                              "Use foreach=True for the notes' velocity form.")
        if form == "notes" and dampening != 0:
            raise ConfigError(f"the notes' velocity form has no dampening; got dampening={dampening}. "
                              "Use form='torch' for dampening.")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                        maximize=maximize, foreach=foreach, fused=fused, form=form)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        restore_defaults(self)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One update of every parameter with a gradient; returns the closure's loss (or None)."""
        lookahead = [g for g in self.param_groups if g["form"] == "notes" and g["nesterov"]]
        if lookahead:
            loss = self._gradient_at_lookahead(lookahead, closure)
        else:
            loss = run_closure(closure)
        for group, params in groups_with_grads(self):
            grads = [p.grad for p in params]
            notes = group["form"] == "notes"
            key = "velocity" if notes else "momentum_buffer"
            bufs = [self.state[p].get(key) for p in params] if group["momentum"] != 0 else [None] * len(params)
            if notes:
                fn = _notes_foreach if group["foreach"] else _notes_loop
                fn(params, grads, bufs, lr=group["lr"], momentum=group["momentum"],
                   weight_decay=group["weight_decay"], maximize=group["maximize"])
            else:
                fn = _torch_fused if group["fused"] else _torch_foreach if group["foreach"] else _torch_loop
                fn(params, grads, bufs, lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
                   nesterov=group["nesterov"], weight_decay=group["weight_decay"], maximize=group["maximize"])
            if group["momentum"] != 0:
                for p, b in zip(params, bufs):
                    self.state[p][key] = b
        return loss

    def _gradient_at_lookahead(self, groups: list[dict], closure) -> Tensor:
        """Evaluate `closure` (which must recompute the gradients) at theta + mu v, then move back to theta."""
        if closure is None:
            raise ConfigError("SGD(form='notes', nesterov=True) takes the gradient at the look-ahead point "
                              "theta + mu v, so step() needs a closure that zeroes the gradients, computes the loss "
                              "and calls backward(); got no closure. Pass one, or use form='torch' (the "
                              "reformulated Nesterov that needs no second gradient).")
        saved = []
        for group in groups:
            for p in group["params"]:
                v = self.state[p].get("velocity")
                if v is not None:
                    saved.append((p, p.detach().clone()))
                    p.add_(v, alpha=group["momentum"])
        with torch.enable_grad():
            loss = closure()
        for p, theta in saved:
            p.copy_(theta)
        return loss


def _direction(g: Tensor, p: Tensor, weight_decay: float, maximize: bool) -> Tensor:
    """The gradient the rule uses: `-grad` when maximising, plus the L2 term `wd theta`."""
    d = -g if maximize else g
    return d.add(p, alpha=weight_decay) if weight_decay != 0 else d


def _torch_loop(params, grads, bufs, *, lr, momentum, dampening, nesterov, weight_decay, maximize) -> None:
    for i, (p, g) in enumerate(zip(params, grads)):
        d = _direction(g, p, weight_decay, maximize)
        if momentum != 0:
            if bufs[i] is None:
                bufs[i] = d.detach().clone()
            else:
                bufs[i].mul_(momentum).add_(d, alpha=1 - dampening)
            d = d.add(bufs[i], alpha=momentum) if nesterov else bufs[i]
        p.add_(d, alpha=-lr)


def _torch_foreach(params, grads, bufs, *, lr, momentum, dampening, nesterov, weight_decay, maximize) -> None:
    for ps, gs, bs, idx in group_by_device_dtype(params, grads, bufs, list(range(len(params)))).values():
        gs = _foreach_direction(gs, ps, weight_decay, maximize)
        if momentum != 0:
            if all(b is not None for b in bs):
                torch._foreach_mul_(bs, momentum)
                torch._foreach_add_(bs, gs, alpha=1 - dampening)
            else:
                for j, b in enumerate(bs):
                    if b is None:
                        bs[j] = bufs[idx[j]] = gs[j].detach().clone()
                    else:
                        b.mul_(momentum).add_(gs[j], alpha=1 - dampening)
            gs = torch._foreach_add(gs, bs, alpha=momentum) if nesterov else bs
        torch._foreach_add_(ps, gs, alpha=-lr)


def _torch_fused(params, grads, bufs, *, lr, momentum, dampening, nesterov, weight_decay, maximize) -> None:
    first = momentum != 0 and all(b is None for b in bufs)
    if momentum != 0 and not first and any(b is None for b in bufs):  # some tensors start later: no fused kernel
        return _torch_foreach(params, grads, bufs, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                              weight_decay=weight_decay, maximize=maximize)
    if first:
        bufs[:] = [torch.empty_like(g) for g in grads]  # the kernel sets buf = g at the first step
    for ps, gs, bs in group_by_device_dtype(params, grads, bufs).values():
        torch._fused_sgd_(ps, gs, bs if momentum != 0 else [], weight_decay=weight_decay, momentum=momentum, lr=lr,
                          dampening=dampening, nesterov=nesterov, maximize=maximize, is_first_step=first)


def _foreach_direction(gs: list[Tensor], ps: list[Tensor], weight_decay: float, maximize: bool) -> list[Tensor]:
    """`_direction` for a list; never writes into the parameters' .grad tensors."""
    if maximize:
        gs = torch._foreach_neg(gs)
        if weight_decay != 0:
            torch._foreach_add_(gs, ps, alpha=weight_decay)
    elif weight_decay != 0:
        gs = torch._foreach_add(gs, ps, alpha=weight_decay)
    return gs


def _notes_loop(params, grads, vels, *, lr, momentum, weight_decay, maximize) -> None:
    for i, (p, g) in enumerate(zip(params, grads)):
        d = _direction(g, p, weight_decay, maximize)
        if momentum == 0:
            p.add_(d, alpha=-lr)
            continue
        if vels[i] is None:
            vels[i] = torch.zeros_like(p)
        vels[i].mul_(momentum).add_(d, alpha=-lr)  # v <- mu v - lr g
        p.add_(vels[i])  # theta <- theta + v


def _notes_foreach(params, grads, vels, *, lr, momentum, weight_decay, maximize) -> None:
    for ps, gs, vs, idx in group_by_device_dtype(params, grads, vels, list(range(len(params)))).values():
        gs = _foreach_direction(gs, ps, weight_decay, maximize)
        if momentum == 0:
            torch._foreach_add_(ps, gs, alpha=-lr)
            continue
        for j, v in enumerate(vs):
            if v is None:
                vs[j] = vels[idx[j]] = torch.zeros_like(ps[j])
        torch._foreach_mul_(vs, momentum)
        torch._foreach_add_(vs, gs, alpha=-lr)
        torch._foreach_add_(ps, vs)
