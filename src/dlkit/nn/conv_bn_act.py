"""Convolution -> batch normalisation -> activation, the unit most modern CNNs repeat (Notes: 002 §2, 003 §3.6).

The convolution has no bias when it is followed by batch normalisation: BN's shift beta replaces it
(a bias before BN is subtracted away with the batch mean), which is also how the published parameter
counts of ResNet, MobileNet and EfficientNet are obtained.
"""

from __future__ import annotations

from torch import nn

from .activations import get_activation


class ConvBNAct(nn.Sequential):
    """Conv2d(k, stride, groups, 'same'-style padding (k-1)//2 * dilation) + BatchNorm2d + activation.

    `activation=None` leaves the activation out (a linear projection, as in MobileNetV2's bottleneck
    output); `norm=False` keeps the convolution's bias and drops BN.
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int | tuple[int, int] = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1, activation: str | None = "relu", norm: bool = True,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        padding = ((kh - 1) // 2 * dilation, (kw - 1) // 2 * dilation)  # 'same' for odd kernels (1x7, 7x1 too)
        layers: list[nn.Module] = [nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, dilation=dilation,
                                             groups=groups, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(out_chans, eps=bn_eps, momentum=bn_momentum))
        if activation is not None:
            layers.append(get_activation(activation))
        super().__init__(*layers)
        self.in_chans, self.out_chans, self.stride = in_chans, out_chans, stride
