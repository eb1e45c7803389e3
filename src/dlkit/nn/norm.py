"""The normalisation layer of a block, chosen by name or class (Notes: 000 §3.8, 003 §2.2.5).

Blocks take `norm_layer` and build one normalisation per feature map with `make = get_norm_layer(norm_layer)`,
`make(num_channels)`. The choices normalise each channel as y = gamma (x - mu) / sqrt(sigma^2 + eps) + beta and
differ in the set the statistics mu, sigma^2 are taken over:

- "batch": over N, H, W per channel (batch norm, 000 §3.8; running averages at inference). nn.BatchNorm2d.
- "group": over H, W and the C / G channels of a group, per sample (Wu & He 2018). nn.GroupNorm with
  G = gcd(32, C) groups by default: the paper's 32 groups, fewer when C is not a multiple of 32 (C = 16 gives
  16 groups, C = 24 gives 8); `num_groups=G` asks for G, which must divide C.
- "instance": over H, W per sample and channel (style transfer). nn.InstanceNorm2d with a learned gamma, beta
  (affine=True) and batch statistics at inference too (no running averages), as Ulyanov et al. and Johnson et al.
- "frozen_batch": batch norm as a fixed affine map (FrozenBatchNorm2d, detector backbones).
- "none" or None: no normalisation (a convolution then keeps its bias).

A class among nn.BatchNorm2d (and subclasses), nn.GroupNorm, nn.InstanceNorm2d and FrozenBatchNorm2d means the
same as its name; any other class or callable is called as `spec(num_channels)` (e.g.
`functools.partial(nn.GroupNorm, 4)`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from ..errors import ConfigError, suggest
from .frozen_batchnorm import FrozenBatchNorm2d

NormLayer = Callable[[int], nn.Module]
NORM_LAYERS = ("batch", "group", "instance", "frozen_batch", "none")
_ALIASES = {"batchnorm": "batch", "batch_norm": "batch", "bn": "batch", "groupnorm": "group", "group_norm": "group",
            "gn": "group", "instancenorm": "instance", "instance_norm": "instance", "in": "instance",
            "frozen_batchnorm": "frozen_batch", "frozen_batch_norm": "frozen_batch", "frozen_bn": "frozen_batch",
            "frozenbn": "frozen_batch"}
DEFAULT_GROUPS = 32


def group_norm_groups(num_channels: int, num_groups: int | None = None) -> int:
    """Groups of a GroupNorm over `num_channels`: gcd(32, C) by default, else `num_groups` (which must divide C)."""
    if num_groups is None:
        return math.gcd(DEFAULT_GROUPS, num_channels)
    if num_groups < 1 or num_channels % num_groups:
        raise ConfigError(f"GroupNorm num_groups must divide the {num_channels} channels; got {num_groups}. Leave it "
                          f"out for gcd(32, C) = {math.gcd(DEFAULT_GROUPS, num_channels)} groups")
    return num_groups


def _name_of(spec) -> str | None:
    """The canonical name of a string or of a known normalisation class, else None."""
    if isinstance(spec, str):
        key = spec.strip().lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in NORM_LAYERS:
            raise ConfigError(f"norm_layer must be one of {', '.join(NORM_LAYERS)} (or a class); got "
                              f"{spec!r}.{suggest(key, NORM_LAYERS)}")
        return key
    if isinstance(spec, type):
        for cls, name in ((FrozenBatchNorm2d, "frozen_batch"), (nn.BatchNorm2d, "batch"), (nn.GroupNorm, "group"),
                          (nn.InstanceNorm2d, "instance")):
            if issubclass(spec, cls):
                return name
    return None


def get_norm_layer(spec: str | type | NormLayer | None = "batch", eps: float = 1e-5, momentum: float = 0.1,
                   num_groups: int | None = None) -> NormLayer | None:
    """A factory num_channels -> normalisation module for `spec` (a name, a class or a callable), None for no norm.

    Notes: 000 §3.8. `eps` goes to every named norm; `momentum` (running averages) to batch norm only;
    `num_groups` to group norm only (default gcd(32, C)).
    """
    if spec is None:
        return None
    name = _name_of(spec)
    if name is None:
        if not callable(spec):
            raise ConfigError(f"norm_layer must be a name ({', '.join(NORM_LAYERS)}), a class or a callable "
                              f"num_channels -> module; got {type(spec).__name__}")
        return spec
    cls = spec if isinstance(spec, type) else None
    if name == "none":
        return None
    if name == "batch":
        cls = cls or nn.BatchNorm2d
        return lambda c: cls(c, eps=eps, momentum=momentum)
    if name == "group":
        cls = cls or nn.GroupNorm
        return lambda c: cls(group_norm_groups(c, num_groups), c, eps=eps)
    if name == "instance":
        cls = cls or nn.InstanceNorm2d
        return lambda c: cls(c, eps=eps, affine=True)
    cls = cls or FrozenBatchNorm2d
    return lambda c: cls(c, eps=eps)


def is_norm(module: nn.Module) -> bool:
    """True for the normalisation layers `get_norm_layer` builds by name (batch, group, instance, frozen)."""
    return isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | FrozenBatchNorm2d)
