"""Convolution arithmetic: output sizes, parameters, FLOPs, receptive fields (Notes: 000 §3.1-3.7, 003 §3.2, 004 CNN).

Two padding conventions appear in the notes and both are offered here:
- 000 §3.1 counts P as the TOTAL padding of an axis:          O = (W + P - K) / S + 1
- 004 CNN (and torch) count P on EACH side:                   O = (I - K + 2P) / S + 1
Neither says what to do when the division is not exact; like every framework we floor it. A dilation d
widens the kernel to K_eff = K + (K - 1)(d - 1) = d (K - 1) + 1 without adding weights (000 §3.7).
FLOPs are counted as multiply-adds (one MAC per weight per output position), the quantity of 000 §3.1.1;
profilers such as torch.utils.flop_counter report 2 x MACs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import ConfigError

IntPair = int | tuple[int, int]


def as_pair(value: IntPair | Sequence[int], name: str) -> tuple[int, int]:
    """(value, value) for an int, the pair itself for a 2-sequence of ints; ConfigError otherwise."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an int or a pair of ints; got {value!r}")
    if isinstance(value, int):
        return value, value
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ConfigError(f"{name} must be an int or a pair of ints (height, width); got {value!r}")


def _check(kernel_size: int, stride: int, dilation: int) -> None:
    if kernel_size < 1 or stride < 1 or dilation < 1:
        raise ConfigError(f"kernel_size, stride and dilation must be >= 1; got kernel_size={kernel_size}, "
                          f"stride={stride}, dilation={dilation}")


def effective_kernel_size(kernel_size: int, dilation: int = 1) -> int:
    """Extent of a dilated kernel (Notes: 000 §3.7): K_eff = K + (K - 1)(d - 1) = d (K - 1) + 1."""
    _check(kernel_size, 1, dilation)
    return dilation * (kernel_size - 1) + 1


def _floor_out(size: int, span: int, kernel_size: int, stride: int, dilation: int, how: str) -> int:
    if size < 1:
        raise ConfigError(f"input size must be >= 1; got {size}")
    k_eff = effective_kernel_size(kernel_size, dilation)
    out = (size + span - k_eff) // stride + 1
    if out < 1:
        raise ConfigError(f"the (dilated) kernel {k_eff} does not fit the padded input {size} + {span} ({how}): "
                          f"output size would be {out}. Use a smaller kernel/dilation or more padding.")
    return out


def conv_output_size_total_padding(size: int, kernel_size: int, stride: int = 1, total_padding: int = 0,
                                   dilation: int = 1) -> int:
    """Output length with P the TOTAL padding of the axis (Notes: 000 §3.1): O = floor((W + P - K_eff) / S) + 1."""
    _check(kernel_size, stride, dilation)
    if total_padding < 0:
        raise ConfigError(f"total_padding must be >= 0; got {total_padding}")
    return _floor_out(size, total_padding, kernel_size, stride, dilation, f"total padding {total_padding}")


