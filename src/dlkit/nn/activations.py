"""Activation functions written from their formulas, with their derivatives (Notes: 000 §2.2, 003 §2.2.1).

Each activation is a function of a tensor, an `nn.Module` wrapping it, and a derivative function of the
pre-activation (`*_derivative`, used by the by-hand backprop in `dlkit.techniques.backprop`). At a kink
the derivative takes the value torch's autograd uses (e.g. ReLU'(0) = 0, ELU'(0) = alpha), so
derivatives equal torch's exactly. The notes' cheat sheet (003 §2.2.1.1): ReLU for hidden layers
(leaky ReLU, sigmoid, tanh, ELU as alternatives); softmax for mutually exclusive classes, sigmoid for
binary or independent outputs, linear for regression, softplus for non-negative regression.

`get_activation(name)` builds a module by name; `list_activations()` lists the names.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, suggest, unknown

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_COEF = 0.044715


def _split(x: Tensor) -> tuple[Tensor, Tensor]:
    """x where x >= 0 (else 0) and x where x < 0 (else 0): exp of either never overflows."""
    zero = torch.zeros_like(x)
    return torch.where(x >= 0, x, zero), torch.where(x < 0, x, zero)


# ----------------------------------------------------------------------------- functions


def sigmoid(x: Tensor) -> Tensor:
    """Logistic sigmoid, stable for any x. Notes: 003 §2.2.1, 000 §2.2. sigma(x) = 1 / (1 + e^-x)."""
    pos, neg = _split(x)
    e = torch.exp(neg)
    return torch.where(x >= 0, 1.0 / (1.0 + torch.exp(-pos)), e / (1.0 + e))


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent (e^x - e^-x) / (e^x + e^-x), stably as 2 sigma(2x) - 1. Notes: 003 §2.2.1."""
    return 2.0 * sigmoid(2.0 * x) - 1.0


def relu(x: Tensor) -> Tensor:
    """Rectified linear unit max(0, x). Notes: 003 §2.2.1, 000 §2.2 (the fix for vanishing gradients)."""
    return torch.where(x > 0, x, torch.zeros_like(x))


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """Leaky ReLU: x if x >= 0 else slope * x, slope 0.01 as in the notes. Notes: 003 §2.2.1, §2.4."""
    return torch.where(x > 0, x, negative_slope * x)


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """Exponential linear unit: x if x >= 0 else alpha (e^x - 1). Notes: 003 §2.2.1."""
    neg = torch.where(x > 0, torch.zeros_like(x), x)
    return torch.where(x > 0, x, alpha * torch.expm1(neg))


def softplus(x: Tensor) -> Tensor:
    """Softplus ln(1 + e^x), a smooth ReLU for non-negative regression outputs. Notes: 003 §2.2.1.1."""
    pos, neg = _split(x)
    return torch.where(x >= 0, pos + torch.log1p(torch.exp(-pos)), torch.log1p(torch.exp(neg)))


def identity(x: Tensor) -> Tensor:
    """Linear (identity) output activation for regression heads. Notes: 003 §2.2.1.1."""
    return x


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Softmax exp(x_i) / sum_j exp(x_j) along `dim` (max subtracted first, stable). Notes: 003 §2.2.1."""
    shifted = x - x.amax(dim=dim, keepdim=True).detach()
    e = torch.exp(shifted)
    return e / e.sum(dim=dim, keepdim=True)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Log-softmax x_i - m - log sum_j exp(x_j - m), m = max_j x_j (the log-sum-exp trick)."""
    shifted = x - x.amax(dim=dim, keepdim=True).detach()
    return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).

    approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as `F.gelu(approximate='tanh')`.
    """
    if approximate == "none":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if approximate == "tanh":
        return 0.5 * x * (1.0 + tanh(_SQRT_2_OVER_PI * (x + _GELU_TANH_COEF * x**3)))
    raise ConfigError(f"gelu approximate must be 'none' or 'tanh'; got {approximate!r}")


def silu(x: Tensor) -> Tensor:
    """SiLU / swish x sigma(x) (used by EfficientNet, Notes: 002 §2)."""
    return x * sigmoid(x)


swish = silu


def relu6(x: Tensor) -> Tensor:
    """ReLU6 min(max(0, x), 6) (used by MobileNetV2, Notes: 002 §2)."""
    inside = (x > 0) & (x < 6)
    return torch.where(inside, x, torch.where(x >= 6, torch.full_like(x, 6.0), torch.zeros_like(x)))


def hard_sigmoid(x: Tensor) -> Tensor:
    """Hard sigmoid relu6(x + 3) / 6, the piecewise-linear sigmoid of MobileNetV3 (equals F.hardsigmoid)."""
    return relu6(x + 3.0) / 6.0


def hard_swish(x: Tensor) -> Tensor:
    """Hard swish x relu6(x + 3) / 6 (MobileNetV3; equals F.hardswish)."""
    return x * hard_sigmoid(x)


def rrelu(
    x: Tensor,
    lower: float = 1 / 8,
    upper: float = 1 / 3,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Randomised leaky ReLU: slope ~ U(lower, upper) per element in training, (lower+upper)/2 in eval.

    Notes: 003 §2.4 ("slope randomly chosen"; the bounds are torch's defaults).
    """
    if not 0 <= lower <= upper:
        raise ConfigError(f"rrelu needs 0 <= lower <= upper; got lower={lower}, upper={upper}")
    if training:
        slope = (
            torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) * (upper - lower) + lower
        )
    else:
        slope = torch.full_like(x, (lower + upper) / 2)
    return torch.where(x >= 0, x, slope * x)


