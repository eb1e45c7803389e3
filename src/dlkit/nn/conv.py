"""Convolution layers written from the definition, im2col + matrix product (Notes: 000 §3.1-3.7, 003 §3.2.1, 002 §2.3).

A convolutional layer slides D_out kernels of shape K_h x K_w x D_in over the input; the value at (o, i, j) is

    y[o, i, j] = b[o] + sum_{c, a, b} w[o, c, a, b] x[c, i S - P + a d, j S - P + b d]

a cross-correlation (no kernel flip), as in every framework. im2col copies each receptive field into a column,
so the whole layer is one matrix product W (D_out x D_in K_h K_w) @ cols (D_in K_h K_w x O_h O_w). A grouped
convolution (002 §2.3) splits the channels into G chunks with their own kernels (G times fewer weights and
FLOPs); a depth-wise separable convolution (000 §3.4, 002 §2.5) is a depth-wise (G = D_in) k x k convolution
followed by a 1 x 1 point-wise one; a dilated convolution (000 §3.7) spaces its taps d apart; a transposed
convolution (000 §3.7) is a stride-1 convolution over the zero-inserted input ("stride 1/S") with the
flipped, transposed kernel, the adjoint of the convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .conv_arithmetic import IntPair, as_pair, conv_output_size, same_padding

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _check_input(x: Tensor, what: str) -> None:
    if x.dim() != 4:
        raise ConfigError(f"{what} expects a batch of images [N, C, H, W]; got shape {tuple(x.shape)}. "
                          f"Add a batch dimension with x.unsqueeze(0).")


def sliding_windows(x: Tensor, kernel_size: IntPair, stride: IntPair = 1, dilation: IntPair = 1) -> Tensor:
    """All K_h x K_w windows of an (already padded) [N, C, H, W] input: a view [N, C, O_h, O_w, K_h, K_w].

    Notes: 000 §3.1. Window (i, j) holds x[:, :, i S_h + a d_h, j S_w + b d_w] at (a, b).
    """
    _check_input(x, "sliding_windows")
    (kh, kw), (sh, sw), (dh, dw) = as_pair(kernel_size, "kernel_size"), as_pair(stride, "stride"), as_pair(
        dilation, "dilation")
    oh = conv_output_size(x.shape[2], kh, sh, 0, dh)  # raises ConfigError when the kernel does not fit
    ow = conv_output_size(x.shape[3], kw, sw, 0, dw)
    win = x.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
    win = win[..., ::dh, ::dw]
    assert win.shape[2:4] == (oh, ow)
    return win


def resolve_padding(padding: IntPair | str, input_hw: tuple[int, int], kernel_size: IntPair, stride: IntPair = 1,
                    dilation: IntPair = 1) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding for an int / (h, w) pair per side, 'valid' or 'same' (000 §3.1)."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        (kh, kw), (sh, sw), (dh, dw) = as_pair(kernel_size, "kernel_size"), as_pair(stride, "stride"), as_pair(
            dilation, "dilation")
        top, bottom = same_padding(input_hw[0], kh, sh, dh)
        left, right = same_padding(input_hw[1], kw, sw, dw)
        return left, right, top, bottom
    if isinstance(padding, str):
        raise ConfigError(f"padding must be an int or (h, w) pair per side, 'valid' or 'same'; got {padding!r}")
    ph, pw = as_pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ConfigError(f"padding must be >= 0; got {padding!r}")
    return pw, pw, ph, ph


def im2col(x: Tensor, kernel_size: IntPair, stride: IntPair = 1, padding: IntPair | str = 0,
           dilation: IntPair = 1) -> Tensor:
    """Receptive fields as columns, [N, C K_h K_w, O_h O_w] in the (channel, a, b) order of F.unfold (000 §3.2)."""
    _check_input(x, "im2col")
    pads = resolve_padding(padding, (x.shape[2], x.shape[3]), kernel_size, stride, dilation)
    x = F.pad(x, pads) if any(pads) else x
    win = sliding_windows(x, kernel_size, stride, dilation)  # [N, C, O_h, O_w, K_h, K_w]
    n, c, oh, ow, kh, kw = win.shape
    return win.permute(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, oh * ow)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1, padding: IntPair | str = 0,
           dilation: IntPair = 1, groups: int = 1, padding_mode: str = "zeros") -> Tensor:
    """2-D convolution by im2col + matrix product, equal to F.conv2d (Notes: 000 §3.1, 002 §2.3).

    y[n, o] = b[o] + W_g(o) @ im2col(x[n, group g(o)]): weight [D_out, D_in / G, K_h, K_w], groups G.
    """
    _check_input(x, "conv2d")
    if weight.dim() != 4:
        raise ConfigError(f"weight must be [D_out, D_in/groups, K_h, K_w]; got shape {tuple(weight.shape)}")
    c_out, c_in_g, kh, kw = weight.shape
    if groups < 1 or c_out % groups or x.shape[1] != c_in_g * groups:
        raise ConfigError(f"input has {x.shape[1]} channels; a weight {tuple(weight.shape)} with groups={groups} "
                          f"expects {c_in_g * groups} and D_out divisible by groups. Check in_chans/groups.")
    if bias is not None and bias.shape != (c_out,):
        raise ConfigError(f"bias must have shape ({c_out},); got {tuple(bias.shape)}")
    if padding_mode not in _PADDING_MODES:
        raise ConfigError(f"padding_mode must be one of {_PADDING_MODES}; got {padding_mode!r}")
    pads = resolve_padding(padding, (x.shape[2], x.shape[3]), (kh, kw), stride, dilation)
    if any(pads):
        x = F.pad(x, pads) if padding_mode == "zeros" else F.pad(x, pads, mode=padding_mode)
    cols = im2col(x, (kh, kw), stride, 0, dilation)  # [N, D_in K_h K_w, L]
    n, _, length = cols.shape
    cols = cols.view(n, groups, c_in_g * kh * kw, length)
    w = weight.reshape(groups, c_out // groups, c_in_g * kh * kw)
    y = torch.matmul(w, cols)  # [N, G, D_out / G, L]
    oh = conv_output_size(x.shape[2], kh, as_pair(stride, "stride")[0], 0, as_pair(dilation, "dilation")[0])
    y = y.reshape(n, c_out, oh, length // oh)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def zero_insert(x: Tensor, stride: IntPair) -> Tensor:
    """Insert S - 1 zeros between neighbouring pixels: [.., H, W] -> [.., (H-1) S_h + 1, (W-1) S_w + 1] (000 §3.7).

    A convolution with stride 1 over this input is the "convolution with stride 1/S" of the notes.
    """
    sh, sw = as_pair(stride, "stride")
    if sh < 1 or sw < 1:
        raise ConfigError(f"stride must be >= 1; got {stride!r}")
    h, w = x.shape[-2:]
    out = x.new_zeros(*x.shape[:-2], (h - 1) * sh + 1, (w - 1) * sw + 1)
    out[..., ::sh, ::sw] = x
    return out


def dilate_kernel(weight: Tensor, dilation: IntPair) -> Tensor:
    """The dense kernel of a dilated convolution: taps spaced d apart, zeros between (Notes: 000 §3.7).

    conv(x, w, dilation=d) == conv(x, dilate_kernel(w, d)); the extent is K + (K - 1)(d - 1), the weights unchanged.
    """
    return zero_insert(weight, dilation)


def conv_transpose2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1,
                     padding: IntPair = 0, output_padding: IntPair = 0, groups: int = 1,
                     dilation: IntPair = 1) -> Tensor:
    """Transposed convolution as a stride-1 convolution over a zero-inserted input (Notes: 000 §3.7).

    weight [D_in, D_out / G, K_h, K_w] (torch's layout). Insert S - 1 zeros between pixels, pad each side by
    d (K - 1) - P (plus output_padding after), and convolve (stride 1, dilation d) with the kernel flipped in
    space and with input/output channels swapped. Output O = (I - 1) S - 2P + d (K - 1) + op + 1. Equals
    F.conv_transpose2d and is the adjoint of conv2d: <conv2d(x), y> = <x, conv_transpose2d(y)>.
    """
    _check_input(x, "conv_transpose2d")
    if weight.dim() != 4:
        raise ConfigError(f"weight must be [D_in, D_out/groups, K_h, K_w]; got shape {tuple(weight.shape)}")
    c_in, c_out_g, kh, kw = weight.shape
    if groups < 1 or c_in % groups or x.shape[1] != c_in:
        raise ConfigError(f"input has {x.shape[1]} channels; weight {tuple(weight.shape)} expects {c_in}, "
                          f"divisible by groups={groups}")
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = (as_pair(v, n) for v, n in (
        (stride, "stride"), (padding, "padding"), (output_padding, "output_padding"), (dilation, "dilation")))
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ConfigError(f"need stride, dilation >= 1 and padding >= 0; got stride={stride}, dilation={dilation}, "
                          f"padding={padding}")
    if not (0 <= oph < max(sh, dh) and 0 <= opw < max(sw, dw)):
        raise ConfigError(f"output_padding must be in [0, max(stride, dilation)); got {output_padding} with "
                          f"stride={stride}, dilation={dilation}")
    qh, qw = dh * (kh - 1) - ph, dw * (kw - 1) - pw  # padding of the equivalent convolution (negative = crop)
    z = F.pad(zero_insert(x, (sh, sw)), (qw, qw + opw, qh, qh + oph))
    if min(z.shape[2:]) < 1:
        raise ConfigError(f"padding {padding} crops the whole output; reduce it")
    # [D_in, D_out/G, K_h, K_w] -> [G, D_in/G, D_out/G, ...] -> [D_out, D_in/G, K_h, K_w], flipped in space
    w = weight.reshape(groups, c_in // groups, c_out_g, kh, kw).transpose(1, 2)
    w = w.reshape(groups * c_out_g, c_in // groups, kh, kw).flip(-2, -1)
    return conv2d(z, w, bias, stride=1, padding=0, dilation=(dh, dw), groups=groups)


def _init_like_torch(weight: nn.Parameter, bias: nn.Parameter | None) -> None:
    # torch's default: kaiming_uniform(a = sqrt 5) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the bias the same bound
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = nn.init._calculate_fan_in_and_fan_out(weight)[0]
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(bias, -bound, bound)


class Conv2d(nn.Module):
    """Convolutional layer from the definition, im2col + matmul (Notes: 000 §3.1, 003 §3.2.1; groups 002 §2.3).

    D_out kernels of K_h x K_w x D_in / G, shared over all positions: K_h K_w D_in D_out / G + D_out parameters.
    Parameter names, shapes and initialisation equal nn.Conv2d's, so state_dicts interchange.
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair | str = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros"):
        super().__init__()
        if in_chans < 1 or out_chans < 1 or groups < 1 or in_chans % groups or out_chans % groups:
            raise ConfigError(f"groups must divide in_chans and out_chans (all >= 1); got in_chans={in_chans}, "
                              f"out_chans={out_chans}, groups={groups}")
        if padding_mode not in _PADDING_MODES:
            raise ConfigError(f"padding_mode must be one of {_PADDING_MODES}; got {padding_mode!r}")
        self.in_chans, self.out_chans, self.groups, self.padding_mode = in_chans, out_chans, groups, padding_mode
        self.kernel_size, self.stride, self.dilation = (as_pair(v, n) for v, n in (
            (kernel_size, "kernel_size"), (stride, "stride"), (dilation, "dilation")))
        if min(*self.kernel_size, *self.stride, *self.dilation) < 1:
            raise ConfigError(f"kernel_size, stride and dilation must be >= 1; got {kernel_size}, {stride}, {dilation}")
        self.padding = padding if isinstance(padding, str) else as_pair(padding, "padding")
        resolve_padding(self.padding, (1, 1), self.kernel_size)  # validates early
        self.weight = nn.Parameter(torch.empty(out_chans, in_chans // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_chans)) if bias else None
        _init_like_torch(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                      self.padding_mode)

    def extra_repr(self) -> str:
        return (f"{self.in_chans}, {self.out_chans}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}")


class DepthwiseSeparableConv2d(nn.Module):
    """Depth-wise k x k convolution (one kernel per channel) then a 1 x 1 point-wise one (000 §3.4, 002 §2.5).

    K_w K_h D_in + D_in D_out parameters (the notes count no bias; bias=True adds D_in + D_out) instead of
    K_w K_h D_in D_out. It equals a standard convolution with the rank-limited kernel W[o, c] = p[o, c] d[c].
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: IntPair = 3, stride: IntPair = 1,
                 padding: IntPair | str = 0, dilation: IntPair = 1, bias: bool = False):
        super().__init__()
        self.in_chans, self.out_chans = in_chans, out_chans
        self.depthwise = Conv2d(in_chans, in_chans, kernel_size, stride, padding, dilation, groups=in_chans, bias=bias)
        self.pointwise = Conv2d(in_chans, out_chans, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))

    def equivalent_conv(self) -> Conv2d:
        """The standard Conv2d computing the same map: W[o, c] = p[o, c] d[c], b = p @ b_d + b_p."""
        dw, pw = self.depthwise, self.pointwise
        has_bias = dw.bias is not None
        conv = Conv2d(self.in_chans, self.out_chans, dw.kernel_size, dw.stride, dw.padding, dw.dilation, bias=has_bias)
        conv = conv.to(dw.weight.dtype)
        p = pw.weight[:, :, 0, 0]  # [D_out, D_in]
        with torch.no_grad():
            conv.weight.copy_(p[:, :, None, None] * dw.weight[:, 0][None])
            if has_bias:
                conv.bias.copy_(p @ dw.bias + pw.bias)
        return conv


class ConvTranspose2d(nn.Module):
    """Transposed convolution ("deconvolution", upsampling), see conv_transpose2d (Notes: 000 §3.7).

    Weight [D_in, D_out / G, K_h, K_w] and initialisation as nn.ConvTranspose2d, so state_dicts interchange.
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, output_padding: IntPair = 0, groups: int = 1, bias: bool = True,
                 dilation: IntPair = 1):
        super().__init__()
        if in_chans < 1 or out_chans < 1 or groups < 1 or in_chans % groups or out_chans % groups:
            raise ConfigError(f"groups must divide in_chans and out_chans (all >= 1); got in_chans={in_chans}, "
                              f"out_chans={out_chans}, groups={groups}")
        self.in_chans, self.out_chans, self.groups = in_chans, out_chans, groups
        self.kernel_size, self.stride, self.padding, self.output_padding, self.dilation = (as_pair(v, n) for v, n in (
            (kernel_size, "kernel_size"), (stride, "stride"), (padding, "padding"),
            (output_padding, "output_padding"), (dilation, "dilation")))
        self.weight = nn.Parameter(torch.empty(in_chans, out_chans // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_chans)) if bias else None
        _init_like_torch(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                self.groups, self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_chans}, {self.out_chans}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, output_padding={self.output_padding}, groups={self.groups}")
