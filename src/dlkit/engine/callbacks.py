"""Trainer callbacks: code that runs at fixed points of the loop without the loop knowing what it does.

Hooks: `on_train_start`, `on_step_end` (after every optimizer step, with the step's outputs),
`on_eval_end` (after every evaluation, with its metrics) and `on_fit_end`. A callback that keeps
state across a run (early stopping's best value and weights) has `state_dict`/`load_state_dict`;
the Trainer puts it in the checkpoint, so a resumed run stops where an uninterrupted one would.
Sample grids during training, EMA swaps and early stopping are callbacks (Notes: 000 §2.5 for
early stopping as a regulariser).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Base class: override the hooks you need; `trainer.request_stop(reason)` ends training."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, outputs: dict) -> None: ...

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved for `patience` evaluations; keep the best weights and restore them
    at the end (whether it stopped the fit or the fit ran its length past its best evaluation), and with them their
    metrics as the fit's result (Notes: 000 §2.5, 003 §2.3.1). With EMA on, the weights evaluated (the EMA's) are
    the ones kept."""

    def __init__(self, monitor: str = "val/loss", mode: str = "min", patience: int = 5):
        if mode not in ("min", "max"):
            raise ConfigError(f"monitor_mode must be 'min' or 'max'; got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"early_stopping_patience must be a whole number >= 1; got {patience!r}")
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.best: float | None = None
        self.bad_evals = 0
        self.best_state: dict | None = None
        self.best_metrics: dict[str, float] = {}
        self.stopped = False

    def _improved(self, value: float) -> bool:
        if self.best is None or math.isnan(self.best):
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if self.monitor not in metrics:
            raise ConfigError(f"early stopping watches '{self.monitor}', which the task does not log; it logs "
                              f"{', '.join(sorted(metrics))}. Set monitor to one of them")
        value = metrics[self.monitor]
        if self._improved(value):
            self.best, self.bad_evals = value, 0
            self.best_state = {k: v.detach().clone() for k, v in trainer.eval_model.state_dict().items()}
            self.best_metrics = dict(metrics)
            return
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            self.stopped = True
            trainer.request_stop(f"early stopping: {self.monitor} did not improve for {self.bad_evals} evaluations "
                                 f"(best {self.best:.5g}); restored the best weights")

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.best_state is not None and self.bad_evals:  # stopped, or ran out of steps past its best evaluation
            trainer.eval_model.load_state_dict(self.best_state)
            trainer.last_metrics.update(self.best_metrics)  # fit() returns the metrics of the weights it returns

    def state_dict(self) -> dict:
        state: dict = {"best": self.best, "bad_evals": self.bad_evals, "stopped": self.stopped,
                       "best_metrics": self.best_metrics}
        if self.best_state is not None:
            state["best_state"] = self.best_state
        return state

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_evals = state["best"], state["bad_evals"]
        self.stopped = state.get("stopped", False)
        self.best_state = state.get("best_state")
        self.best_metrics = dict(state.get("best_metrics", {}))


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. `LambdaCallback(on_eval_end=lambda trainer, metrics: ...)`."""

    def __init__(self, **hooks):
        bad = set(hooks) - {"on_train_start", "on_step_end", "on_eval_end", "on_fit_end"}
        if bad:
            raise ConfigError(f"unknown callback hooks {sorted(bad)}; expected on_train_start, on_step_end, "
                              "on_eval_end or on_fit_end")
        for name, fn in hooks.items():
            setattr(self, name, fn)


DIVERGED_ADVICE = ". Lower the learning rate or enable gradient clipping (--set grad_clip_norm=1.0)"


def finite_or_raise(values: dict, where: str, remedy: str | Callable[[], str] = DIVERGED_ADVICE) -> None:
    """Raise TrainingDiverged if a scalar tensor in `values` is NaN or infinite (the NaN guard); the message is
    "<name> became nan <where>: training stopped<remedy>" (`remedy` may be a function, called only then)."""
    from ..errors import TrainingDiverged

    for name, v in values.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1 and not torch.isfinite(v.detach()).item():
            advice = remedy() if callable(remedy) else remedy
            raise TrainingDiverged(f"{name} became {v.item()} {where}: training stopped{advice}")
