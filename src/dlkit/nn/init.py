"""Weight initialisations, in place on a tensor like `torch.nn.init` (Notes: 003 §2.2.4).

The notes' list: zeros (fails: hidden units stay identical), big numbers (saturation / explosion),
N(0, 0.01) (a VARIANCE of 0.01, i.e. std 0.1; fine for small nets), N(0, 1/n_in) (LeCun: keeps the
activation variance at 1), Xavier/Glorot N(0, 2/(n_in + n_out)) (the notes call it TensorFlow's default;
Keras' default is actually the uniform variant, same variance), He N(0, 2/n_in) for ReLU.

Fans follow torch: for a weight of shape [out, in, *kernel], fan_in = in * prod(kernel) and
fan_out = out * prod(kernel). Every function takes an optional `generator` and returns the tensor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError, unknown


def calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight [out, in, *kernel]: in * k and out * k, k = prod(kernel)."""
    if tensor.dim() < 2:
        raise ConfigError(
            f"fan in/out needs a weight with at least 2 dims [out, in, ...]; got shape "
            f"{tuple(tensor.shape)}. Initialise biases with zeros_ or normal_ instead."
        )
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor: Tensor, mode: str) -> int:
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ConfigError(f"mode must be 'fan_in' or 'fan_out'; got {mode!r}")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """Recommended gain: 1 for linear/sigmoid, 5/3 tanh, sqrt 2 relu, sqrt(2 / (1 + a^2)) leaky relu."""
    linear = (
        "linear",
        "identity",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "sigmoid",
    )
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise unknown(
        "nonlinearity",
        nonlinearity,
        [*linear, "tanh", "relu", "leaky_relu", "selu"],
        "dlkit.nn.init.calculate_gain.__doc__",
    )


def zeros_(tensor: Tensor) -> Tensor:
    """Fill with zeros. Notes: 003 §2.2.4 ("it does not work": hidden units stay identical)."""
    with torch.no_grad():
        return tensor.zero_()


