"""Gradient descent with full batches, mini-batches and single samples (Notes: 002 §1.1; 000 §2.1; 003 §2.2.3).

An epoch of mini-batch SGD (002 §1.1): shuffle D_train, then for u = 0, ..., U - 1 with U = ceil(N / B)
take the samples B u, ..., B (u + 1) - 1 (the last batch may be smaller), compute the loss and its gradient,
and update theta^(eU+u+1) = theta^(eU+u) - eta * grad L. The notes loop u = 0, ..., U, which is U + 1
iterations: that is an erratum, corrected here.
The three modes of 000 §2.1 / 003 §2.2.3 are batch sizes: B = N full-batch (one update per epoch, the mean
gradient over all samples), B = 1 online / stochastic (N updates per epoch), otherwise mini-batch.
The notes' 000 §2.1 update "w = w + mu grad L" is gradient ascent; the descent step w <- w - mu grad L is used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..engine.callbacks import Callback
from ..errors import ConfigError


def num_batches(n: int, batch_size: int) -> int:
    """Updates per epoch U = ceil(N / B). Notes: 002 §1.1 (u runs over 0..U-1, erratum corrected)."""
    _check_sizes(n, batch_size)
    return math.ceil(n / batch_size)


def batching_mode(n: int, batch_size: int) -> str:
    """'full-batch' (B = N), 'online' (B = 1) or 'mini-batch' (1 < B < N). Notes: 000 §2.1."""
    _check_sizes(n, batch_size)
    if batch_size == n:
        return "full-batch"
    return "online" if batch_size == 1 else "mini-batch"


def _check_sizes(n: int, batch_size: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"the number of samples N must be a positive integer; got {n!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ConfigError(f"batch_size must be an integer in [1, N={n}]; got {batch_size!r}. "
                          f"Use {n} for full-batch, 1 for online, anything between for mini-batch.")


def minibatch_indices(n: int, batch_size: int, generator: torch.Generator | None = None,
                      shuffle: bool = True) -> list[Tensor]:
    """Index tensors of one epoch: batch u holds perm[B u : B (u + 1)], u = 0..ceil(N/B) - 1. Notes: 002 §1.1.

    `perm` is a random permutation drawn from `generator` (the shuffle of step 1), or 0..N-1 with
    `shuffle=False`. Every sample appears exactly once per epoch; only the last batch may be smaller.
    """
    _check_sizes(n, batch_size)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    return list(order.split(batch_size))


@dataclass
class GDHistory:
    """What `gradient_descent` records (Notes: 002 §1.1; the loss-vs-time curves of the three modes).

    loss[e]: loss on the whole training set after e epochs (loss[0] is at the start), time[e]: cumulative
    wall-clock seconds spent in the updates of epochs 1..e (time[0] = 0; evaluation excluded; all zeros when
    `record_time=False`), batch_loss: the loss of every update, steps: the number of updates.
    """

    loss: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    batch_loss: list[float] = field(default_factory=list)
    steps: int = 0
    batch_size: int = 0
    mode: str = ""


def _full_loss(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float(loss_fn(model(x), y))


def gradient_descent(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
                     batch_size: int | None = None, lr: float = 0.01, epochs: int = 1,
                     generator: torch.Generator | None = None, shuffle: bool = True,
                     record_time: bool = True) -> GDHistory:
    """Train `model` in place by plain gradient descent theta <- theta - lr * grad L(batch). Notes: 002 §1.1.

    `loss_fn(prediction, target)` must average over the batch (003 §2.2.3: the batch gradient is the MEAN of
    the per-sample gradients). `batch_size` None or N: full-batch; 1: online; else mini-batch. Each epoch
    reshuffles with `generator` (unless `shuffle=False`) and makes ceil(N / B) updates.
    """
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"x and y must have the same number of samples; got {x.shape[0]} and {y.shape[0]}")
    n = x.shape[0]
    batch_size = n if batch_size is None else batch_size
    _check_sizes(n, batch_size)
    if not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be an integer >= 0; got {epochs!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be a finite number > 0; got {lr!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters (requires_grad=True) to descend on")
    hist = GDHistory(batch_size=batch_size, mode=batching_mode(n, batch_size))
    hist.loss.append(_full_loss(model, loss_fn, x, y))
    hist.time.append(0.0)
    elapsed = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        for idx in minibatch_indices(n, batch_size, generator, shuffle):
            loss = loss_fn(model(x[idx]), y[idx])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(lr * g)
            hist.batch_loss.append(float(loss.detach()))
            hist.steps += 1
        if record_time:
            elapsed += time.perf_counter() - start
        hist.time.append(elapsed)
        hist.loss.append(_full_loss(model, loss_fn, x, y))
    return hist


def least_squares(x: Tensor, y: Tensor, bias: bool = True) -> tuple[Tensor, Tensor]:
    """Closed-form linear least squares (w*, b*) = argmin mean((x w + b - y)^2). Notes: 003 §1.2.2 (dJ/dw = 0).

    Solves the normal equations w* = (X^T X)^-1 X^T y (X with a column of ones when `bias`) by a
    least-squares solve. x: [N, d], y: [N] or [N, k]; returns w [d] or [d, k] and b (0 when `bias=False`).
    """
    if x.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ConfigError(f"least_squares needs x [N, d] and y [N] or [N, k]; got {tuple(x.shape)} and "
                          f"{tuple(y.shape)}")
    design = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1) if bias else x
    sol = torch.linalg.lstsq(design, y.unsqueeze(1) if y.dim() == 1 else y).solution
    sol = sol.squeeze(1) if y.dim() == 1 else sol
    if bias:
        return sol[:-1], sol[-1]
    return sol, torch.zeros_like(sol[0])


def train_linear_regression(x: Tensor, y: Tensor, batch_size: int | None = None, lr: float = 0.01,
                            epochs: int = 100, generator: torch.Generator | None = None
                            ) -> tuple[nn.Linear, GDHistory]:
    """Linear regression y ~ x w + b fitted by `gradient_descent` on the mean squared error. Notes: 002 §1.1.

    The weights start at random N(0, 0.01) values drawn from `generator` (000 §2.1 step 1), the bias at 0.
    x: [N, d], y: [N]; returns the fitted nn.Linear(d, 1) and its history.
    """
    if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ConfigError(f"train_linear_regression needs x [N, d] and y [N]; got {tuple(x.shape)} and "
                          f"{tuple(y.shape)}")
    model = nn.Linear(x.shape[1], 1).to(x.dtype)
    with torch.no_grad():
        model.weight.normal_(0.0, 0.1, generator=generator)
        model.bias.zero_()
    hist = gradient_descent(model, lambda pred, t: ((pred.squeeze(1) - t) ** 2).mean(), x, y, batch_size, lr,
                            epochs, generator)
    return model, hist


class GDHistoryRecorder(Callback):
    """Fills a `GDHistory` from a Trainer run (Notes: 002 §1.1, the loss-against-time curves of the three modes):
    after each evaluation, the evaluated `metric` (the loss on the whole training set when that is the evaluation
    data) and the cumulative seconds spent in updates, evaluations excluded; `steps` counts the updates."""

    def __init__(self, history: GDHistory, metric: str = "val/loss"):
        self.history, self.metric = history, metric
        self._mark = self._last = 0.0
        self._elapsed = history.time[-1] if history.time else 0.0

    def on_train_start(self, trainer) -> None:
        self._mark = self._last = time.perf_counter()

    def on_step_end(self, trainer, outputs: dict) -> None:
        self._last = time.perf_counter()
        self.history.steps += 1

    def on_eval_end(self, trainer, metrics: dict[str, float]) -> None:
        self._elapsed += max(self._last - self._mark, 0.0)  # from the start or the last evaluation to the last step
        self._mark = time.perf_counter()
        self.history.loss.append(float(metrics[self.metric]))
        self.history.time.append(self._elapsed)
