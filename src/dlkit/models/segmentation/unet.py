"""U-Net (Ronneberger, Fischer and Brox, 2015; Notes: 000 §3.11.2, 002 §5.1.4, 003 §4.1.3).

A segmentation network with no pretrained backbone. The contracting path (two 3x3 convolutions + ReLU, then a 2x2
max-pool, the channels doubling at every level) finds *what* the image contains; the expansive path (a 2x2 up-
convolution halving the channels, concatenation with the encoder map of the same level, two 3x3 convolutions)
finds *where* it is; a 1x1 convolution scores the classes per pixel.

- `padding=False` is the original: "valid" 3x3 convolutions shrink every map by 2 pixels, so each skip is
  centre-cropped to the decoder's size before the concatenation and the output is smaller than the input
  (572 x 572 -> 388 x 388): only the centre of the tile is segmented (the paper's overlap-tile strategy).
- `padding=True` is the common alternative: "same" convolutions, no cropping, output H x W = input H x W (H and W
  divisible by 2^depth).
- `encoder="resnet18"` (any registered classifier) replaces the contracting path by that network's stages, read
  through the backbone contract (a `FeatureExtractor` of its `feature_info` stages): its last map at every stride is a
  level, the deepest is the bottom, and the padded expansive path climbs back to the shallowest level; the scores
  are then upsampled bilinearly to the input size (a ResNet's shallowest map has stride 2). A pretrained encoder
  is the notes' transfer learning for segmentation (003 §4.1.3); `encoder_kwargs` go to its factory.

Parameter count of `unet` (1 input channel, 2 classes, widths 64-128-256-512-1024, no batch norm), with a 3x3
convolution cin -> cout having 9 cin cout + cout parameters, the 2x2 up-convolution 4 cin cout + cout, the 1x1
scorer cin cout + cout:

    encoder     1->64: 640 + 36,928            64->128: 73,856 + 147,584       128->256: 295,168 + 590,080
                256->512: 1,180,160 + 2,359,808                              = 4,684,224
    bottom      512->1024: 4,719,616 + 9,438,208                             = 14,157,824
    up-convs    1024->512: 2,097,664   512->256: 524,544   256->128: 131,200   128->64: 32,832  = 2,786,240
    decoder     1024->512: 4,719,104 + 2,359,808   512->256: 1,179,904 + 590,080
                256->128: 295,040 + 147,584        128->64: 73,792 + 36,928  = 9,402,240
    scorer      64->2: 130
    total       31,030,658 (the "about 31.0M" usually quoted)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.activations import RELU_INPLACE, get_act_layer
from ...nn.init import init_weights
from ...nn.norm import get_norm_layer
from ...registry import create_model, register_model
from ..backbone import FeatureExtractor

UPSAMPLE_MODES = ("transposed", "bilinear")


def center_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The centred size = (h, w) window of a map [..., H, W]: offsets (H - h) // 2 and (W - w) // 2. Notes: 000 §3.11.2.

    U-Net crops each encoder map this way before concatenating it to the (smaller) decoder map of its level.
    """
    h, w = size
    H, W = x.shape[-2:]
    if h > H or w > W:
        raise ConfigError(f"center_crop needs a window no larger than the map: map {H}x{W}, window {h}x{w}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top:top + h, left:left + w]




class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions (+ norm) + ReLU, U-Net's unit at every level; `padding=False` shrinks H, W by 4.

    `norm_layer` (None: none, the paper; a name or class, `dlkit.nn.norm`) follows each convolution, which then has
    no bias; `act_layer` replaces ReLU.
    """

    def __init__(self, in_chans: int, out_chans: int, padding: bool, norm_layer=None, act_layer=RELU_INPLACE):
        make_norm, make_act = get_norm_layer(norm_layer), get_act_layer(act_layer)
        layers: list[nn.Module] = []
        for cin in (in_chans, out_chans):
            layers.append(nn.Conv2d(cin, out_chans, 3, padding=int(padding), bias=make_norm is None))
            if make_norm is not None:
                layers.append(make_norm(out_chans))
            if make_act is not None:
                layers.append(make_act())
        super().__init__(*layers)


class UpConv(nn.Sequential):
    """Double H, W and halve the channels: a 2x2 stride-2 transposed convolution (the paper's up-convolution), or
    bilinear interpolation followed by a 1x1 convolution (`mode='bilinear'`, no checkerboard artefacts)."""

    def __init__(self, in_chans: int, out_chans: int, mode: str):
        if mode == "transposed":
            super().__init__(nn.ConvTranspose2d(in_chans, out_chans, 2, stride=2))
        else:
            super().__init__(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                             nn.Conv2d(in_chans, out_chans, 1))


class UNet(nn.Module):
    """U-Net: contracting path, bottom, expansive path with concatenated (cropped) skips, 1x1 scorer (000 §3.11.2).

    Level l (0..depth-1) has width base_width 2^l, the bottom base_width 2^depth. `padding=False` is the original
    valid-convolution network (572 -> 388, centre-cropped skips); `padding=True` keeps H x W. `upsample` is
    'transposed' (2x2 up-convolution) or 'bilinear' (+ 1x1 convolution). `batch_norm` adds BN after every 3x3
    convolution (and drops its bias); `norm_layer` (a name or class) uses another normalisation there, `act_layer`
    another activation than ReLU. Returns class scores [N, num_classes, H_out, W_out]; see `output_size`.
    With `encoder` (a registered classifier's name) its stages are the contracting path and bottom (`depth` and
    `base_width` do not apply; the convolutions are padded).
    """

    def __init__(self, in_chans: int = 1, num_classes: int = 2, base_width: int = 64, depth: int = 4,
                 padding: bool = False, upsample: str = "transposed", batch_norm: bool = False,
                 encoder: str | None = None, encoder_kwargs: dict | None = None, norm_layer=None,
                 act_layer=RELU_INPLACE):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ConfigError(f"UNet upsample must be one of {UPSAMPLE_MODES}; got {upsample!r}")
        if depth < 1 or base_width < 1 or in_chans < 1 or num_classes < 1:
            raise ConfigError(f"UNet needs depth, base_width, in_chans, num_classes >= 1; got depth={depth}, "
                              f"base_width={base_width}, in_chans={in_chans}, num_classes={num_classes}")
        self.in_chans, self.num_classes, self.depth, self.padding = in_chans, num_classes, depth, padding
        self.encoder = None
        layer = dict(norm_layer=norm_layer if norm_layer is not None else ("batch" if batch_norm else None),
                     act_layer=act_layer)
        if encoder is not None:
            self._build_on_encoder(encoder, dict(encoder_kwargs or {}), upsample, layer)
            return
        self.widths = [base_width * 2 ** level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        chans = in_chans
        for width in self.widths[:-1]:
            self.down.append(DoubleConv(chans, width, padding, **layer))
            chans = width
        self.pool = nn.MaxPool2d(2, 2)
        self.bottom = DoubleConv(chans, self.widths[-1], padding, **layer)
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for width in reversed(self.widths[:-1]):
            self.up.append(UpConv(2 * width, width, upsample))
            self.decode.append(DoubleConv(2 * width, width, padding, **layer))  # skip (width) + upsampled (width)
        self.head = nn.Conv2d(self.widths[0], num_classes, 1)
        size = 572 if not padding else 2 ** depth * 16
        self.default_input_shape = (in_chans, *[self.nearest_valid_size(size)] * 2)
        # He init (fan_in), as the paper: std sqrt(2 / (9 cin))
        init_weights(self, conv="he_fan_in", conv_types=(nn.Conv2d, nn.ConvTranspose2d))

    def _build_on_encoder(self, name: str, kwargs: dict, upsample: str, layer: dict) -> None:
        """Levels from a classifier's stages (the last at every stride), each twice the previous stride."""
        probe = create_model(name, in_chans=self.in_chans, **kwargs)
        info = getattr(probe, "feature_info", None)
        if info is None:
            raise ConfigError(f"a U-Net encoder is a classification backbone (feature_info); '{name}' is a "
                              f"{type(probe).__name__}")
        strides = sorted(set(info.reductions()))
        if any(b != 2 * a for a, b in zip(strides[:-1], strides[1:])) or len(strides) < 2:
            raise ConfigError(f"a U-Net encoder needs stages whose strides double from level to level; "
                              f"{name} has stages at strides {info.reductions()}")
        self.encoder = FeatureExtractor(probe, info.last_at(strides), name=name)
        chans = self.encoder.feature_info.channels()
        self.padding, self.depth, self.widths = True, len(chans) - 1, chans
        self.stride_in, self.stride_out = strides[0], strides[-1]
        self.up, self.decode = nn.ModuleList(), nn.ModuleList()
        deep = chans[-1]
        for width in reversed(chans[:-1]):
            self.up.append(UpConv(deep, width, upsample))
            self.decode.append(DoubleConv(2 * width, width, True, **layer))
            deep = width
        self.head = nn.Conv2d(chans[0], self.num_classes, 1)
        side = getattr(probe, "default_input_shape", (self.in_chans, 224, 224))[-1]
        self.default_input_shape = (self.in_chans, *[self.nearest_valid_size(side)] * 2)
        # the encoder keeps its own weights
        init_weights([self.up, self.decode, self.head], conv="he_fan_in", conv_types=(nn.Conv2d, nn.ConvTranspose2d))

    def output_size(self, size: int) -> int | None:
        """The output side for an input side `size`, or None when it is not valid for this network.

        Padded: the size itself if divisible by 2^depth. Unpadded: each level takes 4 pixels off (two valid 3x3
        convolutions), each pool halves an even size, each up-convolution doubles (572 -> 388 at depth 4).
        """
        if self.encoder is not None:
            return size if size > 0 and size % self.stride_out == 0 else None
        if self.padding:
            return size if size > 0 and size % 2 ** self.depth == 0 else None
        for _ in range(self.depth):
            size -= 4
            if size <= 0 or size % 2:
                return None
            size //= 2
        size -= 4  # the bottom
        for _ in range(self.depth):
            size = 2 * size - 4
            if size <= 0:
                return None
        return size

    def nearest_valid_size(self, size: int) -> int:
        """The valid input side closest to `size` (the smaller one on a tie)."""
        for delta in range(4 * 2 ** self.depth * 4):
            for s in (size - delta, size + delta):
                if s > 0 and self.output_size(s) is not None:
                    return s
        raise ConfigError(f"no valid UNet input size near {size}")  # unreachable for size > 0

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(f"UNet expects images [N, {self.in_chans}, H, W]; got {tuple(x.shape)}")
        for side in x.shape[-2:]:
            if self.output_size(side) is None:
                rule = (f"divisible by the encoder's stride {self.stride_out}" if self.encoder is not None else
                        f"divisible by 2^depth = {2 ** self.depth}" if self.padding else
                        "such that every max-pool gets an even map after the valid convolutions")
                raise ConfigError(f"UNet(depth={self.depth}, padding={self.padding}) needs H and W {rule}; got "
                                  f"{tuple(x.shape[-2:])}. Nearest valid side to {side}: "
                                  f"{self.nearest_valid_size(side)} (resize, pad or crop the input)")
        if self.encoder is not None:
            return self._forward_encoder(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, decode, skip in zip(self.up, self.decode, reversed(skips)):
            x = up(x)
            x = decode(torch.cat([center_crop(skip, x.shape[-2:]), x], dim=1))
        return self.head(x)


    def _forward_encoder(self, x: Tensor) -> Tensor:
        *skips, h = self.encoder(x)
        for up, decode, skip in zip(self.up, self.decode, reversed(skips)):
            h = decode(torch.cat([skip, up(h)], dim=1))
        scores = self.head(h)
        if self.stride_in > 1:
            scores = F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return scores


@register_model(input_size=(1, 572, 572), num_params=31_030_658,
                params_source="by hand: Ronneberger et al. 2015 Fig. 1")
def unet(**kw) -> UNet:
    """The original U-Net: 1 input channel, 2 classes, 64-1024, valid convolutions, 572 -> 388; 31,030,658 params.

    Notes: 000 §3.11.2.
    """
    return UNet(**kw)


@register_model(input_size=(3, 64, 64))
def unet_tiny(**kw) -> UNet:
    """A CPU-sized U-Net: RGB input, 2 classes, widths 16-32-64-128, depth 3, padded (H x W kept), batch norm.

    Notes: 000 §3.11.2.
    """
    model = UNet(**{"in_chans": 3, "num_classes": 2, "base_width": 16, "depth": 3, "padding": True,
                    "batch_norm": True, **kw})
    model.default_input_shape = (model.in_chans, 64, 64)
    return model
