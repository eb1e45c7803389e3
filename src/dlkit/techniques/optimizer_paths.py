"""Optimizers on 2-D test functions: the sphere, the canyon and Rosenbrock's valley (Notes: 002 §1.1-1.4,
Figs 1.1-1.8; 000 §2.3).

`trajectory` runs any `dlkit.optim` optimizer on a function of a 2-vector and records every iterate,
so the paths can be drawn on the contour plot: SGD oscillates across a canyon, momentum and Nesterov
run along it, AdaGrad's steps shrink before the minimum, Adam rescales each axis.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError


def sphere(w: Tensor) -> Tensor:
    """Isotropic paraboloid f = w1^2 + w2^2 (002 Fig. 1.2)."""
    return (w**2).sum(-1)


def canyon(w: Tensor, a: float = 20.0, b: float = 1.0) -> Tensor:
    """Ill-conditioned quadratic f = a w1^2 + b w2^2, a >> b (002 Fig. 1.3): condition number a / b."""
    return a * w[..., 0] ** 2 + b * w[..., 1] ** 2


def rosenbrock(w: Tensor, a: float = 1.0, b: float = 100.0) -> Tensor:
    """Rosenbrock's banana valley f = (a - w1)^2 + b (w2 - w1^2)^2, minimum 0 at (a, a^2)."""
    return (a - w[..., 0]) ** 2 + b * (w[..., 1] - w[..., 0] ** 2) ** 2


FUNCTIONS = {"sphere": (sphere, (0.0, 0.0)), "canyon": (canyon, (0.0, 0.0)), "rosenbrock": (rosenbrock, (1.0, 1.0))}


def trajectory(optimizer: str, function: str, start: tuple[float, float], steps: int, lr: float,
               noise: float = 0.0, seed: int = 0, **options) -> Tensor:
    """The iterates [steps + 1, 2] of `optimizer` (a `dlkit.optim.create_optimizer` name) on `function`.

    `noise` adds N(0, noise^2) to every gradient, as mini-batches do (002 Fig. 1.8).
    """
    from ..optim import create_optimizer

    if function not in FUNCTIONS:
        raise ConfigError(f"function must be one of {sorted(FUNCTIONS)}; got {function!r}")
    f = FUNCTIONS[function][0]
    w = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = create_optimizer(optimizer, [w], lr=lr, **options)
    g = torch.Generator().manual_seed(seed)
    path = [w.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        f(w).backward()
        if noise:
            w.grad += noise * torch.randn(2, generator=g, dtype=torch.float64)
        opt.step()
        if not torch.isfinite(w).all():
            raise ConfigError(f"{optimizer} diverged on {function} with lr={lr}: lower the learning rate")
        path.append(w.detach().clone())
    return torch.stack(path)


def distance_to_minimum(path: Tensor, function: str) -> float:
    """Euclidean distance of the last iterate to the function's minimiser."""
    return float((path[-1] - torch.tensor(FUNCTIONS[function][1], dtype=path.dtype)).norm())


# each optimizer runs at the learning rate of LR_GRID that ends lowest on the function (a fair race)
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)


def best_lr_trajectory(optimizer: str, options: dict, function: str, start: tuple[float, float], steps: int,
                       noise: float = 0.0, seed: int = 0, lrs=LR_GRID) -> tuple[float, Tensor]:
    """(lr, path) of the learning rate of `lrs` whose last iterate has the lowest function value; learning rates
    that diverge are skipped. 'momentum' means SGD with `options['momentum']`. Notes: 002 §1 (each optimizer at
    its own best step size, so the comparison is of the update rules, not of one shared lr)."""
    f, best = FUNCTIONS[function][0], None
    for lr in lrs:
        try:
            p = trajectory("sgd" if optimizer == "momentum" else optimizer, function, start, steps, lr, noise=noise,
                           seed=seed, **options)
        except ConfigError:  # diverged: too large a step for this optimizer
            continue
        value = float(f(p[-1]))
        if best is None or value < best[0]:
            best = (value, lr, p)
    if best is None:
        raise ConfigError(f"{optimizer} diverged on {function} at every learning rate of {list(lrs)}; add smaller ones")
    return best[1], best[2]
