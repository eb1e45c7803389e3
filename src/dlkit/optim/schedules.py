"""Learning-rate schedules, each written as a closed-form function of the step (Notes: 003 §2.2.6).

The notes say the learning rate "can be fixed, but adaptive approaches are more used". A schedule sets every
param group's lr from its base lr and the step count t = 0, 1, ... (`last_epoch`); recipes step it once per
optimizer step. The classes are `torch.optim.lr_scheduler.LRScheduler` subclasses, so they plug into any
PyTorch loop, and equal their torch counterparts (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
OneCycleLR, ReduceLROnPlateau) over the steps a run uses. Because the lr is a function of t alone, a schedule
overrides lr changes made by hand between steps.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.lr_scheduler import ReduceLROnPlateau as _TorchPlateau

from ..errors import ConfigError
from ._common import check


class _ClosedForm(LRScheduler):
    """A schedule whose lr at step t is `self.lr_at(t, base_lr)` for each param group."""

    def lr_at(self, t: int, base_lr: float) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()


class FixedLR(_ClosedForm):
    """A fixed learning rate (the notes' "fixed" option; unlike torch's ConstantLR there is no factor).

    Notes: 003 §2.2.6. `lr_t = lr_0`.
    """

    def lr_at(self, t: int, base_lr: float) -> float:
        return base_lr


class StepLR(_ClosedForm):
    """Step decay: multiply the lr by gamma every `step_size` steps.

    Notes: 003 §2.2.6. `lr_t = lr_0 * gamma^floor(t / step_size)`.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        check(int(step_size) >= 1, "StepLR step_size", "an integer >= 1", step_size)
        check(gamma > 0, "StepLR gamma", "> 0", gamma)
        self.step_size, self.gamma = int(step_size), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int, base_lr: float) -> float:
        return base_lr * self.gamma ** (t // self.step_size)


class MultiStepLR(_ClosedForm):
    """Multiply the lr by gamma at each milestone step.

    Notes: 003 §2.2.6. `lr_t = lr_0 * gamma^(number of milestones <= t)`.
    """

    def __init__(self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1, last_epoch: int = -1):
        check(all(int(m) >= 0 for m in milestones), "MultiStepLR milestones", "steps >= 0", milestones)
        self.milestones, self.gamma = sorted(int(m) for m in milestones), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int, base_lr: float) -> float:
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, t)


class ExponentialLR(_ClosedForm):
    """Exponential decay: multiply the lr by gamma every step.

    Notes: 003 §2.2.6. `lr_t = lr_0 * gamma^t`.
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        check(gamma > 0, "ExponentialLR gamma", "> 0", gamma)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int, base_lr: float) -> float:
        return base_lr * self.gamma**t


def _cosine(t: float, total: float, high: float, low: float) -> float:
    """Half a cosine from `high` at t = 0 to `low` at t = total (and `low` after)."""
    if total <= 0:
        return low
    return low + (high - low) * (1 + math.cos(math.pi * min(t, total) / total)) / 2


class CosineAnnealingLR(_ClosedForm):
    """Cosine annealing from the base lr to `eta_min` over `T_max` steps (Loshchilov & Hutter, SGDR, no restarts).

    Notes: 003 §2.2.6. `lr_t = eta_min + (lr_0 - eta_min) (1 + cos(pi t / T_max)) / 2` for t <= T_max, then eta_min
    (torch's CosineAnnealingLR instead climbs back up after T_max).
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        check(T_max >= 1, "CosineAnnealingLR T_max", ">= 1 (the number of steps of the run)", T_max)
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int, base_lr: float) -> float:
        return _cosine(t, self.T_max, base_lr, self.eta_min)


