"""Initialisation diagnostics: activation and gradient statistics of a deep MLP at init (Notes: 003 §2.2.4
weight initialisation and its variance considerations; 000 §2.2 vanishing gradients).

A dense layer z = W a with independent zero-mean weights of variance v and n_in inputs gives
Var(z) = n_in v E[a^2] (forward) and, going backward, Var(dL/da) = n_out v Var(dL/dz). Hence the notes' rules:
N(0, 1/n_in) (LeCun) keeps the forward variance, Glorot's n_out Var(w) = 1 keeps the backward one, Xavier
N(0, 2/(n_in + n_out)) compromises (suited to tanh, linear near 0), He N(0, 2/n_in) compensates ReLU halving
E[a^2]. The notes' N(0, 0.01) (variance 0.01) multiplies E[a^2] by about n_in * 0.01 (tanh) or n_in * 0.01 / 2
(ReLU) per layer: the activations vanish geometrically when n_in < 100 (tanh) or < 200 (ReLU), and explode
when the layers are wider. `activation_statistics` measures this, the classic per-layer histogram figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError
from ..nn import init as I
from ..nn.activations import get_activation


def expected_variance(init_name: str, fan_in: int, fan_out: int) -> float:
    """Weight variance an initialiser of `dlkit.nn.init` promises, by the notes' formulas (003 §2.2.4).

    zeros 0; small_normal 0.01; lecun 1/n_in; xavier/glorot (normal or uniform) 2/(n_in + n_out);
    he/kaiming (normal or uniform, ReLU gain, fan_in mode) 2/n_in.
    """
    _check_fans(fan_in, fan_out)
    key = init_name.strip().lower().replace("-", "_")
    I.get_initializer(key)  # unknown names raise with suggestions
    if key == "zeros":
        return 0.0
    if key == "small_normal":
        return 0.01
    if key.startswith("lecun"):
        return 1.0 / fan_in
    if key.startswith(("xavier", "glorot")):
        return 2.0 / (fan_in + fan_out)
    return 2.0 / fan_in  # he / kaiming


def _check_fans(fan_in: int, fan_out: int) -> None:
    if not (isinstance(fan_in, int) and isinstance(fan_out, int) and fan_in >= 1 and fan_out >= 1):
        raise ConfigError(f"fan_in and fan_out must be positive integers; got {fan_in!r}, {fan_out!r}")


def _fill(name: str, w: Tensor, generator: torch.Generator | None) -> Tensor:
    fill = I.get_initializer(name)
    return fill(w) if fill is I.zeros_ else fill(w, generator=generator)


def empirical_variance(init_name: str, fan_in: int, fan_out: int, generator: torch.Generator | None = None) -> float:
    """Sample variance of a [fan_out, fan_in] weight filled by `dlkit.nn.init`'s `init_name` (Notes: 003 §2.2.4)."""
    _check_fans(fan_in, fan_out)
    w = torch.empty(fan_out, fan_in, dtype=torch.float64)
    _fill(init_name, w, generator)
    return float(w.var(unbiased=True)) if w.numel() > 1 else float(w.pow(2).mean())


@dataclass
class ActivationStats:
    """Per-layer statistics of `activation_statistics` (Notes: 003 §2.2.4); index l = hidden layer l + 1.

    mean, std: of the post-activation outputs a_l over the batch and units; grad_std: std of dL/dz_l, the
    gradient at layer l's pre-activation for a random upstream gradient dL/da_depth ~ N(0, 1) (backward pass);
    input_std: std of the input x.
    """

    mean: Tensor
    std: Tensor
    grad_std: Tensor
    input_std: float

    def ratio(self) -> float:
        """std of the last layer's activations over std of the first layer's (1 = preserved)."""
        return float(self.std[-1] / self.std[0])


def activation_statistics(depth: int, width: int, init: str | Callable[[Tensor], Tensor], activation: str = "tanh",
                          batch: int = 512, generator: torch.Generator | None = None,
                          dtype: torch.dtype = torch.float64) -> ActivationStats:
    """Forward N(0, 1) inputs through `depth` dense layers width -> width at init; per-layer mean/std.

    Notes: 003 §2.2.4 (small init -> vanishing, large init -> exploding), 000 §2.2. Layers are a_l =
    act(W_l a_{l-1}) without biases (biases start at 0 anyway); `init` is a `dlkit.nn.init` name ('small_normal',
    'lecun', 'xavier', 'he', ...) or an in-place function of the weight [width, width]. The backward pass sends a
    N(0, 1) gradient from the last layer and records the std of the gradient at every pre-activation.
    """
    if not isinstance(depth, int) or depth < 1 or not isinstance(width, int) or width < 1:
        raise ConfigError(f"depth and width must be positive integers; got depth={depth!r}, width={width!r}")
    if not isinstance(batch, int) or batch < 2:
        raise ConfigError(f"batch must be an integer >= 2 to estimate a std; got {batch!r}")
    if isinstance(init, str):
        I.get_initializer(init)  # unknown names raise here, with suggestions
        init_fn = lambda w: _fill(init, w, generator)
    elif callable(init):
        init_fn = init
    else:
        raise ConfigError(f"init must be a dlkit.nn.init name or a function of the weight; got {init!r}")
    act = get_activation(activation)
    weights = []
    for _ in range(depth):
        w = torch.empty(width, width, dtype=dtype)
        init_fn(w)
        weights.append(w.requires_grad_(True))
    x = torch.randn(batch, width, generator=generator, dtype=dtype)
    a, pre, outs = x, [], []
    for w in weights:
        z = a @ w.T
        z.retain_grad()
        a = act(z)
        pre.append(z)
        outs.append(a)
    upstream = torch.randn(a.shape, generator=generator, dtype=dtype)
    (a * upstream).sum().backward()
    with torch.no_grad():
        mean = torch.stack([o.mean() for o in outs])
        std = torch.stack([o.std() for o in outs])
        grad_std = torch.stack([z.grad.std() for z in pre])
    return ActivationStats(mean, std, grad_std, float(x.std()))