def normal_(
    tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Fill with N(mean, std^2). With a large std this is the notes' "big numbers" init (003 §2.2.4)."""
    if std < 0:
        raise ConfigError(f"normal_ std must be >= 0; got {std}")
    with torch.no_grad():
        return tensor.normal_(mean, std, generator=generator)


def uniform_(
    tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Fill with U(a, b)."""
    if b < a:
        raise ConfigError(f"uniform_ needs a <= b; got a={a}, b={b}")
    with torch.no_grad():
        return tensor.uniform_(a, b, generator=generator)


def small_normal_(tensor: Tensor, variance: float = 0.01, generator: torch.Generator | None = None) -> Tensor:
    """Fill with N(0, variance); the notes' N(0, 0.01) means variance 0.01, std 0.1. Notes: 003 §2.2.4."""
    if variance < 0:
        raise ConfigError(f"small_normal_ variance must be >= 0; got {variance}")
    return normal_(tensor, 0.0, math.sqrt(variance), generator)


def lecun_normal_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """LeCun init N(0, 1/n_in): keeps the pre-activation variance equal to the input's. Notes: 003 §2.2.4."""
    return normal_(tensor, 0.0, math.sqrt(1.0 / _fan(tensor, "fan_in")), generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Xavier/Glorot normal N(0, gain^2 * 2 / (n_in + n_out)). Notes: 003 §2.2.4."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Xavier/Glorot uniform U(-b, b), b = gain sqrt(6 / (n_in + n_out)): same variance as the normal form."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """He/Kaiming normal N(0, gain^2 / fan). Notes: 003 §2.2.4.

    For ReLU (gain^2 = 2, fan_in) this is the notes' N(0, 2/n_in).
    """
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, generator)


def he_init_conv_bn_(module: torch.nn.Module) -> torch.nn.Module:
    """Initialise every Conv2d of `module` He normal N(0, 2 / fan_out) with zero bias, and every normalisation to
    scale 1, shift 0 (He et al. 2015, as ResNets are; Notes: 003 §2.2.4). Returns `module`."""
    return init_weights(module, conv="he_fan_out")


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """He/Kaiming uniform U(-b, b), b = gain sqrt(3 / fan): same variance as kaiming_normal_."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(tensor, mode))
    return uniform_(tensor, -bound, bound, generator)


glorot_normal_, glorot_uniform_ = xavier_normal_, xavier_uniform_
he_normal_, he_uniform_ = kaiming_normal_, kaiming_uniform_

_INITS = {
    "zeros": zeros_,
    "small_normal": small_normal_,
    "lecun_normal": lecun_normal_,
    "lecun": lecun_normal_,
    "xavier_normal": xavier_normal_,
    "xavier_uniform": xavier_uniform_,
    "glorot_normal": xavier_normal_,
    "glorot_uniform": xavier_uniform_,
    "xavier": xavier_normal_,
    "glorot": xavier_normal_,
    "kaiming_normal": kaiming_normal_,
    "kaiming_uniform": kaiming_uniform_,
    "he_normal": kaiming_normal_,
    "he_uniform": kaiming_uniform_,
    "he": kaiming_normal_,
    "kaiming": kaiming_normal_,
}


def list_initializers() -> list[str]:
    """Names accepted by `get_initializer`."""
    return sorted(_INITS)


def get_initializer(name: str):
    """The in-place init function called `name` ('xavier_uniform', 'he', 'lecun', 'small_normal', ...)."""
    key = name.strip().lower().replace("-", "_")
    if key not in _INITS:
        raise unknown("initializer", name, _INITS, "dlkit.nn.init.list_initializers()")
    return _INITS[key]


# ----------------------------------------------------------------------------- whole-network initialisation

_WEIGHT_SCHEMES = {
    # name: weight -> None, each drawing from torch's global generator in the order the modules come
    "he_fan_out": lambda w: kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),  # N(0, 2 / fan_out)
    "he_fan_in": lambda w: kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),  # N(0, 2 / fan_in)
    "xavier_uniform": torch.nn.init.xavier_uniform_,  # U(-b, b), b = sqrt(6 / (fan_in + fan_out)), as torch
    "normal_0.01": lambda w: normal_(w, 0.0, 0.01),
    "normal_0.02": lambda w: normal_(w, 0.0, 0.02),
    "trunc_normal_0.02": lambda w: torch.nn.init.trunc_normal_(w, std=0.02),  # cut at +-2 (absolute), as torch
    "uniform_fan_out": lambda w: uniform_(w, -1.0 / math.sqrt(w.shape[0]), 1.0 / math.sqrt(w.shape[0])),
}
_NORM_TYPES = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm)  # batch and instance norm, group norm
_CONV_TYPES = (torch.nn.Conv2d,)


def list_weight_schemes() -> list[str]:
    """Names accepted for `init_weights`' conv / linear / embedding weights."""
    return sorted(_WEIGHT_SCHEMES)


def _scheme(spec, what: str):
    if spec is None or callable(spec):
        return spec
    if spec not in _WEIGHT_SCHEMES:
        raise ConfigError(f"init_weights {what} must be one of {', '.join(list_weight_schemes())}, a function "
                          f"weight -> None or None (keep); got {spec!r}")
    return _WEIGHT_SCHEMES[spec]


@torch.no_grad()
def init_weights(module, conv="he_fan_out", conv_bias: bool = True, linear=None, embedding=None, norm: bool = True,
                 conv_types: tuple[type, ...] = _CONV_TYPES):
    """Initialise a network's layers by type, the one loop every family uses (Notes: 003 §2.2.4). Returns `module`.

    Visits `module.modules()` in order (or each module's in an iterable of modules) and sets: convolutions
    (`conv_types`, default Conv2d) by `conv`, their bias to 0 when `conv_bias`; nn.Linear weights by `linear`,
    bias 0; nn.Embedding weights by `embedding`; normalisations with a scale (batch, group, instance norm) to
    gamma 1, beta 0 when `norm`. A scheme is a name of `list_weight_schemes()` ('he_fan_out' N(0, 2/fan_out) as
    ResNet/VGG/MobileNet, 'he_fan_in' N(0, 2/fan_in), 'xavier_uniform', 'normal_0.01', 'uniform_fan_out'
    U(+-1/sqrt(out)) as EfficientNet's classifier, ...), a function of the weight, or None to keep it. Draws come
    from torch's global generator in module order, so a seed fixes the result.
    """
    conv_fn, linear_fn = _scheme(conv, "conv"), _scheme(linear, "linear")
    embedding_fn = _scheme(embedding, "embedding")
    roots = [module] if isinstance(module, torch.nn.Module) else list(module)
    for root in roots:
        for m in root.modules():
            if isinstance(m, conv_types):
                if conv_fn is not None:
                    conv_fn(m.weight)
                if conv_bias and m.bias is not None:
                    zeros_(m.bias)
            elif isinstance(m, torch.nn.Linear):
                if linear_fn is not None:
                    linear_fn(m.weight)
                    if m.bias is not None:
                        zeros_(m.bias)
            elif isinstance(m, torch.nn.Embedding):
                if embedding_fn is not None:
                    embedding_fn(m.weight)
            elif norm and isinstance(m, _NORM_TYPES) and m.weight is not None:
                torch.nn.init.ones_(m.weight)
                zeros_(m.bias)
    return module
