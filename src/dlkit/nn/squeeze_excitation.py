"""Squeeze-and-excitation unit (Hu et al., 2018; Notes: 002 §2.4).

Squeeze: global average pooling gives one number per channel, z_c = mean_{h,w} u_c(h, w).
Excitation: s = gate(W2 act(W1 z)) with W1: C -> C/r and W2: C/r -> C (r the reduction ratio, 16 in
the paper). The block's output rescales each channel, u_c * s_c. The two dense layers are written as
1x1 convolutions (the same parameters: C*C/r + C/r and C/r*C + C), which keeps the layout NCHW.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .activations import get_act_layer


class SqueezeExcitation(nn.Module):
    """Channel attention u * gate(W2 act(W1 avgpool(u))), with `reduced_chans` hidden units.

    ResNets use reduced = C / 16 of the block's own width; MobileNetV3/EfficientNet compute it from the
    block's input width (pass it explicitly). `act_layer` and `gate` are activation names or module classes
    (`get_act_layer`); the gate is sigmoid (SE-Net) or hard_sigmoid (MobileNetV3).
    """

    def __init__(self, chans: int, reduced_chans: int, act_layer="relu", gate="sigmoid"):
        super().__init__()
        self.fc1 = nn.Conv2d(chans, reduced_chans, 1)
        self.act = _required(act_layer, "act_layer")()
        self.fc2 = nn.Conv2d(reduced_chans, chans, 1)
        self.gate = _required(gate, "gate")()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


def _required(spec, what: str):
    make = get_act_layer(spec)
    if make is None:
        raise ConfigError(f"SqueezeExcitation {what} cannot be None: the unit needs a non-linearity; got {spec!r}")
    return make
