"""Squeeze-and-excitation unit (Hu et al., 2018; Notes: 002 §2.4).

Squeeze: global average pooling gives one number per channel, z_c = mean_{h,w} u_c(h, w).
Excitation: s = gate(W2 act(W1 z)) with W1: C -> C/r and W2: C/r -> C (r the reduction ratio, 16 in
the paper). The block's output rescales each channel, u_c * s_c. The two dense layers are written as
1x1 convolutions (the same parameters: C*C/r + C/r and C/r*C + C), which keeps the layout NCHW.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import get_activation


class SqueezeExcitation(nn.Module):
    """Channel attention u * gate(W2 act(W1 avgpool(u))), with `reduced_chans` hidden units.

    ResNets use reduced = C / 16 of the block's own width; MobileNetV3/EfficientNet compute it from the
    block's input width (pass it explicitly). `gate` is sigmoid (SE-Net) or hard_sigmoid (MobileNetV3).
    """

    def __init__(self, chans: int, reduced_chans: int, activation: str = "relu", gate: str = "sigmoid"):
        super().__init__()
        self.fc1 = nn.Conv2d(chans, reduced_chans, 1)
        self.act = get_activation(activation)
        self.fc2 = nn.Conv2d(reduced_chans, chans, 1)
        self.gate = get_activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))
