"""Optimizers from their update rules, Newton's method, learning-rate schedules and gradient clipping.

Notes: 002 §1 (SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam, AdamW, Newton), 000 §2.1, 003 §2.2.6.
Every optimizer is a `torch.optim.Optimizer` with torch's state keys, so state dicts are interchangeable with
torch.optim; recipes build them by name with `create_optimizer` and `create_scheduler`.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..errors import ConfigError, unknown
from ._common import check
from .adagrad import Adagrad
from .adam import Adam
from .adamw import AdamW
from .clip import clip_grad_norm_, clip_grad_value_
from .newton import grad_and_hessian, newton_1d, newton_minimize, newton_step
from .rmsprop import RMSprop
from .schedules import (
    CosineAnnealingLR,
    ExponentialLR,
    FixedLR,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    StepLR,
    WarmupCosineLR,
)
from .sgd import SGD

_OPTIMIZERS = ("sgd", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "amsgrad")
_SCHEDULERS = ("none", "constant", "step", "multistep", "exponential", "cosine", "warmup_cosine", "onecycle",
               "plateau")


def list_optimizers() -> list[str]:
    """Names accepted by `create_optimizer`."""
    return sorted(_OPTIMIZERS)


def list_schedulers() -> list[str]:
    """Names accepted by `create_scheduler`."""
    return sorted(_SCHEDULERS)


def create_optimizer(name: str, params, lr: float, weight_decay: float | None = None,
                     momentum: float | None = None, **kw) -> Optimizer:
    """Build an optimizer by name; `momentum` is for sgd, nesterov (0 or None means 0.9) and rmsprop only.

    Notes: 002 §1. 'nesterov' is SGD with Nesterov momentum, 'amsgrad' is Adam with AMSGrad; `weight_decay` is
    L2 (added to the gradient) except for 'adamw', where it is decoupled; None: the class's default (0, and 0.01
    for adamw, as torch.optim). Extra keywords go to the class.
    """
    if not isinstance(name, str):
        raise ConfigError(f"the optimizer is named by a string, one of {', '.join(_OPTIMIZERS)}; got {name!r}")
    key = name.lower()
    if momentum and key in ("adagrad", "adam", "amsgrad", "adamw"):
        raise ConfigError(f"momentum={momentum} is for sgd, nesterov and rmsprop; {key} has no momentum argument "
                          "(Adam's first-moment decay is betas[0]): remove it or choose sgd")
    if weight_decay is None:
        weight_decay = 0.01 if key == "adamw" else 0.0
    momentum = momentum or 0.0
    if key == "sgd":
        return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kw)
    if key == "nesterov":
        return SGD(params, lr=lr, momentum=momentum or 0.9, weight_decay=weight_decay, nesterov=True, **kw)
    if key == "adagrad":
        return Adagrad(params, lr=lr, weight_decay=weight_decay, **kw)
    if key == "rmsprop":
        return RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kw)
    if key in ("adam", "amsgrad"):
        return Adam(params, lr=lr, weight_decay=weight_decay, amsgrad=key == "amsgrad", **kw)
    if key == "adamw":
        return AdamW(params, lr=lr, weight_decay=weight_decay, **kw)
    raise unknown("optimizer", name, _OPTIMIZERS, "dlkit.optim.list_optimizers()")


def create_scheduler(name: str, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0,
                     **kw) -> LRScheduler:
    """Build a schedule by name, stepped once per optimizer step over a run of `total_steps` steps.

    Notes: 003 §2.2.6. Defaults: 'step' divides the lr by 10 every total/3 steps, 'multistep' at 1/2 and 3/4 of
    the run, 'exponential' decays it 100x over the run, 'cosine' anneals to 0 at total_steps (after a linear
    warm-up when warmup_steps > 0, like 'warmup_cosine'), 'onecycle' peaks at the optimizer's lr (momentum is
    cycled when the optimizer has betas or non-zero momentum), 'plateau' needs `step(metric)` per evaluation.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _SCHEDULERS:
        raise unknown("scheduler", str(name), _SCHEDULERS, "dlkit.optim.list_schedulers()")
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    check(whole(total_steps) and total_steps >= 1, "total_steps", "a whole number >= 1 (optimizer steps in the run)",
          total_steps)
    check(whole(warmup_steps) and warmup_steps >= 0, "warmup_steps", "a whole number >= 0", warmup_steps)
    total = total_steps
    if key in ("none", "constant"):
        return FixedLR(optimizer, **kw)
    if key == "step":
        return StepLR(optimizer, step_size=kw.pop("step_size", max(1, total // 3)), gamma=kw.pop("gamma", 0.1), **kw)
    if key == "multistep":
        milestones = kw.pop("milestones", [total // 2, (3 * total) // 4])
        return MultiStepLR(optimizer, milestones, gamma=kw.pop("gamma", 0.1), **kw)
    if key == "exponential":
        return ExponentialLR(optimizer, gamma=kw.pop("gamma", math.exp(math.log(0.01) / total)), **kw)
    if key in ("cosine", "warmup_cosine") and warmup_steps > 0:
        return WarmupCosineLR(optimizer, warmup_steps=min(warmup_steps, total), total_steps=total, **kw)
    if key in ("cosine", "warmup_cosine"):
        return CosineAnnealingLR(optimizer, T_max=total, **kw)
    if key == "onecycle":
        groups = optimizer.param_groups
        has_momentum = all("betas" in g or g.get("momentum", 0) > 0 for g in groups)
        return OneCycleLR(optimizer, total_steps=total, cycle_momentum=kw.pop("cycle_momentum", has_momentum), **kw)
    return ReduceLROnPlateau(optimizer, **kw)


__all__ = [
    "SGD", "Adagrad", "RMSprop", "Adam", "AdamW",
    "FixedLR", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "WarmupCosineLR", "OneCycleLR",
    "ReduceLROnPlateau",
    "clip_grad_norm_", "clip_grad_value_",
    "newton_1d", "newton_step", "grad_and_hessian", "newton_minimize",
    "create_optimizer", "create_scheduler", "list_optimizers", "list_schedulers",
]