def same_padding(size: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of 'same' mode, the minimum giving O = ceil(I / S) (Notes: 000 §3.1).

    Total P = max((ceil(I/S) - 1) S + K_eff - I, 0), split with the odd pixel after (torch and TensorFlow);
    for stride 1 this is P = d (K - 1), torch's padding='same'.
    """
    _check(kernel_size, stride, dilation)
    total = max((math.ceil(size / stride) - 1) * stride + effective_kernel_size(kernel_size, dilation) - size, 0)
    return total // 2, total - total // 2


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int | str = 0, dilation: int = 1) -> int:
    """Output length with P padding on EACH side (Notes: 004 CNN, 003 §3.2.1): O = floor((I - K_eff + 2P) / S) + 1.

    `padding` may also be 'valid' (P = 0) or 'same' (the minimum padding, O = ceil(I / S); 000 §3.1).
    """
    _check(kernel_size, stride, dilation)
    if padding == "valid":
        padding = 0
    elif padding == "same":
        return _floor_out(size, sum(same_padding(size, kernel_size, stride, dilation)), kernel_size, stride,
                          dilation, "same")
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ConfigError(f"padding must be an int >= 0 per side, 'valid' or 'same'; got {padding!r}")
    return _floor_out(size, 2 * padding, kernel_size, stride, dilation, f"padding {padding} per side")


def conv_output_shape(input_hw: IntPair, kernel_size: IntPair, stride: IntPair = 1, padding: IntPair | str = 0,
                      dilation: IntPair = 1) -> tuple[int, int]:
    """(O_h, O_w) of a 2-D convolution, per-side padding; each argument an int or an (h, w) pair."""
    size, k, s, d = (as_pair(v, n) for v, n in ((input_hw, "input_hw"), (kernel_size, "kernel_size"),
                                                (stride, "stride"), (dilation, "dilation")))
    p = (padding, padding) if isinstance(padding, str) else as_pair(padding, "padding")
    return tuple(conv_output_size(size[i], k[i], s[i], p[i], d[i]) for i in range(2))  # type: ignore[return-value]


def conv_transpose_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0,
                               output_padding: int = 0, dilation: int = 1) -> int:
    """Output length of a transposed convolution (Notes: 000 §3.7): O = (I - 1) S - 2P + d (K - 1) + op + 1.

    It is the input length of the convolution it transposes; output_padding (0 <= op < max(S, d)) picks one
    of the S input lengths that the floor in conv_output_size maps to the same I.
    """
    _check(kernel_size, stride, dilation)
    if size < 1 or padding < 0 or not 0 <= output_padding < max(stride, dilation):
        raise ConfigError(f"need size >= 1, padding >= 0 and 0 <= output_padding < max(stride, dilation) = "
                          f"{max(stride, dilation)}; got size={size}, padding={padding}, "
                          f"output_padding={output_padding}")
    out = (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if out < 1:
        raise ConfigError(f"transposed convolution output size would be {out}; reduce padding ({padding})")
    return out


def pool_output_size(size: int, kernel_size: int, stride: int | None = None, padding: int = 0,
                     dilation: int = 1) -> int:
    """Output length of a pooling window (Notes: 004 CNN): O = floor((I - F + 2P) / S) + 1, S defaults to F."""
    return conv_output_size(size, kernel_size, kernel_size if stride is None else stride, padding, dilation)


def dense_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """Parameters of a dense layer (Notes: 000 §1.2.1, 003 §3.2.3): S_in S_out + S_out."""
    return in_features * out_features + (out_features if bias else 0)


def dense_flops(in_features: int, out_features: int) -> int:
    """Multiply-adds of a dense layer on one input (Notes: 000 §1.2.1): S_in S_out."""
    return in_features * out_features


def _check_groups(in_chans: int, out_chans: int, groups: int) -> None:
    if groups < 1 or in_chans % groups or out_chans % groups:
        raise ConfigError(f"groups must divide in_chans and out_chans; got in_chans={in_chans}, "
                          f"out_chans={out_chans}, groups={groups}")


def conv_params(in_chans: int, out_chans: int, kernel_size: IntPair, groups: int = 1, bias: bool = True) -> int:
    """Parameters of a convolution (Notes: 000 §3.1.1, 003 §3.4): K_w K_h D_in D_out / G + D_out.

    A grouped convolution (002 §2.3) has G times fewer weights: each of the G groups maps D_in/G channels
    to D_out/G channels.
    """
    _check_groups(in_chans, out_chans, groups)
    kh, kw = as_pair(kernel_size, "kernel_size")
    return kh * kw * in_chans * out_chans // groups + (out_chans if bias else 0)


def conv_flops(in_chans: int, out_chans: int, kernel_size: IntPair, output_hw: IntPair, groups: int = 1) -> int:
    """Multiply-adds of a convolution on one image (Notes: 000 §3.1.1): K_w K_h D_in D_out O_w O_h / G."""
    _check_groups(in_chans, out_chans, groups)
    kh, kw = as_pair(kernel_size, "kernel_size")
    oh, ow = as_pair(output_hw, "output_hw")
    return kh * kw * in_chans * out_chans // groups * oh * ow


def depthwise_separable_params(in_chans: int, out_chans: int, kernel_size: IntPair, bias: bool = False) -> int:
    """Parameters of a depth-wise separable convolution (Notes: 000 §3.4.1): K_w K_h D_in + D_in D_out.

    The notes count no biases; bias=True adds D_in (depth-wise) + D_out (point-wise).
    """
    return (conv_params(in_chans, in_chans, kernel_size, groups=in_chans, bias=bias)
            + conv_params(in_chans, out_chans, 1, bias=bias))


def depthwise_separable_flops(in_chans: int, out_chans: int, kernel_size: IntPair, output_hw: IntPair) -> int:
    """Multiply-adds of a depth-wise separable convolution (Notes: 002 §2.5): (K_w K_h D_in + D_in D_out) O_w O_h.

    Its ratio to a standard convolution is 1/D_out + 1/(K_w K_h), about 1/9 for 3x3 kernels.
    """
    return (conv_flops(in_chans, in_chans, kernel_size, output_hw, groups=in_chans)
            + conv_flops(in_chans, out_chans, 1, output_hw))


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one unit after a layer, in input pixels (Notes: 000 §3.1, 003 §3.2.4).

    size: r, the extent of input influencing one output unit; jump: j, the input distance between two
    adjacent output units (the product of strides); start: the input coordinate of the centre of output
    unit 0 (pixel centres at 0, 1, ...; x.5 for even effective kernels). Unit i sees
    [start + i j - (r - 1)/2, start + i j + (r - 1)/2].
    """

    size: int
    jump: int
    start: float


def _layer_spec(layer, axis: int) -> tuple[int, int, int, int]:
    """(kernel, stride, dilation, padding-before) of a tuple spec or of a conv/pool module."""
    if isinstance(layer, int):
        return layer, 1, 1, 0
    if isinstance(layer, Sequence) and not isinstance(layer, str):
        if not 1 <= len(layer) <= 4:
            raise ConfigError(f"a layer is (kernel, stride=1, dilation=1, padding=0); got {layer!r}")
        k, s, d, p = (*layer, *(1, 1, 0)[len(layer) - 1:])
        return int(k), int(s), int(d), int(p)
    if hasattr(layer, "kernel_size"):
        def get(name: str, default):
            v = getattr(layer, name, default)
            v = default if v is None else v
            return v[axis] if isinstance(v, Sequence) and not isinstance(v, str) else v

        k, d = get("kernel_size", 1), get("dilation", 1)
        s, p = get("stride", k), get("padding", 0)
        if p == "same":
            p = d * (k - 1) // 2
        elif p == "valid":
            p = 0
        return int(k), int(s), int(d), int(p)
    raise ConfigError(f"a receptive-field layer is an int kernel, a (kernel, stride, dilation, padding) tuple or a "
                      f"conv/pool module with kernel_size; got {type(layer).__name__}")


def receptive_fields(layers: Iterable, axis: int = 0) -> list[ReceptiveField]:
    """Receptive field after each layer of a stack (Notes: 000 §3.1, 003 §3.2.4).

    r_l = r_{l-1} + (k_l - 1) d_l j_{l-1},   j_l = j_{l-1} s_l,
    start_l = start_{l-1} + ((k_l - 1) d_l / 2 - p_l) j_{l-1},
    from r_0 = 1, j_0 = 1, start_0 = 0, where j_{l-1} is the product of the strides before layer l. Layers are
    ints (kernel), (kernel, stride, dilation, padding) tuples, or conv/pool modules (`axis` 0 = height, 1 = width).
    """
    r, j, start = 1, 1, 0.0
    out = []
    for layer in layers:
        k, s, d, p = _layer_spec(layer, axis)
        _check(k, s, d)
        r += (k - 1) * d * j
        start += ((k - 1) * d / 2 - p) * j
        j *= s
        out.append(ReceptiveField(r, j, start))
    return out


def receptive_field(layers: Iterable, axis: int = 0) -> ReceptiveField:
    """Receptive field of one unit of the last layer of a stack; see `receptive_fields`."""
    fields = receptive_fields(layers, axis)
    return fields[-1] if fields else ReceptiveField(1, 1, 0.0)