# ----------------------------------------------------------------------------- derivatives


def sigmoid_derivative(x: Tensor) -> Tensor:
    """sigma'(x) = sigma(x) (1 - sigma(x)); its maximum is 0.25, at x = 0. Notes: 003 §2.2.1."""
    s = sigmoid(x)
    return s * (1.0 - s)


def tanh_derivative(x: Tensor) -> Tensor:
    """tanh'(x) = 1 - tanh(x)^2."""
    t = tanh(x)
    return 1.0 - t * t


def relu_derivative(x: Tensor) -> Tensor:
    """ReLU'(x) = 1 if x > 0 else 0 (0 at the kink, as torch)."""
    return (x > 0).to(x.dtype)


def leaky_relu_derivative(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """Leaky ReLU'(x) = 1 if x > 0 else slope (slope at the kink, as torch)."""
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, negative_slope))


def elu_derivative(x: Tensor, alpha: float = 1.0) -> Tensor:
    """ELU'(x) = 1 if x > 0 else alpha e^x (alpha at the kink, as torch)."""
    neg = torch.where(x > 0, torch.zeros_like(x), x)
    return torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(neg))


def softplus_derivative(x: Tensor) -> Tensor:
    """softplus'(x) = sigma(x)."""
    return sigmoid(x)


def identity_derivative(x: Tensor) -> Tensor:
    """Derivative of the identity: 1."""
    return torch.ones_like(x)


def gelu_derivative(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU'(x) = Phi(x) + x phi(x).

    Tanh form: 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3c x^2), t = tanh(sqrt(2/pi)(x + c x^3)).
    """
    if approximate == "none":
        cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return cdf + x * pdf
    if approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (x + _GELU_TANH_COEF * x**3)
        t = tanh(inner)
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (
            1.0 + 3.0 * _GELU_TANH_COEF * x * x
        )
    raise ConfigError(f"gelu approximate must be 'none' or 'tanh'; got {approximate!r}")


def silu_derivative(x: Tensor) -> Tensor:
    """SiLU'(x) = sigma(x) (1 + x (1 - sigma(x)))."""
    s = sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def relu6_derivative(x: Tensor) -> Tensor:
    """ReLU6'(x) = 1 if 0 < x < 6 else 0."""
    return ((x > 0) & (x < 6)).to(x.dtype)


def hard_sigmoid_derivative(x: Tensor) -> Tensor:
    """Hard sigmoid'(x) = 1/6 if -3 < x < 3 else 0."""
    return ((x > -3) & (x < 3)).to(x.dtype) / 6.0


def hard_swish_derivative(x: Tensor) -> Tensor:
    """Hard swish'(x) = 0 if x <= -3, x/3 + 1/2 if -3 < x < 3, 1 if x >= 3 (torch's values at the kinks)."""
    mid = x / 3.0 + 0.5
    return torch.where(x <= -3, torch.zeros_like(x), torch.where(x < 3, mid, torch.ones_like(x)))


def softmax_jacobian(x: Tensor, dim: int = -1) -> Tensor:
    """Jacobian of softmax over the last dim: J_ij = s_i (delta_ij - s_j); shape [..., K, K]."""
    if dim not in (-1, x.dim() - 1):
        x = x.movedim(dim, -1)
    s = softmax(x, dim=-1)
    return torch.diag_embed(s) - s.unsqueeze(-1) * s.unsqueeze(-2)


# ----------------------------------------------------------------------------- modules


class _Activation(nn.Module):
    """Base of the element-wise activation modules: forward = fn(x), derivative = dfn(x).

    The modules run torch's fused kernel of the same function (2-3x faster than the formula on CPU);
    tests/nn/test_activations.py proves each module equal to its formula function above, values and gradients.
    """

    def derivative(self, x: Tensor) -> Tensor:
        """The derivative of this activation at pre-activation x (element-wise)."""
        raise NotImplementedError


