"""Universal approximation by a shallow network, built by hand (Notes: 000 §1.2 "Expressivity", 003 §1.2.2).

The notes: a shallow network (one hidden layer) can approximate any continuous f: R -> [0, 1] (000 §1.2);
Hornik 1991: one hidden layer of S-shaped units approximates any measurable function on a compact set to
any accuracy (003 §1.2.2), possibly with very many units. The constructive proof in one dimension:
take a grid x_0 < ... < x_n on [a, b] with spacing h = (b - a) / n, and thresholds t_i = (x_{i-1} + x_i) / 2.
A staircase of steps H(x - t_i) with heights f(x_i) - f(x_{i-1}),

    g(x) = f(x_0) + sum_{i=1..n} (f(x_i) - f(x_{i-1})) H(x - t_i),

is a one-hidden-layer network (hidden weights 1, biases -t_i, output weights the heights, output bias f(x_0)).
Two opposite steps make a "bump" c [H(x - s) - H(x - t)], and g is a sum of such bumps (telescoping).
On [t_i, t_{i+1}) it equals f(x_i) and |x - x_i| <= h / 2, so for an L-Lipschitz f the error is at most
L h / 2: it falls like 1/n. Replacing H by a steep sigmoid sigma(k (x - t_i)), k = steepness / h, gives an
S-shaped network with the same 1/n behaviour (the tails add at most a constant times L h).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn.activations import get_activation


class Step(nn.Module):
    """Heaviside step H(z) = 1 if z >= 0 else 0, the perceptron's threshold (Notes: 000 §1.1)."""

    def forward(self, z: Tensor) -> Tensor:
        return (z >= 0).to(z.dtype)


def _check_interval(a: float, b: float, n_units: int) -> None:
    if not b > a:
        raise ConfigError(f"the interval needs a < b; got a={a}, b={b}")
    if not isinstance(n_units, int) or n_units < 1:
        raise ConfigError(f"n_units must be a positive integer; got {n_units!r}")


def bump_network(f: Callable[[Tensor], Tensor], a: float, b: float, n_units: int, activation: str = "sigmoid",
                 steepness: float = 10.0, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """A one-hidden-layer network Linear(1, n) -> step or sigmoid -> Linear(n, 1) approximating f on [a, b].

    Notes: 000 §1.2, 003 §1.2.2. Hidden unit i is a step at t_i = a + (i - 1/2) h, h = (b - a) / n_units, with
    output weight f(x_i) - f(x_{i-1}); the output bias is f(a). activation 'step' uses H (exact staircase,
    error <= L h / 2 for L-Lipschitz f); 'sigmoid' uses sigma(k (x - t_i)) with k = steepness / h.
    Input [N, 1], output [N, 1].
    """
    _check_interval(a, b, n_units)
    if activation not in ("step", "sigmoid"):
        raise ConfigError(f"activation must be 'step' or 'sigmoid'; got {activation!r}")
    if not steepness > 0:
        raise ConfigError(f"steepness must be > 0; got {steepness!r}")
    h = (b - a) / n_units
    grid = torch.linspace(a, b, n_units + 1, dtype=dtype)
    values = f(grid).to(dtype)
    thresholds = grid[:-1] + h / 2
    slope = 1.0 if activation == "step" else steepness / h
    hidden, out = nn.Linear(1, n_units, dtype=dtype), nn.Linear(n_units, 1, dtype=dtype)
    with torch.no_grad():
        hidden.weight.fill_(slope)
        hidden.bias.copy_(-slope * thresholds)
        out.weight.copy_((values[1:] - values[:-1]).unsqueeze(0))
        out.bias.fill_(values[0])
    return nn.Sequential(hidden, Step() if activation == "step" else nn.Sigmoid(), out)


def max_error(net: nn.Module, f: Callable[[Tensor], Tensor], a: float, b: float, n_points: int = 10_001,
              dtype: torch.dtype = torch.float64) -> float:
    """Sup-norm error max |net(x) - f(x)| over `n_points` equally spaced x in [a, b] (the eps of 003 §1.2.2)."""
    x = torch.linspace(a, b, n_points, dtype=dtype)
    with torch.no_grad():
        return float((net(x.unsqueeze(1)).squeeze(1) - f(x)).abs().max())


def fit_shallow_network(f: Callable[[Tensor], Tensor], a: float, b: float, n_units: int = 50,
                        activation: str = "tanh", steps: int = 2000, lr: float = 1e-2, n_points: int = 256,
                        generator: torch.Generator | None = None) -> tuple[nn.Sequential, float]:
    """Train a one-hidden-layer network on f sampled on [a, b]; return it and its final training MSE.

    Notes: 003 §1.2.2 (the theorem says the weights exist, not that training finds them; here it does for a
    smooth 1-D target). Hidden weights start at U(-1, 1) from `generator`; Adam with a mean squared error.
    """
    _check_interval(a, b, n_units)
    x = torch.linspace(a, b, n_points).unsqueeze(1)
    y = f(x.squeeze(1)).unsqueeze(1).to(x.dtype)
    net = nn.Sequential(nn.Linear(1, n_units), get_activation(activation), nn.Linear(n_units, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-1.0, 1.0, generator=generator)
        net[0].weight.mul_(3.0)  # spread the units' kinks over the interval
        net[2].weight.div_(n_units**0.5)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = ((net(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net, float(((net(x) - y) ** 2).mean())
