"""Newton's method, the second-order optimizer of the notes (Notes: 002 §1.2).

Newton fits the second-order Taylor expansion `f(x + d) ~ f(x) + f'(x) d + 1/2 f''(x) d^2` at the current point
and jumps to the minimum of that parabola, `d = -f'(x) / f''(x)`; in k dimensions `d = -H^{-1} grad f`. A
quadratic is its own expansion, so one step lands on its minimum. The Hessian costs O(k^2) memory and the solve
O(k^3) time, which is why deep networks use first-order methods.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import ConfigError
from ._common import check


def newton_1d(f_prime: Callable[[float], float], f_second: Callable[[float], float], x0: float, steps: int = 1,
              return_path: bool = False) -> float | list[float]:
    """Minimise a 1-D function with Newton's method; the last iterate (or all of them with `return_path`).

    Notes: 002 §1.2. `x_{t+1} = x_t - f'(x_t) / f''(x_t)`.
    """
    check(steps >= 0, "steps", ">= 0", steps)
    path = [float(x0)]
    for _ in range(steps):
        x = path[-1]
        curvature = float(f_second(x))
        if curvature == 0:
            raise ConfigError(f"f''({x}) = 0, so the Newton step -f'/f'' is undefined; start from another x0.")
        path.append(x - float(f_prime(x)) / curvature)
    return path if return_path else path[-1]


def newton_step(grad: Tensor, hessian: Tensor, x: Tensor, lr: float = 1.0) -> Tensor:
    """One general second-order step, solving `H d = grad` instead of inverting H.

    Notes: 002 §1.2. `x_{t+1} = x_t - lr H_f(x_t)^{-1} grad f(x_t)`.
    """
    k = x.numel()
    if grad.numel() != k or hessian.shape != (k, k):
        raise ConfigError(f"newton_step expects grad with {k} entries and a ({k}, {k}) Hessian for x of shape "
                          f"{tuple(x.shape)}; got grad {tuple(grad.shape)} and Hessian {tuple(hessian.shape)}.")
    d = torch.linalg.solve(hessian, grad.reshape(k, 1)).reshape(x.shape)
    return x - lr * d


def grad_and_hessian(f: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient (k,) and Hessian (k, k) of a scalar function `f` at `x` (any shape, k entries), by autograd.

    Notes: 002 §1.2. `grad_i = df/dx_i`, `H_ij = d^2 f / dx_i dx_j`.
    """
    shape = x.shape
    flat = lambda v: f(v.reshape(shape))
    x = x.detach().reshape(-1)
    g = torch.autograd.functional.jacobian(flat, x)
    h = torch.autograd.functional.hessian(flat, x)
    if g.shape != x.shape:
        raise ConfigError(f"f must return a scalar; its gradient has shape {tuple(g.shape)} for {x.numel()} inputs.")
    return g, h


def newton_minimize(f: Callable[[Tensor], Tensor], x0: Tensor, steps: int = 1, lr: float = 1.0,
                    return_path: bool = False) -> Tensor | list[Tensor]:
    """Minimise a scalar function of a tensor with Newton's method, derivatives by autograd.

    Notes: 002 §1.2. `x_{t+1} = x_t - lr H_f(x_t)^{-1} grad f(x_t)`.
    """
    check(steps >= 0, "steps", ">= 0", steps)
    path = [x0.detach().clone()]
    for _ in range(steps):
        g, h = grad_and_hessian(f, path[-1])
        path.append(newton_step(g, h, path[-1], lr))
    return path if return_path else path[-1]