class Sigmoid(_Activation):
    """Logistic sigmoid module. Notes: 003 §2.2.1. 1 / (1 + e^-x)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def derivative(self, x: Tensor) -> Tensor:
        return sigmoid_derivative(x)


class Tanh(_Activation):
    """Hyperbolic tangent module. Notes: 003 §2.2.1."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def derivative(self, x: Tensor) -> Tensor:
        return tanh_derivative(x)


class ReLU(_Activation):
    """ReLU module max(0, x). Notes: 003 §2.2.1. `inplace=True` overwrites x (as torch's)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""

    def derivative(self, x: Tensor) -> Tensor:
        return relu_derivative(x)


class LeakyReLU(_Activation):
    """Leaky ReLU module, slope 0.01 by default. Notes: 003 §2.2.1."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope, inplace=self.inplace)

    def derivative(self, x: Tensor) -> Tensor:
        return leaky_relu_derivative(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class ELU(_Activation):
    """ELU module with hand-tuned alpha (default 1). Notes: 003 §2.2.1."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)

    def derivative(self, x: Tensor) -> Tensor:
        return elu_derivative(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softplus(_Activation):
    """Softplus module ln(1 + e^x). Notes: 003 §2.2.1.1."""

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x)

    def derivative(self, x: Tensor) -> Tensor:
        return softplus_derivative(x)


class Identity(_Activation):
    """Linear output activation (identity). Notes: 003 §2.2.1.1."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def derivative(self, x: Tensor) -> Tensor:
        return identity_derivative(x)


class GELU(_Activation):
    """GELU module, exact (erf) or approximate='tanh'."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ConfigError(f"GELU approximate must be 'none' or 'tanh'; got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def derivative(self, x: Tensor) -> Tensor:
        return gelu_derivative(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_Activation):
    """SiLU / swish module x sigma(x)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)

    def derivative(self, x: Tensor) -> Tensor:
        return silu_derivative(x)


Swish = SiLU


