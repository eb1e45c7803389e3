"""Pooling from the definition: a fixed function applied as a sliding filter (Notes: 000 §3.3, 003 §3.2.2, 004 CNN).

Max-pooling takes the maximum of each window, mean (average) pooling its mean, min-pooling (004) its minimum;
global average pooling (003 §5, GAP) the mean of each whole channel, F_k = (1/N) sum_{x, y} f_k(x, y). Pooling
works per channel, keeps the depth, has no parameters, and its output size is O = floor((I - F + 2P) / S) + 1
(004 CNN). The gradient of max-pooling reaches only the argmax of each window (the first one on ties, as torch);
that of mean pooling spreads evenly over the window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .conv import sliding_windows
from .conv_arithmetic import IntPair, as_pair


def _pool_args(x: Tensor, kernel_size: IntPair, stride: IntPair | None, padding: IntPair, dilation: IntPair,
               what: str):
    """Validated (kernel, stride, padding, dilation) pairs; like torch, a window may not lie wholly in the padding."""
    if x.dim() != 4:
        raise ConfigError(f"{what} expects [N, C, H, W]; got shape {tuple(x.shape)}. Add a batch dimension.")
    k, p, d = as_pair(kernel_size, "kernel_size"), as_pair(padding, "padding"), as_pair(dilation, "dilation")
    s = k if stride is None else as_pair(stride, "stride")
    half = [(d[i] * (k[i] - 1) + 1) // 2 for i in range(2)]  # half the effective kernel
    if min(*k, *s, *d) < 1 or min(p) < 0 or p[0] > half[0] or p[1] > half[1]:
        raise ConfigError(f"{what} needs kernel_size, stride, dilation >= 1 and 0 <= padding <= effective kernel "
                          f"// 2 = {tuple(half)}; got kernel_size={kernel_size}, stride={stride}, padding={padding}")
    return k, s, p, d


def max_pool2d(x: Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
               dilation: IntPair = 1, return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Max-pooling, y[n, c, i, j] = max of window (i, j), padding counts as -inf (Notes: 000 §3.3, 003 §3.2.2).

    Equals F.max_pool2d; `return_indices` gives the flat H * W index of each maximum, as torch.
    """
    k, s, p, d = _pool_args(x, kernel_size, stride, padding, dilation, "max_pool2d")
    xp = F.pad(x, (p[1], p[1], p[0], p[0]), value=float("-inf")) if any(p) else x
    win = sliding_windows(xp, k, s, d)  # [N, C, O_h, O_w, K_h, K_w]
    flat = win.reshape(*win.shape[:4], -1)
    arg = flat.argmax(-1, keepdim=True)  # the first maximum of each window
    y = flat.gather(-1, arg).squeeze(-1)  # gather routes the gradient to the argmax only
    if not return_indices:
        return y
    arg = arg.squeeze(-1)
    oh, ow = y.shape[2:]
    rows = torch.arange(oh, device=x.device).view(-1, 1) * s[0] - p[0] + (arg // k[1]) * d[0]
    cols = torch.arange(ow, device=x.device).view(1, -1) * s[1] - p[1] + (arg % k[1]) * d[1]
    return y, rows * x.shape[3] + cols


def min_pool2d(x: Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
               dilation: IntPair = 1) -> Tensor:
    """Min-pooling (Notes: 004 CNN), the minimum of each window: min_pool(x) = -max_pool(-x)."""
    return -max_pool2d(-x, kernel_size, stride, padding, dilation)


def avg_pool2d(x: Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """Mean-pooling, y = (1/|window|) sum of window (Notes: 000 §3.3, 003 §3.2.2). Equals F.avg_pool2d.

    The zero padding counts in |window| (= K_h K_w) when count_include_pad, otherwise only real pixels do;
    divisor_override replaces |window|.
    """
    k, s, p, _ = _pool_args(x, kernel_size, stride, padding, 1, "avg_pool2d")
    pads = (p[1], p[1], p[0], p[0])
    sums = sliding_windows(F.pad(x, pads), k, s).sum((-2, -1))
    if divisor_override is not None:
        if divisor_override < 1:
            raise ConfigError(f"divisor_override must be >= 1; got {divisor_override}")
        return sums / divisor_override
    if count_include_pad or not any(p):
        return sums / (k[0] * k[1])
    ones = F.pad(x.new_ones(1, 1, *x.shape[2:]), pads)
    return sums / sliding_windows(ones, k, s).sum((-2, -1))  # number of real pixels in each window


def global_avg_pool2d(x: Tensor, keepdim: bool = False) -> Tensor:
    """Global average pooling (GAP), F_k = (1/(H W)) sum_{x, y} f_k(x, y) (Notes: 003 §5, 002 §2.1).

    Returns [N, C], or [N, C, 1, 1] with keepdim.
    """
    if x.dim() != 4:
        raise ConfigError(f"global_avg_pool2d expects [N, C, H, W]; got shape {tuple(x.shape)}")
    return x.sum((-2, -1), keepdim=keepdim) / (x.shape[-2] * x.shape[-1])


class _Pool2d(nn.Module):
    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0):
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride")
        self.padding = as_pair(padding, "padding")

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max-pooling layer, no parameters (Notes: 000 §3.3, 003 §3.2.2); stride defaults to the kernel size."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
                 dilation: IntPair = 1):
        super().__init__(kernel_size, stride, padding)
        self.dilation = as_pair(dilation, "dilation")

    def forward(self, x: Tensor) -> Tensor:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)


class MinPool2d(MaxPool2d):
    """Min-pooling layer, no parameters (Notes: 004 CNN): -MaxPool2d(-x)."""

    def forward(self, x: Tensor) -> Tensor:
        return min_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)


class AvgPool2d(_Pool2d):
    """Mean (average) pooling layer, no parameters (Notes: 000 §3.3, 003 §3.2.2)."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
                 count_include_pad: bool = True, divisor_override: int | None = None):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, x: Tensor) -> Tensor:
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.count_include_pad,
                          self.divisor_override)


class GlobalAvgPool2d(nn.Module):
    """Global average pooling layer (Notes: 003 §5, 002 §2.1): [N, C, H, W] -> [N, C] (flatten) or [N, C, 1, 1]."""

    def __init__(self, flatten: bool = True):
        super().__init__()
        self.flatten = flatten

    def forward(self, x: Tensor) -> Tensor:
        return global_avg_pool2d(x, keepdim=not self.flatten)
