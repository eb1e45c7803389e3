"""Plumbing shared by the optimizers: argument checks, device/dtype grouping for `_foreach` ops, step counters."""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor

from ..errors import ConfigError


def check(ok: bool, name: str, expected: str, got, fix: str = "") -> None:
    """Raise ConfigError '<name> must be <expected>; got <got>. <fix>' unless `ok`."""
    if not ok:
        raise ConfigError(f"{name} must be {expected}; got {got!r}.{' ' + fix if fix else ''}")


def check_hparams(**values: float) -> None:
    """Check that each value is a finite number in its usual range: lr, eps, weight_decay, momentum, lr_decay >= 0;
    betas in [0, 1), alpha in [0, 1]."""
    for name, v in values.items():
        if isinstance(v, Tensor):
            raise ConfigError(f"{name} must be a Python number; got a tensor ({v!r}): pass float({name})")
        check(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v), name, "a finite number",
              v)
        if name in ("beta1", "beta2"):
            check(0.0 <= v < 1.0, name, "in [0, 1)", v, "Typical values are 0.9 and 0.999.")
        elif name == "alpha":
            check(0.0 <= v <= 1.0, name, "in [0, 1]", v, "Typical values are 0.9 or 0.99.")
        else:
            check(v >= 0.0, name, ">= 0", v)


def group_by_device_dtype(*lists: list) -> dict[tuple, tuple[list, ...]]:
    """Split parallel lists by the (device, dtype) of the first list's tensors, so each `_foreach` call is uniform."""
    groups: dict[tuple, tuple[list, ...]] = defaultdict(lambda: tuple([] for _ in lists))
    for i, p in enumerate(lists[0]):
        bucket = groups[(p.device, p.dtype)]
        for out, src in zip(bucket, lists):
            out.append(src[i])
    return dict(groups)


def new_step() -> Tensor:
    """A step counter as torch keeps it (a float32 scalar tensor on the CPU), so state dicts are interchangeable."""
    return torch.tensor(0.0, dtype=torch.float32)


def increment(steps: list[Tensor]) -> list[float]:
    """Add 1 to every step counter and return the new values as Python floats."""
    if steps and all(s.is_cpu for s in steps):
        torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
    else:
        torch._foreach_add_(steps, 1.0)
    return [float(s) for s in steps]


def restore_defaults(optimizer: torch.optim.Optimizer) -> None:
    """Fill the hyper-parameters a loaded state dict lacks (e.g. one written by torch.optim) from our defaults."""
    for group in optimizer.param_groups:
        for key, value in optimizer.defaults.items():
            group.setdefault(key, value)
        if group.get("foreach") is None:  # torch.optim's "let torch decide": this optimizer's own choice
            group["foreach"] = optimizer.defaults.get("foreach", True)
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and "step" in state and not torch.is_tensor(state["step"]):
                state["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)


def run_closure(closure) -> Tensor | None:
    """The loss of `closure()` evaluated with gradients enabled (the `step(closure)` protocol), or None."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def groups_with_grads(optimizer: torch.optim.Optimizer, *, dense_real: bool = False):
    """(group, parameters that have a gradient) for every parameter group with at least one such parameter.

    `dense_real=True` (the adaptive methods, whose g*g is not |g|^2 for a complex g and whose updates are dense)
    refuses a complex parameter or a sparse gradient in one line instead of updating it wrongly.
    """
    found = []
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if dense_real and any(p.dtype.is_complex or p.grad.is_sparse for p in params):
            _refuse_complex_or_sparse(type(optimizer).__name__, params)
        if params:
            found.append((group, params))
    yield from found  # every group checked before the first is updated


def _refuse_complex_or_sparse(name: str, params: list[Tensor]) -> None:
    p = next(p for p in params if p.dtype.is_complex or p.grad.is_sparse)
    if p.dtype.is_complex:
        raise ConfigError(f"{name} updates real parameters; got a complex one of shape {tuple(p.shape)} (its g*g "
                          f"would not be |g|^2). Optimise torch.view_as_real of it instead, or use SGD or "
                          f"torch.optim.{name}, which treat a complex number as two real ones")
    raise ConfigError(f"{name} needs dense gradients; got a sparse gradient for a parameter of shape "
                      f"{tuple(p.shape)} (e.g. from nn.Embedding(sparse=True)). Use sparse=False, or SGD, "
                      f"torch.optim.SparseAdam or torch.optim.Adagrad, which take sparse gradients")
