"""Adam: moving averages of the gradient and of its square, with bias correction (Notes: 002 §1.4.3, §1.4.4).

Adam extends RMSProp with a moving average of the gradient itself (the first moment). Both averages start at
0, so early on they are biased towards 0; dividing by `1 - beta^t` removes that bias. Weight decay here is the
coupled L2 form of the notes' remark in §1.4.4: `lambda theta` is added to the gradient before the averages, so
it is rescaled by the adaptive denominator (unlike SGD, this is not the same as weight decay; see AdamW).
AMSGrad (Reddi et al., 2018; beyond the notes) divides by the running maximum of the second moment. State keys
`step`, `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq` as in torch.optim.Adam.

One formula, four implementations (`impl=`), each tested equal to torch.optim.Adam/AdamW:
- "reference": `_loop`, the formula tensor by tensor, one line per equation (read this one);
- "foreach": the same ops over all tensors at once with torch's `_foreach` kernels (~20 passes over memory);
- "compiled": `_compiled.py`, the same formula compiled by torch.compile into one pass per tensor (7 passes,
  as many as torch's fused kernel; see benchmarks/RESULTS.md for the ratio);
- "fused": torch's own fused kernel (`torch._fused_adam_`), not dlkit's code.
The default, "auto", runs "foreach" until the optimizer has done AUTO_COMPILE_AFTER elements x steps of work,
then "compiled" (CPU parameters only; on a GPU "auto" stays "foreach", torch's multi-tensor kernels). The
compilation costs ~10-60 s once per process and saves ~4 ns per element and step, so a short run or a small
model never pays for it and a long run pays once it has spent about that long in the slower path (ResNet-50's
25.6M parameters switch at step 196, a 0.8M-parameter char-GPT never in 2000 steps). The rule depends only on
the step counters and the parameter count, never on timings, so a run is reproducible and a resumed run takes
the same path at the same step as an uninterrupted one (the two paths differ in the last bits: fused multiply-adds).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import _compiled
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

IMPLS = ("auto", "compiled", "foreach", "reference", "fused")
AUTO_COMPILE_AFTER = 5e9  # elements x steps after which "auto" compiles: ~20 s of compilation / ~4 ns saved


def resolve_impl(impl: str, foreach: bool | None, fused: bool | None) -> str:
    """The implementation asked for: `impl`, or what torch's flags say (fused=True: "fused"; foreach=False:
    "reference"; foreach=True: "foreach")."""
    check(impl in IMPLS, "impl", f"one of {', '.join(IMPLS)}", impl)
    flag = "fused" if fused else "reference" if foreach is False else "foreach" if foreach else None
    if flag is None:
        return impl
    check(impl in ("auto", flag), "impl", f"'{flag}' or 'auto' when foreach={foreach}, fused={fused}", impl,
          "Pass either impl= or torch's foreach/fused flags.")
    return flag


class Adam(Optimizer):
    """Adam with bias correction, optional AMSGrad, L2 (coupled) weight decay and maximisation.

    Notes: 002 §1.4.3. `g = grad + wd theta`; `m <- b1 m + (1 - b1) g`; `s <- b2 s + (1 - b2) g*g`;
    `m^ = m / (1 - b1^t)`, `s^ = s / (1 - b2^t)` (t = 1, 2, ...; AMSGrad uses the running max of s);
    `theta <- theta - lr m^ / (sqrt(s^) + eps)`, computed as torch does:
    `theta - (lr / (1 - b1^t)) m / (sqrt(s) / sqrt(1 - b2^t) + eps)`. `impl` picks the implementation (module
    docstring): "auto" (default), "compiled", "foreach", "reference" or torch's "fused"; torch's flags
    `foreach=False` / `fused=True` are accepted too. `impl_used` counts the tensors each one updated last step.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, fused: bool | None = None, impl: str = "auto",
                 decoupled_weight_decay: bool = False):
        check(len(betas) == 2, "betas", "a pair (beta1, beta2)", betas)
        check_hparams(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)
        impl = resolve_impl(impl, foreach, fused)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, fused=impl == "fused", impl=impl,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)
        self.impl_used: dict[str, int] = {}
        self._plans: dict[int, _Plan] = {}  # id(group) -> the compiled update's layout of its parameters

    def __setstate__(self, state):
        super().__setstate__(state)
        restore_defaults(self)
        for group in self.param_groups:
            group.setdefault("impl", "auto")
            if group.get("fused") is None:
                group["fused"] = False
        self.__dict__.setdefault("impl_used", {})
        self._plans = {}  # new state tensors (load_state_dict): the views are rebuilt at the next step

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

    def _eager(self, fn, group: dict, params: list[Tensor], states: list[dict]) -> None:
        fn(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
           [s.get("max_exp_avg_sq") for s in states], [s["step"] for s in states], lr=group["lr"],
           beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"], weight_decay=group["weight_decay"],
           amsgrad=group["amsgrad"], maximize=group["maximize"], decay=self._decay(group))

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        """One Adam update of every parameter with a gradient; returns the closure's loss (or None)."""
        loss = run_closure(closure)
        used: dict[str, int] = {}
        batches: dict[tuple, _compiled.Batch] = {}  # (kernel, dtype, device) -> the compiled update's slots
        auto_numel = None
        tracing = torch.compiler.is_compiling()  # inside a compiled training step: the foreach chain is traced
        for group, params in groups_with_grads(self, dense_real=True):
            states = [self._init_state(p, group) for p in params]
            impl = "fused" if group["fused"] else group["impl"]
            if impl in ("auto", "compiled") and not tracing:
                if impl == "auto" and auto_numel is None:
                    auto_numel = sum(p.numel() for g in self.param_groups if g["impl"] == "auto" and not g["fused"]
                                     for p in g["params"])
                params, states = self._collect(group, params, states, impl, auto_numel, batches)
                impl = "foreach"
            if params:
                impl = "foreach" if impl in ("auto", "compiled") else impl
                self._eager(_fused if impl == "fused" else _loop if impl == "reference" else _foreach, group, params,
                            states)
                used[impl] = used.get(impl, 0) + len(params)
        for batch in batches.values():
            done = batch.run()
            if done:  # a tensor scalar takes the fast path for CPU step counters (4x faster than 1.0)
                torch._foreach_add_(batch.steps[:done], torch.ones((), device=batch.steps[0].device), alpha=1.0)
            used["compiled"] = used.get("compiled", 0) + sum(len(owners) for owners in batch.owners[:done])
            for owners in batch.owners[done:]:  # the compiled call failed: update these eagerly
                for p, state, group in owners:
                    self._eager(_foreach, group, [p], [state])
                    used["foreach"] = used.get("foreach", 0) + 1
        self.impl_used = used
        return loss

    def _use_compiled(self, impl: str, kernel: str, dtype: torch.dtype, device: torch.device) -> bool:
        """Whether `impl` ("compiled", or "auto" past its threshold) gets the compiled kernel for dtype/device."""
        if impl == "compiled":
            why = _compiled.prepare(kernel, dtype, device)
            check(why is None, "impl='compiled'", "a working torch.compile (inductor) for this device", why,
                  "Use impl='foreach' (or 'auto', which falls back by itself).")
            return True
        if device.type != "cpu" or _compiled.is_broken(kernel, dtype, device):
            return False
        why = _compiled.prepare(kernel, dtype, device)
        if why is not None:
            warnings.warn(f"dlkit.optim: torch.compile is not usable here ({why}); Adam keeps its _foreach path",
                          RuntimeWarning, stacklevel=4)
        return why is None

    def _collect(self, group: dict, params: list[Tensor], states: list[dict], impl: str, auto_numel: int | None,
                 batches: dict) -> tuple[list[Tensor], list[dict]]:
        """Put the parameters the compiled kernel updates this step into `batches`; return the others."""
        ts = [state["step"].item() + 1 for state in states]  # the step each parameter is about to take
        if impl == "auto" and min(ts) * auto_numel < AUTO_COMPILE_AFTER:
            return params, states
        plan = self._plan(group, params, states, impl)
        scalars: dict[float, tuple[float, ...]] = {}  # step t -> the slot's numbers (one t for most parameters)

        def numbers(t: float) -> tuple[float, ...]:
            if t not in scalars:
                scalars[t] = _compiled.step_scalars(t, group["lr"], *group["betas"], group["eps"],
                                                    group["weight_decay"], group["maximize"], self._decay(group))
            return scalars[t]

        for key in plan.keys:
            if key not in batches:
                batches[key] = _compiled.Batch(*key)
        rest = list(plan.rest)
        for i, key, flats, perm in plan.large:
            g = params[i].grad if perm is None else params[i].grad.permute(perm)
            batches[key].add([flats[0], g.view(-1) if g.is_contiguous() else g.reshape(-1), *flats[1:]],
                             numbers(ts[i]), [(params[i], states[i], group)], states[i]["step"])
        for key, pack, members in plan.packs:
            if len({ts[i] for i in members}) > 1:  # different step counts cannot share one slot's numbers
                rest += members
                continue
            tensors, copy_back = pack.slot()
            batches[key].add(tensors, numbers(ts[members[0]]), [(params[i], states[i], group) for i in members],
                             pack.steps, copy_back)
        return [params[i] for i in rest], [states[i] for i in rest]

    def _plan(self, group: dict, params: list[Tensor], states: list[dict], impl: str) -> _Plan:
        """Which of the group's parameters the compiled kernel takes, and how (cached: rebuilt when the parameters
        with a gradient, their storage, their state tensors or the group's options change). Parameters with fewer
        than SMALL elements share one `Pack` slot per dtype/device; larger ones (and non-contiguous ones, e.g.
        channels-last weights) get a slot each; the rest (1 element alone, sparse gradients, a layout the flat
        views cannot follow, a device without torch.compile under "auto") stay on the foreach path."""
        kernel = "amsgrad" if group["amsgrad"] else "adam"
        ident = (impl, kernel, tuple(map(id, params)), tuple(p.data_ptr() for p in params),
                 tuple(map(id, (state["exp_avg"] for state in states))))
        plan = self._plans.get(id(group))
        if plan is not None and plan.ident == ident:
            return plan
        names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if kernel == "amsgrad" else ())
        decision: dict[tuple, bool] = {}
        small: dict[tuple, list[int]] = {}
        large, rest = [], []
        for i, (p, state) in enumerate(zip(params, states)):
            key = (kernel, p.dtype, p.device)
            if p.dtype not in _compiled.DTYPES or p.grad.is_sparse:
                rest.append(i)
                continue
            if key not in decision:
                decision[key] = self._use_compiled(impl, kernel, p.dtype, p.device)
            if not decision[key]:
                rest.append(i)
            elif p.numel() < _compiled.SMALL and p.is_contiguous():
                small.setdefault(key, []).append(i)
            elif p.numel() >= 2 and (flats := _compiled.flat_views(p.detach(), [state[n] for n in names])):
                large.append((i, key, flats, None if p.is_contiguous() else
                              sorted(range(p.dim()), key=lambda d: -p.stride(d))))
            else:  # sizes 0 and 1 would each compile their own graph; or a layout the views cannot follow
                rest.append(i)
        packs = []
        for key, members in small.items():
            if len(members) == 1 and params[members[0]].numel() < 2:
                rest += members
                continue
            pack = _compiled.Pack([params[i] for i in members], [states[i] for i in members], names)
            packs.append((key, pack, members))
        ident = ident[:4] + (tuple(map(id, (state["exp_avg"] for state in states))),)  # packs made new views
        keys = {key for _, key, _, _ in large} | {key for key, _, _ in packs}
        plan = self._plans[id(group)] = _Plan(ident, keys, large, packs, rest)
        return plan


@dataclass
class _Plan:
    """The compiled update's layout of one parameter group (see `Adam._plan`); indices into the group's list of
    parameters with a gradient."""

    ident: tuple
    keys: set[tuple]                                                # (kernel, dtype, device) of the slots
    large: list[tuple[int, tuple, list[Tensor], list[int] | None]]  # (index, key, flat p/m/s views, permutation)
    packs: list[tuple[tuple, _compiled.Pack, list[int]]]          # (key, pack, member indices)
    rest: list[int]


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