class ReLU6(_Activation):
    """ReLU6 module min(max(0, x), 6). `inplace=True` overwrites x."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(x, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""

    def derivative(self, x: Tensor) -> Tensor:
        return relu6_derivative(x)


class HardSigmoid(_Activation):
    """Hard sigmoid module relu6(x + 3) / 6."""

    def forward(self, x: Tensor) -> Tensor:
        return F.hardsigmoid(x)

    def derivative(self, x: Tensor) -> Tensor:
        return hard_sigmoid_derivative(x)


class HardSwish(_Activation):
    """Hard swish module x relu6(x + 3) / 6."""

    def forward(self, x: Tensor) -> Tensor:
        return F.hardswish(x)

    def derivative(self, x: Tensor) -> Tensor:
        return hard_swish_derivative(x)


class RReLU(nn.Module):
    """Randomised leaky ReLU module: random slope in training, mean slope in eval. Notes: 003 §2.4."""

    def __init__(self, lower: float = 1 / 8, upper: float = 1 / 3):
        super().__init__()
        if not 0 <= lower <= upper:
            raise ConfigError(f"RReLU needs 0 <= lower <= upper; got lower={lower}, upper={upper}")
        self.lower, self.upper = lower, upper

    def forward(self, x: Tensor) -> Tensor:
        return rrelu(x, self.lower, self.upper, training=self.training)

    def extra_repr(self) -> str:
        return f"lower={self.lower}, upper={self.upper}"


class Softmax(nn.Module):
    """Softmax module along `dim` (default the last). Notes: 003 §2.2.1."""

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """Log-softmax module along `dim` (default the last)."""

    def forward(self, x: Tensor) -> Tensor:
        return log_softmax(x, self.dim)


# ----------------------------------------------------------------------------- lookup

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": Sigmoid,
    "logistic": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "elu": ELU,
    "softplus": Softplus,
    "identity": Identity,
    "linear": Identity,
    "gelu": GELU,
    "silu": SiLU,
    "swish": SiLU,
    "relu6": ReLU6,
    "hard_sigmoid": HardSigmoid,
    "hard_swish": HardSwish,
    "rrelu": RReLU,
    "softmax": Softmax,
    "log_softmax": LogSoftmax,
}

_DERIVATIVES = {
    "sigmoid": sigmoid_derivative,
    "logistic": sigmoid_derivative,
    "tanh": tanh_derivative,
    "relu": relu_derivative,
    "leaky_relu": leaky_relu_derivative,
    "elu": elu_derivative,
    "softplus": softplus_derivative,
    "identity": identity_derivative,
    "linear": identity_derivative,
    "gelu": gelu_derivative,
    "silu": silu_derivative,
    "swish": silu_derivative,
    "relu6": relu6_derivative,
    "hard_sigmoid": hard_sigmoid_derivative,
    "hard_swish": hard_swish_derivative,
}


def _normalise(name: str) -> str:
    return (
        name.strip()
        .lower()
        .replace("-", "_")
        .replace("hardswish", "hard_swish")
        .replace("hardsigmoid", "hard_sigmoid")
        .replace("leakyrelu", "leaky_relu")
        .replace("logsoftmax", "log_softmax")
    )


def list_activations() -> list[str]:
    """Names accepted by `get_activation`, sorted."""
    return sorted(_ACTIVATIONS) + ["gelu_tanh"]


def get_activation(name: str, **kwargs) -> nn.Module:
    """Build an activation module by name ('relu', 'leaky_relu', 'gelu_tanh', ...). Notes: 003 §2.2.1.1.

    Keyword arguments go to the module (e.g. negative_slope=0.1, alpha=2.0, dim=1). Unknown names raise
    an error that suggests the closest names.
    """
    if not isinstance(name, str):
        raise ConfigError(f"activation name must be a string such as 'relu'; got {type(name).__name__}")
    key = _normalise(name)
    if key == "gelu_tanh":
        return GELU(approximate="tanh")
    if key not in _ACTIVATIONS:
        raise unknown("activation", name, list_activations(), "dlkit.nn.activations.list_activations()")
    try:
        return _ACTIVATIONS[key](**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad arguments {kwargs} for activation '{name}': {e}") from e


def get_act_layer(spec: str | type[nn.Module] | Callable[[], nn.Module] | None,
                  **kwargs) -> Callable[[], nn.Module] | None:
    """A factory () -> activation module for a block's `act_layer`: a name, a module class or a callable. 003 §2.2.1.1.

    A name is built by `get_activation` ('relu', 'leaky_relu', 'silu', 'gelu', ...; `list_activations()`), a class
    (nn.ReLU, nn.SiLU, dlkit's LeakyReLU, ...) is called with `kwargs`, a callable is used as is; None (or 'none')
    means no activation. An unknown name raises a one-line ConfigError listing the valid ones.
    """
    if spec is None or (isinstance(spec, str) and _normalise(spec) == "none"):
        return None
    if isinstance(spec, str):
        if _normalise(spec) not in list_activations():
            raise ConfigError(f"act_layer must be one of {', '.join(list_activations())}, 'none' or a module class; "
                              f"got {spec!r}.{suggest(_normalise(spec), list_activations())}")
        return functools.partial(get_activation, spec, **kwargs)
    if isinstance(spec, type) and issubclass(spec, nn.Module):
        return functools.partial(spec, **kwargs)
    if callable(spec) and not isinstance(spec, nn.Module):
        return spec
    raise ConfigError(f"act_layer must be an activation name such as 'relu', a module class such as nn.SiLU, or "
                      f"None; got {type(spec).__name__}")


RELU_INPLACE = functools.partial(nn.ReLU, inplace=True)  # torchvision's ReLU: the CNNs' default act_layer


def inplace_(act: nn.Module) -> nn.Module:
    """Let `act` overwrite its input where it can (modules with an `inplace` flag: ReLU, ReLU6, LeakyReLU, torch's
    SiLU ...): for an activation whose input no other layer reads (after a convolution or a norm, on a residual sum),
    as torchvision builds its CNNs; the values are the same, one tensor per layer less is allocated. Returns `act`."""
    if hasattr(act, "inplace"):
        act.inplace = True
    return act


def disable_inplace(model: nn.Module) -> nn.Module:
    """Turn off every in-place activation (and with them the residual blocks' in-place sums, `add_skip`), for tools
    that hook intermediate outputs (feature maps, CAM, attributions): the values stay the same. Returns `model`."""
    for m in model.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    return model


def get_derivative(name: str):
    """The element-wise derivative function f'(x) of activation `name` (softmax has a Jacobian instead)."""
    key = _normalise(name)
    if key == "gelu_tanh":
        return lambda x: gelu_derivative(x, "tanh")
    if key not in _DERIVATIVES:
        raise unknown("activation derivative", name, _DERIVATIVES, "dlkit.nn.activations.list_activations()")
    return _DERIVATIVES[key]


_OUTPUT_HEADS = {
    "multiclass": ("softmax", "categorical_cross_entropy"),
    "binary": ("sigmoid", "binary_cross_entropy"),
    "multilabel": ("sigmoid", "binary_cross_entropy"),
    "regression": ("linear", "mse"),
    "positive_regression": ("softplus", "mse"),
}


def output_activation_and_loss(task: str) -> tuple[str, str]:
    """The notes' cheat-sheet choice of (output activation, loss) for a task. Notes: 003 §2.2.1.1, 004 CNN.

    multiclass -> (softmax, categorical CE); binary / multilabel -> (sigmoid, BCE);
    regression -> (linear, MSE); positive_regression -> (softplus, MSE).
    """
    if task not in _OUTPUT_HEADS:
        raise ConfigError(f"unknown task {task!r}; expected one of {sorted(_OUTPUT_HEADS)}")
    return _OUTPUT_HEADS[task]
