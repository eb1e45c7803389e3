"""Shift and stitch: dense predictions from a network of total stride f (Notes: 003 §4.1, 002 §5.1.2; Long et al.).

A network that down-samples by f predicts one score vector per f x f block of the input. Running it on the f^2
shifted copies of the input and interleaving the f^2 coarse maps gives one prediction per input pixel.

Convention (documented here, the notes leave it open): shift (dy, dx) drops the first dy rows and dx columns of the
input and pads the bottom and right with zeros, so every shifted copy keeps the input's H x W,

    x_(dy, dx)[u, v] = x[u + dy, v + dx]   (0 beyond the image),

and its coarse output at (i, j) is the dense prediction at (f i + dy, f j + dx):

    out[..., f i + dy, f j + dx] = net(x_(dy, dx))[..., i, j].

The output is [N, C, f h, f w] for coarse maps h x w (the input's H x W when the network maps H x W to H/f x W/f).
For a network whose sub-sampling is a stride-f pooling (or convolution) this equals the "filter rarefaction"
network that emulates it (the stride set to 1 and every later filter dilated by f) run on the input padded with
f - 1 zeros at the bottom and right: the same output at f^2 times the cost.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError


def shifted_inputs(x: Tensor, f: int) -> list[tuple[int, int, Tensor]]:
    """The f^2 shifted copies (dy, dx, x_(dy, dx)) of x [N, C, H, W], dy and dx in 0..f-1 (row-major)."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (0, f - 1, 0, f - 1))
    return [(dy, dx, xp[..., dy:dy + h, dx:dx + w]) for dy in range(f) for dx in range(f)]


def stitch(coarse: dict[tuple[int, int], Tensor], f: int) -> Tensor:
    """Interleave f^2 coarse maps {(dy, dx): [N, C, h, w]} into [N, C, f h, f w]: out[..., f i + dy, f j + dx]."""
    first = coarse[(0, 0)]
    n, c, h, w = first.shape
    out = first.new_empty(n, c, h * f, w * f)
    for (dy, dx), y in coarse.items():
        if y.shape != first.shape:
            raise ConfigError(f"shift and stitch: every shift must give a map of one shape; shift {(dy, dx)} gave "
                              f"{tuple(y.shape)}, shift (0, 0) gave {tuple(first.shape)}")
        out[..., dy::f, dx::f] = y
    return out


def shift_and_stitch(net: Callable[[Tensor], Tensor], x: Tensor, f: int) -> Tensor:
    """Dense [N, C, f h, f w] prediction of `net` (total stride f, coarse output [N, C, h, w]) on x [N, C_in, H, W]:
    f^2 forward passes on the shifted inputs, interleaved (see the module for the shift convention).

    Notes: 003 §4.1 (shift and stitch), 002 §5.1.2.
    """
    if isinstance(f, bool) or not isinstance(f, int) or f < 1:
        raise ConfigError(f"shift_and_stitch: f is the network's total stride, an int >= 1; got {f!r}")
    if x.dim() != 4:
        raise ConfigError(f"shift_and_stitch expects images [N, C, H, W]; got shape {tuple(x.shape)}")
    coarse = {}
    for dy, dx, xs in shifted_inputs(x, f):
        y = net(xs)
        if not isinstance(y, torch.Tensor) or y.dim() != 4:
            raise ConfigError(f"shift_and_stitch: the network must return score maps [N, C, h, w]; got "
                              f"{type(y).__name__} {tuple(getattr(y, 'shape', ()))}")
        coarse[(dy, dx)] = y
    return stitch(coarse, f)
