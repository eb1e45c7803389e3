"""Convolution -> normalisation -> activation, the unit most modern CNNs repeat (Notes: 002 §2, 003 §3.6).

The convolution has no bias when it is followed by a normalisation: BN's shift beta replaces it
(a bias before BN is subtracted away with the batch mean), which is also how the published parameter
counts of ResNet, MobileNet and EfficientNet are obtained.
"""

from __future__ import annotations

from torch import nn

from .activations import get_act_layer, inplace_
from .norm import get_norm_layer


class ConvBNAct(nn.Sequential):
    """Conv2d(k, stride, groups, 'same'-style padding (k-1)//2 * dilation) + normalisation + activation.

    `norm_layer` is a name ('batch', 'group', 'instance', 'frozen_batch'), a class or None (`dlkit.nn.norm`);
    with None the convolution keeps its bias and no normalisation follows. `bn_eps` goes to every named norm,
    `bn_momentum` to batch norm. `act_layer` is an activation name, a module class or None (a linear projection,
    as in MobileNetV2's bottleneck output); it runs in place where it can (`dlkit.nn.activations.inplace_`).
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int | tuple[int, int] = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1, act_layer="relu", norm_layer="batch",
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        padding = ((kh - 1) // 2 * dilation, (kw - 1) // 2 * dilation)  # 'same' for odd kernels (1x7, 7x1 too)
        make_norm = get_norm_layer(norm_layer, eps=bn_eps, momentum=bn_momentum)
        make_act = get_act_layer(act_layer)
        layers: list[nn.Module] = [nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, dilation=dilation,
                                             groups=groups, bias=make_norm is None)]
        if make_norm is not None:
            layers.append(make_norm(out_chans))
        if make_act is not None:  # in place: nothing else reads the conv/norm output (as torchvision's CNNs)
            layers.append(inplace_(make_act()))
        super().__init__(*layers)
        self.in_chans, self.out_chans, self.stride = in_chans, out_chans, stride
