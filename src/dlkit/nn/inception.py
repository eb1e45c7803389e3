"""Inception module and auxiliary classifier of Inception-v1 / GoogLeNet (Szegedy et al., 2014; Notes: 002 §2.1,
003 §3.3.3).

An Inception module runs four branches on the same input and concatenates their outputs on the channel axis:
(1) a 1x1 convolution; (2) a 1x1 "reduce" convolution then a 3x3 (padding 1); (3) a 1x1 reduce then a 5x5
(padding 2); (4) a 3x3 max-pool (stride 1, padding 1) then a 1x1 "pool projection". Every branch keeps H and W,
so the output has c1 + c3 + c5 + pool_proj channels. The 1x1 reduces are the bottlenecks that keep the cost low:
a direct 5x5 from C_in to c5 costs 25 C_in c5 weights, the bottlenecked one C_in r5 + 25 r5 c5.

The notes list branch (4) as "1x1 convolution and 3x3 max-pooling"; GoogLeNet pools first, then projects (as here).
The notes garble the filter sizes ("3x33x3 and 5x55x5", 003 §3.3.3): they are 3x3 and 5x5.
torchvision's `googlenet` uses a 3x3 kernel in the "5x5" branch (a known quirk kept for its pretrained weights);
`c5_kernel=3` reproduces it, the default 5 is the paper and the notes.

Auxiliary classifiers (002 §2.1) are small heads on intermediate features, used only in training, whose losses are
added with weight 0.3; they regularise and push hidden features to be discriminative, and are dropped at inference.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .conv_bn_act import ConvBNAct


def _unit(in_chans: int, out_chans: int, kernel_size: int, norm_layer, bn_eps: float, act_layer) -> ConvBNAct:
    return ConvBNAct(in_chans, out_chans, kernel_size, norm_layer=norm_layer, bn_eps=bn_eps, act_layer=act_layer)


def _norm_layer(norm: bool, norm_layer):
    """The norm of an Inception unit: `norm_layer` if given, else batch norm when `norm` (torchvision), else none."""
    return norm_layer if norm_layer is not None else ("batch" if norm else None)


class InceptionModule(nn.Module):
    """Inception module: concat[1x1, 1x1->3x3, 1x1->5x5, maxpool3x3->1x1] on channels. Notes: 002 §2.1.

    Output channels c1 + c3 + c5 + pool_proj, spatial size unchanged. Each convolution is followed by ReLU, with
    batch normalisation in between when `norm` (torchvision; the conv then has no bias) and a bias when not (paper).
    Parameters (norm=False): C(c1 + r3 + r5 + p) + 9 r3 c3 + k^2 r5 c5 + biases, k = `c5_kernel`. `norm_layer`
    (a name or class, `dlkit.nn.norm`) replaces batch norm; `act_layer` replaces ReLU.
    """

    def __init__(self, in_chans: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int, pool_proj: int,
                 norm: bool = True, bn_eps: float = 1e-3, c5_kernel: int = 5, norm_layer=None, act_layer="relu"):
        super().__init__()
        widths = dict(in_chans=in_chans, c1=c1, c3_reduce=c3_reduce, c3=c3, c5_reduce=c5_reduce, c5=c5,
                      pool_proj=pool_proj)
        if any(w < 1 for w in widths.values()):
            raise ConfigError(f"InceptionModule widths must be positive; got {widths}")
        if c5_kernel not in (3, 5):
            raise ConfigError(f"InceptionModule c5_kernel must be 5 (paper) or 3 (torchvision); got {c5_kernel}")
        layer = (_norm_layer(norm, norm_layer), bn_eps, act_layer)
        self.branch1 = _unit(in_chans, c1, 1, *layer)
        self.branch3 = nn.Sequential(_unit(in_chans, c3_reduce, 1, *layer), _unit(c3_reduce, c3, 3, *layer))
        self.branch5 = nn.Sequential(_unit(in_chans, c5_reduce, 1, *layer), _unit(c5_reduce, c5, c5_kernel, *layer))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                         _unit(in_chans, pool_proj, 1, *layer))
        self.in_chans, self.out_chans = in_chans, c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(f"InceptionModule expects [N, {self.in_chans}, H, W]; got {tuple(x.shape)}")
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1)


class InceptionAux(nn.Module):
    """GoogLeNet auxiliary classifier: avgpool to 4x4 -> 1x1 conv 128 -> FC 1024 -> ReLU -> dropout -> FC.

    Notes: 002 §2.1. The paper pools 5x5 with stride 3 (14x14 -> 4x4); an adaptive 4x4 average pool is the same at
    14x14 and also works on other input sizes. Dropout 0.7 as in the paper and torchvision. `norm_layer` replaces
    the convolution's batch norm (the dense layers keep ReLU).
    """

    def __init__(self, in_chans: int, num_classes: int, norm: bool = True, bn_eps: float = 1e-3,
                 dropout: float = 0.7, conv_chans: int = 128, hidden: int = 1024, pool_size: int = 4,
                 norm_layer=None, act_layer="relu"):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.conv = _unit(in_chans, conv_chans, 1, _norm_layer(norm, norm_layer), bn_eps, act_layer)
        self.fc1 = nn.Linear(conv_chans * pool_size * pool_size, hidden)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(self.act(self.fc1(x))))
