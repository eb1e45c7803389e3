"""Grouped convolution and the ResNeXt block in its three equivalent forms (Notes: 002 §2.3; Xie et al. 2017 Fig. 3).

A ResNeXt block splits a bottleneck into G branches (the cardinality), each 1x1 (C_in -> d) -> 3x3 (d -> d) ->
1x1 (d -> C_out), and sums them with the skip: y = x + sum_b T_b(x). The notes show three forms compute the same:

- "split" (a): G separate branches, outputs summed;
- "concat" (b): the last 1x1 of every branch merged into one 1x1 on the concatenated activations, because
  y_k = sum_b w_k^(b) . a^(b) = [w_k^(1) ... w_k^(G)] . [a^(1) ... a^(G)];
- "grouped" (c): the first 1x1s merged into one 1x1 with G*d outputs as well, so the 3x3 is a grouped
  convolution with G groups; this is `dlkit.nn.residual.Bottleneck(groups=G, base_width=d)`.

BN is per channel, so G BNs of d channels are one BN of G*d channels; the BN after the last 1x1 comes after
the sum (as it must for the forms to agree). `ResNeXtBlock.to_form` moves the weights between forms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .activations import get_act_layer, inplace_
from .conv_bn_act import ConvBNAct
from .residual import add_skip, make_shortcut

FORMS = ("split", "concat", "grouped")
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def grouped_conv2d(x: torch.Tensor, weight: torch.Tensor, groups: int, stride: int = 1,
                   padding: int = 0) -> torch.Tensor:
    """Grouped convolution written as G separate convolutions on channel chunks, stacked. Notes: 002 §2.3.

    x [N, C_in, H, W], weight [C_out, C_in/G, k, k]: output chunk g = conv(x chunk g, weight chunk g); the
    parameter count C_out * (C_in / G) * k^2 is 1/G of the full convolution's.
    """
    c_in, c_out = x.shape[1], weight.shape[0]
    if c_in % groups or c_out % groups or weight.shape[1] * groups != c_in:
        raise ConfigError(f"grouped_conv2d needs C_in={c_in} and C_out={c_out} divisible by groups={groups} and a "
                          f"weight [C_out, C_in/G, k, k]; got weight {tuple(weight.shape)}")
    xs, ws = x.chunk(groups, dim=1), weight.chunk(groups, dim=0)
    return torch.cat([F.conv2d(xg, wg, stride=stride, padding=padding) for xg, wg in zip(xs, ws)], dim=1)


def resnext_branch_width(in_chans: int, bottleneck_width: int, cardinality: int) -> float:
    """Branch width d giving a ResNeXt block the parameters (and FLOPs) of a bottleneck. Notes: 002 §2.3 remark.

    Solves G (C d + 9 d^2 + d C) = C b + 9 b^2 + b C for d > 0 (C the block's in/out width, b the bottleneck
    width): 9 G d^2 + 2 G C d - (2 C b + 9 b^2) = 0. For C=256, b=64, G=32, d = 3.97 (the paper's 32x4d).
    """
    a, b_, c = 9 * cardinality, 2 * cardinality * in_chans, -(2 * in_chans * bottleneck_width + 9 * bottleneck_width**2)
    return (-b_ + math.sqrt(b_ * b_ - 4 * a * c)) / (2 * a)


class ResNeXtBlock(nn.Module):
    """ResNeXt block y = relu(BN(sum_b W3_b T_b(x)) + shortcut(x)) in form 'split', 'concat' or 'grouped'.

    Notes: 002 §2.3. T_b = relu(BN(W2_b relu(BN(W1_b x)))) is the b-th branch's first two layers (C_in -> d -> d,
    the 3x3 with `stride`). All three forms have the same parameters and compute the same function. The forms are
    equal because batch norm is per channel, so the norm is fixed to BN here; `act_layer` is a name or a class
    (`ResNet(block='bottleneck', groups=G, norm_layer=...)` is the ResNeXt with another norm).
    """

    def __init__(self, in_chans: int, out_chans: int, cardinality: int, width: int, stride: int = 1,
                 form: str = "grouped", act_layer="relu"):
        super().__init__()
        if form not in FORMS:
            raise ConfigError(f"ResNeXtBlock form must be one of {FORMS}; got {form!r}")
        if cardinality < 1 or width < 1:
            raise ConfigError(f"cardinality and width must be >= 1; got {cardinality}, {width}")
        self.in_chans, self.out_chans, self.cardinality, self.width = in_chans, out_chans, cardinality, width
        self.stride, self.form, self.act_layer = stride, form, act_layer
        g, d = cardinality, width
        if form == "grouped":
            self.conv1 = ConvBNAct(in_chans, g * d, 1, act_layer=act_layer)
            self.conv2 = ConvBNAct(g * d, g * d, 3, stride, groups=g, act_layer=act_layer)
        else:
            self.branches = nn.ModuleList(
                nn.Sequential(ConvBNAct(in_chans, d, 1, act_layer=act_layer),
                              ConvBNAct(d, d, 3, stride, act_layer=act_layer),
                              *([nn.Conv2d(d, out_chans, 1, bias=False)] if form == "split" else []))
                for _ in range(g))
        if form != "split":
            self.conv3 = nn.Conv2d(g * d, out_chans, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chans)
        self.shortcut = make_shortcut(in_chans, out_chans, stride, "B")
        self.act = inplace_(get_act_layer(act_layer)())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "split":
            out = sum(branch(x) for branch in self.branches)
        elif self.form == "concat":
            out = self.conv3(torch.cat([branch(x) for branch in self.branches], dim=1))
        else:
            out = self.conv3(self.conv2(self.conv1(x)))
        return add_skip(self.act, self.bn3(out), self.shortcut(x))

    # ------------------------------------------------------------------ moving weights between the forms

    def _grouped_state(self) -> dict[str, torch.Tensor]:
        """The weights in grouped-form layout (concatenating the branches' tensors)."""
        if self.form == "grouped":
            c1, c2, w3 = self.conv1, self.conv2, self.conv3.weight
            st = {"w1": c1[0].weight, "w2": c2[0].weight, "w3": w3}
            st |= {f"bn1.{k}": getattr(c1[1], k) for k in _BN_KEYS} | {f"bn2.{k}": getattr(c2[1], k) for k in _BN_KEYS}
        else:
            br = self.branches
            st = {"w1": torch.cat([b[0][0].weight for b in br]), "w2": torch.cat([b[1][0].weight for b in br])}
            for i in (1, 2):
                st |= {f"bn{i}.{k}": torch.cat([getattr(b[i - 1][1], k) for b in br]) for k in _BN_KEYS}
            st["w3"] = torch.cat([b[2].weight for b in br], dim=1) if self.form == "split" else self.conv3.weight
        st |= {f"bn3.{k}": v for k, v in self.bn3.state_dict().items()}
        st |= {f"shortcut.{k}": v for k, v in self.shortcut.state_dict().items()}
        return st

    @torch.no_grad()
    def _load_grouped_state(self, st: dict[str, torch.Tensor]) -> None:
        self.bn3.load_state_dict({k[4:]: v for k, v in st.items() if k.startswith("bn3.")})
        self.shortcut.load_state_dict({k[9:]: v for k, v in st.items() if k.startswith("shortcut.")})
        if self.form == "grouped":
            self.conv1[0].weight.copy_(st["w1"])
            self.conv2[0].weight.copy_(st["w2"])
            self.conv3.weight.copy_(st["w3"])
            for i, c in ((1, self.conv1), (2, self.conv2)):
                for k in _BN_KEYS:
                    getattr(c[1], k).copy_(st[f"bn{i}.{k}"])
            return
        g = self.cardinality
        w1, w2, w3 = st["w1"].chunk(g), st["w2"].chunk(g), st["w3"].chunk(g, dim=1)
        bns = {key: st[key].chunk(g) for key in st if key.startswith(("bn1.", "bn2."))}
        for j, b in enumerate(self.branches):
            b[0][0].weight.copy_(w1[j])
            b[1][0].weight.copy_(w2[j])
            for i in (1, 2):
                for k in _BN_KEYS:
                    getattr(b[i - 1][1], k).copy_(bns[f"bn{i}.{k}"][j])
            if self.form == "split":
                b[2].weight.copy_(w3[j])
        if self.form == "concat":
            self.conv3.weight.copy_(st["w3"])

    def to_form(self, form: str) -> ResNeXtBlock:
        """An equivalent block in another form, holding this block's weights (and BN statistics)."""
        other = ResNeXtBlock(self.in_chans, self.out_chans, self.cardinality, self.width, self.stride, form,
                             self.act_layer)
        p = next(self.parameters())
        other = other.to(device=p.device, dtype=p.dtype)
        other._load_grouped_state(self._grouped_state())
        return other.train(self.training)
