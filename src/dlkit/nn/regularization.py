"""Regularisation: L2 / L1 penalties, weight decay (coupled and decoupled), parameter groups without decay,
and early stopping (Notes: 000 §2.1 overfitting remedies; 003 §2.3.1 early stopping, §2.3.2 weight decay;
002 §1.4.4 AdamW).

Conventions. The notes (003 §2.3.2) write the L2 penalty as lam * sum_i w_i^2, whose gradient is 2 lam w.
`l2_penalty` defaults to the halved form lam / 2 * sum_i w_i^2, whose gradient is exactly lam * w: the
coupled weight decay of `torch.optim.SGD(weight_decay=lam)` (grad += lam * w). Pass `half=False` for the
notes' form. Decoupled weight decay (AdamW, 002 §1.4.4) shrinks the weights outside the gradient:
theta <- theta - lam * theta in the notes (lam not scaled by the learning rate), theta <- theta - lr * lam * theta
in torch's AdamW; `decoupled_weight_decay_` does either.

The notes name no max-norm constraint and no label smoothing, so neither is here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..errors import ConfigError

_MODES = ("min", "max")


def _as_list(params: Iterable[Tensor] | Tensor) -> list[Tensor]:
    if isinstance(params, Tensor):
        return [params]
    params = list(params)
    if not all(isinstance(p, Tensor) for p in params):
        kinds = sorted({type(p).__name__ for p in params if not isinstance(p, Tensor)})
        raise ConfigError(f"expected an iterable of tensors (e.g. model.parameters()); got items of type {kinds}. "
                          "Pass the tensors, not parameter groups or names.")
    return params


def _check_coefficient(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0; got {value!r}")


def l2_penalty(params: Iterable[Tensor] | Tensor, lam: float, half: bool = True) -> Tensor:
    """L2 (ridge) penalty: lam / 2 * sum ||w||^2 (gradient lam * w), or lam * sum ||w||^2 with `half=False`.

    Notes: 003 §2.3.2 (L2 penalty = lam * sum_i w_i^2; the notes' form is `half=False`), 000 §2.1. The default
    halved form makes loss + l2_penalty(w, lam) train exactly like torch.optim.SGD(weight_decay=lam).
    """
    _check_coefficient("lam", lam)
    params = _as_list(params)
    if not params:
        return torch.zeros(())
    total = sum((p.pow(2).sum() for p in params), torch.zeros((), dtype=params[0].dtype, device=params[0].device))
    return (0.5 * lam if half else lam) * total


def l1_penalty(params: Iterable[Tensor] | Tensor, lam: float) -> Tensor:
    """L1 (lasso) penalty lam * sum |w|; its (sub)gradient is lam * sign(w). Notes: 000 §2.1 (regularisation)."""
    _check_coefficient("lam", lam)
    params = _as_list(params)
    if not params:
        return torch.zeros(())
    total = sum((p.abs().sum() for p in params), torch.zeros((), dtype=params[0].dtype, device=params[0].device))
    return lam * total


@torch.no_grad()
def decoupled_weight_decay_(params: Iterable[Tensor] | Tensor, lr: float, lam: float,
                            scale_by_lr: bool = True) -> None:
    """Decoupled weight decay in place: theta <- theta - lr * lam * theta (torch AdamW), or - lam * theta.

    Notes: 002 §1.4.4 (AdamW: the decay -lam * theta is applied to the update, not to the gradient). The notes'
    lam is not multiplied by the learning rate: that is `scale_by_lr=False`; torch's AdamW multiplies it
    (`scale_by_lr=True`), so lam_notes = lr * lam_torch.
    """
    _check_coefficient("lr", lr)
    _check_coefficient("lam", lam)
    factor = 1.0 - (lr * lam if scale_by_lr else lam)
    for p in _as_list(params):
        p.mul_(factor)


_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def weight_decay_param_groups(model: nn.Module, weight_decay: float, skip: Iterable[str] = ("bias", "norm"),
                              skip_1d: bool = True) -> list[dict]:
    """Two optimizer parameter groups: decayed weights, and biases / norm parameters with weight_decay 0.

    Notes: 003 §2.3.2 ("biases are usually excluded" from the penalty). As timm does, a trainable parameter
    is not decayed when it has at most one dimension (`skip_1d`), or when a `skip` word appears (case-insensitive)
    in its name or, for "norm", its module is a normalisation layer (BatchNorm, LayerNorm, GroupNorm, ...
    or any module whose class name contains "Norm"). Frozen parameters are left out.
    Returns [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}].
    """
    _check_coefficient("weight_decay", weight_decay)
    if isinstance(skip, str):
        skip = (skip,)
    words = [w.lower() for w in skip]
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()
        for local, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            name = f"{module_name}.{local}".lower() if module_name else local.lower()
            skipped = (skip_1d and p.ndim <= 1) or any(w in name for w in words) or ("norm" in words and is_norm)
            (no_decay if skipped else decay).append(p)
    return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]


class EarlyStopping:
    """Stop when the monitored value has not improved for `patience` steps. Notes: 003 §2.3.1, 000 §2.1.

    An improvement is value < best - min_delta (mode "min", e.g. a validation loss) or value > best + min_delta
    (mode "max", e.g. an accuracy); NaN never improves. `step(value)` returns True once `patience` consecutive
    steps brought no improvement. `best` and `best_step` (0-based index of the `step` call) give the best value;
    passing `model` to `step` keeps a copy of its weights at the best step, which `restore_best(model)` loads back.
    """

    def __init__(self, patience: int = 5, mode: str = "min", min_delta: float = 0.0):
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 0:
            raise ConfigError(f"patience must be an integer >= 0; got {patience!r}")
        if mode not in _MODES:
            raise ConfigError(f"mode must be one of {_MODES}; got {mode!r} ('min' for losses, 'max' for accuracies)")
        _check_coefficient("min_delta", min_delta)
        self.patience, self.mode, self.min_delta = patience, mode, float(min_delta)
        self.best: float = math.inf if mode == "min" else -math.inf
        self.best_step: int | None = None
        self.num_bad = 0
        self.num_steps = 0
        self.best_state: dict[str, Tensor] | None = None
        self.should_stop = False

    def improved(self, value: float) -> bool:
        """Whether `value` beats the best by more than min_delta."""
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value: float | Tensor, model: nn.Module | None = None) -> bool:
        """Record one monitored value (one epoch); return True when training should stop."""
        value = float(value)
        if self.improved(value):
            self.best, self.best_step, self.num_bad = value, self.num_steps, 0
            if model is not None:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.num_bad += 1
        self.num_steps += 1
        self.should_stop = 0 < self.num_bad and self.num_bad >= self.patience
        return self.should_stop

    def restore_best(self, model: nn.Module) -> nn.Module:
        """Load the weights kept at the best step into `model`."""
        if self.best_state is None:
            raise ConfigError("no best weights were kept: pass the model to step(value, model) to keep them")
        model.load_state_dict(self.best_state)
        return model

    def __repr__(self) -> str:
        return (f"EarlyStopping(patience={self.patience}, mode={self.mode!r}, min_delta={self.min_delta}, "
                f"best={self.best}, best_step={self.best_step}, num_bad={self.num_bad})")