class WarmupCosineLR(_ClosedForm):
    """Linear warm-up for `warmup_steps` steps, then cosine annealing to `eta_min` at `total_steps`.

    Notes: 003 §2.2.6. `lr_t = lr_0 (s + (1 - s) t / W)` for t < W, then
    `eta_min + (lr_0 - eta_min) (1 + cos(pi (t - W) / (T - W))) / 2`, and eta_min after T. The default start
    factor `s = 1 / (W + 1)` gives nanoGPT's `lr_0 (t + 1) / (W + 1)`, so no step is taken with lr 0.
    Equal to SequentialLR([LinearLR(s, 1, W), CosineAnnealingLR(T - W, eta_min)], milestones=[W]).
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, eta_min: float = 0.0,
                 start_factor: float | None = None, last_epoch: int = -1):
        check(0 <= warmup_steps <= total_steps, "WarmupCosineLR warmup_steps", f"in [0, total_steps={total_steps}]",
              warmup_steps)
        self.warmup_steps, self.total_steps, self.eta_min = warmup_steps, total_steps, eta_min
        self.start_factor = 1 / (warmup_steps + 1) if start_factor is None else start_factor
        check(0 <= self.start_factor <= 1, "WarmupCosineLR start_factor", "in [0, 1]", self.start_factor)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int, base_lr: float) -> float:
        w, s = self.warmup_steps, self.start_factor
        if t < w:
            return base_lr * (s + (1 - s) * t / w)
        return _cosine(t - w, self.total_steps - w, base_lr, self.eta_min)


class OneCycleLR(LRScheduler):
    """One-cycle policy (Smith & Topin, 2018): lr up from max_lr/div_factor to max_lr, then down to a tiny value.

    Notes: 003 §2.2.6. With `t1 = pct_start T - 1`: for t <= t1, `lr = A(max_lr / div, max_lr, t / t1)`; after,
    `lr = A(max_lr, max_lr / (div final_div), (t - t1) / (T - 1 - t1))`, where the cosine anneal is
    `A(a, b, p) = b + (a - b) (1 + cos(pi p)) / 2` (linear: `a + (b - a) p`). With `cycle_momentum` the momentum
    (or Adam's beta1) moves the opposite way, max_momentum -> base_momentum -> max_momentum. After step T - 1
    the lr stays at its final value (torch raises after T).
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, max_lr: float | Sequence[float] | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float = 0.85, max_momentum: float = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, last_epoch: int = -1):
        check(total_steps >= 1, "OneCycleLR total_steps", ">= 1", total_steps)
        check(0 <= pct_start <= 1, "OneCycleLR pct_start", "in [0, 1]", pct_start)
        check(anneal_strategy in ("cos", "linear"), "OneCycleLR anneal_strategy", "'cos' or 'linear'",
              anneal_strategy)
        groups = optimizer.param_groups
        if max_lr is None:
            max_lrs = [g.get("max_lr", g["lr"]) for g in groups]
        elif isinstance(max_lr, Sequence):
            check(len(max_lr) == len(groups), "OneCycleLR max_lr", f"one value per param group ({len(groups)})",
                  max_lr)
            max_lrs = [float(v) for v in max_lr]
        else:
            max_lrs = [float(max_lr)] * len(groups)
        self.total_steps, self.pct_start, self.anneal_strategy = total_steps, pct_start, anneal_strategy
        self.div_factor, self.final_div_factor = div_factor, final_div_factor
        self.cycle_momentum, self.base_momentum, self.max_momentum = cycle_momentum, base_momentum, max_momentum
        if last_epoch == -1:
            for g, m in zip(groups, max_lrs):
                g["initial_lr"], g["max_lr"] = m / div_factor, m
        if cycle_momentum:
            if not all("betas" in g or "momentum" in g for g in groups):
                raise ConfigError("OneCycleLR(cycle_momentum=True) needs an optimizer with momentum or betas "
                                  f"(SGD, RMSprop, Adam, AdamW); got {type(optimizer).__name__}. "
                                  "Pass cycle_momentum=False.")
            if last_epoch == -1:
                self._set_momentum(groups, max_momentum)
        super().__init__(optimizer, last_epoch)

    def _anneal(self, a: float, b: float, p: float) -> float:
        if self.anneal_strategy == "linear":
            return a + (b - a) * p
        return b + (a - b) * (1 + math.cos(math.pi * p)) / 2

    def _phase(self, t: int) -> tuple[int, float]:
        """Which phase (0 up, 1 down) step t is in, and the fraction p of that phase done."""
        t1 = self.pct_start * self.total_steps - 1
        if t1 > 0 and t <= t1:
            return 0, t / t1
        end = self.total_steps - 1
        return 1, 1.0 if end <= t1 else min((t - t1) / (end - t1), 1.0)

    def get_lr(self) -> list[float]:
        phase, p = self._phase(self.last_epoch)
        if self.cycle_momentum:
            lo, hi = self.base_momentum, self.max_momentum
            self._set_momentum(self.optimizer.param_groups, self._anneal(hi, lo, p) if phase == 0
                               else self._anneal(lo, hi, p))
        lrs = []
        for g in self.optimizer.param_groups:
            start, peak = g["initial_lr"], g["max_lr"]
            lrs.append(self._anneal(start, peak, p) if phase == 0 else
                       self._anneal(peak, start / self.final_div_factor, p))
        return lrs

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    @staticmethod
    def _set_momentum(groups: list[dict], value: float) -> None:
        for g in groups:
            if "betas" in g:
                g["betas"] = (value, *g["betas"][1:])
            else:
                g["momentum"] = value


