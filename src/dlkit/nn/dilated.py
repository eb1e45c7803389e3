"""Exponentially dilated convolution stacks (Notes: 002 §5.1.5; Yu and Koltun 2016).

A dilated (atrous) convolution spaces its taps r apart, [K * I](j, i) = sum_n sum_m sum_l K_n(m, l) I_n(j - r m,
i - r l) + b, which is the ordinary convolution with the zero-inserted kernel (r - 1 zeros between taps,
`dlkit.nn.conv.dilate_kernel`), of extent k + (k - 1)(r - 1): a 3x3 kernel spans 5x5 at r = 2 and 9x9 at r = 4
(Fig. 5.4). Stacking 3x3 convolutions with r_l = 2^l (l = 0, 1, 2, ...) grows the receptive field exponentially,
3, 7, 15, 31, ..., while the parameters grow linearly and the resolution is unchanged.

Clarification of the notes' indexing: the field after L layers (the last with rate 2^(L-1)) is (2^(L+1) - 1)^2;
with l counted from 0 as the layer index, as in the notes' list 3, 7, 15, it is (2^(l+2) - 1)^2.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .conv_arithmetic import receptive_field as _receptive_field
from .conv_bn_act import ConvBNAct


def exponential_receptive_field(num_layers: int, kernel_size: int = 3) -> int:
    """Receptive field (per axis) of `num_layers` k x k convolutions with rates 1, 2, ..., 2^(L-1). 002 §5.1.5.

    r = 1 + (k - 1) sum_l 2^l = 1 + (k - 1)(2^L - 1), which is 2^(L+1) - 1 for k = 3.
    """
    if num_layers < 0 or kernel_size < 1:
        raise ConfigError(f"need num_layers >= 0 and kernel_size >= 1; got num_layers={num_layers}, "
                          f"kernel_size={kernel_size}")
    return 1 + (kernel_size - 1) * (2 ** num_layers - 1)


class DilatedStack(nn.Sequential):
    """k x k convolutions with dilation 1, 2, 4, ..., 2^(L-1), 'same' padding. Notes: 002 §5.1.5.

    Each layer keeps `chans` channels and H x W (padding (k - 1) / 2 * r) and is followed by `act_layer`
    (None: a linear stack); `norm_layer` ('batch', 'group', ..., a class; `dlkit.nn.norm`) adds a normalisation
    (the convolutions then have no bias).
    Parameters: L (k^2 C^2 + C) without BN, linear in L; the receptive field is 2^(L+1) - 1 for k = 3.
    """

    def __init__(self, chans: int, num_layers: int = 4, kernel_size: int = 3, act_layer="relu", norm_layer=None):
        if num_layers < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"DilatedStack needs num_layers >= 1 and an odd kernel_size ('same' padding); got "
                              f"num_layers={num_layers}, kernel_size={kernel_size}")
        super().__init__(*(ConvBNAct(chans, chans, kernel_size, dilation=2 ** i, act_layer=act_layer,
                                     norm_layer=norm_layer)
                           for i in range(num_layers)))
        self.dilations = tuple(2 ** i for i in range(num_layers))
        self.kernel_size = kernel_size

    def receptive_field(self) -> int:
        """Receptive field per axis of one output unit, from the layers (`dlkit.nn.conv_arithmetic`)."""
        return _receptive_field(layer[0] for layer in self).size
