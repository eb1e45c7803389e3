"""Network in Network (Lin, Chen and Yan, 2013; Notes: 003 §3.3.3).

NiN replaces the linear convolution by an "mlpconv" layer: a small MLP (dense layers and ReLUs) slid over the image
with the same spatial footprint. It is a k x k convolution followed by 1x1 convolutions, each with ReLU, because a
1x1 convolution is a dense layer applied at every pixel. The network ends with global average pooling of one map
per class instead of dense layers.

`nin` is the paper's CIFAR-10 model (its released Caffe definition): three mlpconv layers,
5x5 192-160-96 -> maxpool 3x3/2 -> dropout 0.5 -> 5x5 192-192-192 -> avgpool 3x3/2 -> dropout 0.5 ->
3x3 192-192-10 -> global average pool (32 -> 16 -> 8 -> 1, pools with Caffe's ceil rounding). Parameters by hand,
k^2 d_in d_out + d_out per layer:
  block 1: 25*3*192+192 = 14,592;   192*160+160 = 30,880;  160*96+96 = 15,456
  block 2: 25*96*192+192 = 460,992; 192*192+192 = 37,056;  37,056
  block 3: 9*192*192+192 = 331,968; 37,056;               192*10+10 = 1,930
  total 966,986.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.activations import RELU_INPLACE, get_act_layer, inplace_
from ...nn.init import init_weights
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo, flatten, named_steps


class MlpConv(nn.Sequential):
    """mlpconv layer: k x k conv + ReLU, then 1x1 conv + ReLU for each further width. Notes: 003 §3.3.3.

    y = ReLU(W_n ... ReLU(W_2 ReLU(W_1 * x + b_1) + b_2) ...), W_1 a k x k kernel, the others 1x1 (dense per pixel).
    Padding (k-1)//2 keeps the spatial size of a plain 'same' convolution. `norm=True` inserts batch normalisation
    before each ReLU (not in the paper, which predates BN); `final_relu=False` leaves the last conv linear;
    `act_layer` replaces the ReLU (a name or class of `dlkit.nn.activations`).
    """

    def __init__(self, in_chans: int, widths: Sequence[int], kernel_size: int, final_relu: bool = True,
                 norm: bool = False, act_layer=RELU_INPLACE):
        if not widths or any(w < 1 for w in widths):
            raise ConfigError(f"MlpConv needs at least one positive width; got {list(widths)}")
        layers: list[nn.Module] = []
        make_act = get_act_layer(act_layer)
        chans = [in_chans, *widths]
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            k = kernel_size if i == 0 else 1
            activated = i < len(widths) - 1 or final_relu
            layers.append(nn.Conv2d(a, b, k, padding=(k - 1) // 2, bias=not (norm and activated)))
            if norm and activated:
                layers.append(nn.BatchNorm2d(b))
            if activated and make_act is not None:
                layers.append(inplace_(make_act()))
        super().__init__(*layers)
        self.in_chans, self.out_chans = in_chans, widths[-1]


class NiN(Backbone):
    """Network in Network: mlpconv -> maxpool -> dropout -> mlpconv -> avgpool -> dropout -> mlpconv -> GAP.

    Notes: 003 §3.3.3. `blocks` lists (kernel, widths) of the three mlpconv layers; the last width of the last
    block is `num_classes` (one feature map per class, averaged into the logits). The paper keeps a ReLU on those
    class maps (`final_relu=True`), so its logits are >= 0; `final_relu=False` drops it, which trains more reliably.
    `norm=True` adds batch normalisation inside the mlpconv layers (not in the paper; used by `nin_fashion`).

    Backbone contract: stages features.2 (after the max-pool and dropout, stride 2), features.5 (stride 4) and the
    third mlpconv up to its last convolution; that 1x1 convolution to the class maps is the classifier (with the
    paper's ReLU after it), and global average pooling of the class maps gives the logits (pre-logits: the
    pooled features it reads).
    """

    head_modules = ("gap",)

    def __init__(self, num_classes: int = 10, in_chans: int = 3,
                 blocks: Sequence[tuple[int, Sequence[int]]] = ((5, (192, 160, 96)), (5, (192, 192, 192)),
                                                                (3, (192, 192))),
                 dropout: float = 0.5, final_relu: bool = True, norm: bool = False, act_layer=RELU_INPLACE):
        super().__init__()
        if len(blocks) != 3:
            raise ConfigError(f"NiN has three mlpconv blocks; got {len(blocks)}")
        self.in_chans = in_chans
        self.default_input_shape = (in_chans, 32, 32)
        (k1, w1), (k2, w2), (k3, w3) = blocks
        opts = {"norm": norm, "act_layer": act_layer}
        self.features = nn.Sequential(
            MlpConv(in_chans, w1, k1, **opts), nn.MaxPool2d(3, 2, ceil_mode=True), nn.Dropout(dropout),
            MlpConv(w1[-1], w2, k2, **opts), nn.AvgPool2d(3, 2, ceil_mode=True), nn.Dropout(dropout),
            MlpConv(w2[-1], [*w3, num_classes], k3, final_relu=final_relu, **opts),
        )
        self.gap = nn.AdaptiveAvgPool2d(1)
        last = self.features[6]
        self.head_start = max(i for i, m in enumerate(last) if isinstance(m, nn.Conv2d))  # the class-map conv
        self.classifier_name = f"features.6.{self.head_start}"
        info = [FeatureInfo.entry("features.2", w1[-1], 2), FeatureInfo.entry("features.5", w2[-1], 4)]
        if self.head_start > 0:
            info.append(FeatureInfo.entry(f"features.6.{self.head_start - 1}", w3[-1], 4))
        self.feature_info = FeatureInfo(info)
        # He init: with torch's default (variance 1/(3 fan_in)) nine ReLU convs fade out
        init_weights(self, conv="he_fan_in")

    def check_input(self, x: torch.Tensor) -> None:
        """Images [N, in_chans, H, W], H, W >= 3."""
        if x.dim() != 4 or x.shape[1] != self.in_chans or min(x.shape[-2:]) < 3:
            raise ConfigError(f"NiN expects images [N, {self.in_chans}, H, W] (e.g. "
                              f"{list(self.default_input_shape)}); got {tuple(x.shape)}")

    def feature_path(self):
        return named_steps("features", self.features, 6) + named_steps("features.6", self.features[6], self.head_start)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Class maps (classifier conv, its BN and ReLU if any) averaged per map; pre_logits: the pooled features."""
        if not pre_logits:
            for step in list(self.features[6])[self.head_start:]:
                x = step(x)
        return flatten(self.gap(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A new 1x1 class-map convolution (a batch norm after it is rebuilt for the new width; 0: removed)."""
        super().reset_classifier(num_classes)
        tail, i = self.features[6], self.head_start + 1
        if i < len(tail) and isinstance(tail[i], nn.BatchNorm2d | nn.Identity):  # norm=True with the final ReLU
            like = next(self.parameters())
            tail[i] = (nn.BatchNorm2d(num_classes, device=like.device, dtype=like.dtype) if num_classes
                       else nn.Identity())


@register_model(input_size=(3, 32, 32), num_params=966_986, params_source="by hand: Lin et al. 2013 CIFAR-10 layers")
def nin(**kw) -> NiN:
    """NiN for CIFAR-10 (32x32x3, 10 classes), the paper's model: 966,986 parameters. Notes: 003 §3.3.3."""
    return NiN(**kw)


@register_model(input_size=(1, 28, 28))
def nin_fashion(**kw) -> NiN:
    """A CPU-sized NiN for 28x28 grey images, 10 classes: 5x5 32-24-24 | 3x3 48-48-48 | 3x3 64-10, with batch
    normalisation (without it this stack of nine convolutions learns far more slowly) and no ReLU on the class maps.
    45,994 parameters; about 0.38 GFLOPs per 32 images. Notes: 003 §3.3.3."""
    kw = {"num_classes": 10, "in_chans": 1, "blocks": ((5, (32, 24, 24)), (3, (48, 48, 48)), (3, (64,))),
          "final_relu": False, "norm": True, **kw}
    model = NiN(**kw)
    model.default_input_shape = (kw["in_chans"], 28, 28)
    return model