class ReduceLROnPlateau(_TorchPlateau):
    """Multiply the lr by `factor` when a monitored metric has not improved for more than `patience` steps.

    Notes: 003 §2.2.6. Improvement in mode 'min': `a < best (1 - threshold)` (rel) or `a < best - threshold` (abs)
    ('max' mirrored); after `patience` bad evaluations `lr <- max(lr factor, min_lr)` (skipped when the change is
    below eps), then `cooldown` evaluations are not counted. Call `step(metric)` after each evaluation.
    Subclasses torch's class only so code that recognises plateau schedules (the Trainer) passes it the metric;
    the logic is written here.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float | Sequence[float] = 0.0, eps: float = 1e-8):
        check(mode in ("min", "max"), "ReduceLROnPlateau mode", "'min' or 'max'", mode)
        check(threshold_mode in ("rel", "abs"), "ReduceLROnPlateau threshold_mode", "'rel' or 'abs'", threshold_mode)
        check(0 < factor < 1, "ReduceLROnPlateau factor", "in (0, 1)", factor)
        n = len(optimizer.param_groups)
        min_lrs = list(min_lr) if isinstance(min_lr, Sequence) else [min_lr] * n
        check(len(min_lrs) == n, "ReduceLROnPlateau min_lr", f"one value per param group ({n})", min_lr)
        self.optimizer = optimizer
        self.mode, self.factor, self.patience, self.cooldown = mode, factor, patience, cooldown
        self.threshold, self.threshold_mode, self.min_lrs, self.eps = threshold, threshold_mode, min_lrs, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs, self.cooldown_counter, self.last_epoch = 0, 0, 0
        self._last_lr = [g["lr"] for g in optimizer.param_groups]

    def improved(self, value: float) -> bool:
        """Whether `value` beats the best so far by more than the threshold."""
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return value < (self.best * (1 - self.threshold) if rel else self.best - self.threshold)
        return value > (self.best * (1 + self.threshold) if rel else self.best + self.threshold)

    def step(self, metrics: float, epoch: int | None = None) -> None:
        """Record one evaluation of the monitored metric and lower the lr after `patience` bad ones."""
        value = float(metrics)
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        if self.improved(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for g, low in zip(self.optimizer.param_groups, self.min_lrs):
                new = max(g["lr"] * self.factor, low)
                if g["lr"] - new > self.eps:
                    g["lr"] = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)
