"""Vision Transformer (Dosovitskiy et al., 2021; Notes: 002 §3.2, 004 VISUAL TRANSFORMERS).

An image C x H x W is cut into P x P patches; each patch is flattened to a P^2 C vector and projected by
W_E in R^{P^2 C x D} (a convolution with kernel = stride = P computes exactly this). A learned [CLS] token is
put at position 0, learned position embeddings are added, a pre-norm Transformer encoder (GELU MLP) mixes
the tokens, and a final LayerNorm and a linear head classify the [CLS] output. ViT-<size>/<patch>:

    ViT-B/16  12 layers, 12 heads,  768 wide, MLP 3072:  86,567,656 parameters (torchvision, 1000 classes)
    ViT-L/16  24 layers, 16 heads, 1024 wide, MLP 4096: 304,326,632 (the notes' 307M is not ViT-L/16's count)
    ViT-H/14  32 layers, 16 heads, 1280 wide, MLP 5120: 632,045,800

With 224 x 224 inputs ViT-B/16 sees 196 patches (+ [CLS] = 197 tokens). `position_embedding_similarity` and
`mean_attention_distance` reproduce the notes' analyses (Figs 3.9 and 3.10).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.init import init_weights
from ...nn.positional import LearnedPositionalEmbedding
from ...nn.transformer import TransformerEncoder
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """Split images [B, C, H, W] into flattened patches [B, N, C P P], row-major over the patch grid. Notes: 002 §3.2.

    Each patch vector is ordered channel, row, column (C x P x P), the order of a Conv2d weight.
    """
    B, C, H, W = x.shape
    p = patch_size
    x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # [B, H/p, W/p, C, p, p]
    return x.reshape(B, (H // p) * (W // p), C * p * p)


class PatchEmbedding(nn.Module):
    """Patch embedding: flatten each P x P patch and project it, x_p W_E + b, as Conv2d(kernel = stride = P).

    Notes: 002 §3.2 steps 1-2. Output [B, N, D] with N = (H / P)(W / P), in the order of `patchify`.
    """

    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(Backbone):
    """ViT: logits = head(LN(encoder([x_cls; x_p W_E] + E_pos))[:, 0]) with a pre-norm encoder. Notes: 002 §3.2.

    Backbone contract: `forward_features` is the token sequence after the final LayerNorm [B, 1 + N, D];
    `forward_head` takes the [CLS] token (pre-logits) and applies the classifier `head`. The stages are the encoder
    layers: each layer's patch tokens as a map [B, D, H/P, W/P] (stride P, without the final norm).
    """

    classifier_name = "head"
    head_modules = ("head",)

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_dim: int | None = None,
                 dropout: float = 0.0, attn_dropout: float = 0.0, layer_norm_eps: float = 1e-6):
        super().__init__()
        if img_size % patch_size:
            raise ConfigError(f"img_size must be a multiple of patch_size; got {img_size} and {patch_size}")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.grid = img_size // patch_size
        self.default_input_shape = (in_chans, img_size, img_size)
        self.patch_embed = PatchEmbedding(patch_size, in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = LearnedPositionalEmbedding(self.grid**2 + 1, dim)
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(depth, dim, num_heads, final_norm=True, d_ff=mlp_dim or 4 * dim,
                                          dropout=dropout, attn_dropout=attn_dropout, activation="gelu",
                                          norm_first=True, layer_norm_eps=layer_norm_eps)
        self.head = nn.Linear(dim, num_classes)
        self.feature_info = FeatureInfo(FeatureInfo.entry(f"encoder.layers.{i}", dim, patch_size) for i in range(depth))
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Truncated-normal (0.02) Linear weights and positions, zero biases; patch conv N(0, 1/fan_in) truncated."""
        init_weights(self, conv=None, conv_bias=False, linear="trunc_normal_0.02", norm=False)
        nn.init.trunc_normal_(self.pos_embed.weight, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w, std=math.sqrt(1.0 / (w.shape[1] * w.shape[2] * w.shape[3])))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=1e-6)

    def check_input(self, x: Tensor) -> None:
        """Images [N, in_chans, img_size, img_size]."""
        if x.dim() != 4 or x.shape[1:] != (self.in_chans, self.img_size, self.img_size):
            raise ConfigError(f"VisionTransformer expects images [N, {self.in_chans}, {self.img_size}, "
                              f"{self.img_size}]; got {tuple(x.shape)}")

    def tokens(self, x: Tensor) -> Tensor:
        """The encoder's input [B, 1 + N, D]: [CLS] then the patch embeddings, plus positions (dropout applied)."""
        self.check_input(x)
        p = self.patch_embed(x)
        return self.drop(self.pos_embed(torch.cat([self.cls_token.expand(p.shape[0], -1, -1), p], 1)))

    def forward_features(self, x: Tensor) -> Tensor:
        """The encoder's output after the final LayerNorm, [B, 1 + N, D] (token 0 is [CLS])."""
        return self.encoder(self.tokens(x))

    def stage_maps(self, x: Tensor):
        """Each encoder layer's patch tokens as a map [B, D, H/P, W/P] (the [CLS] token left out)."""
        h = self.tokens(x)
        for layer in self.encoder.layers:
            h = layer(h)
            yield h[:, 1:].transpose(1, 2).reshape(h.shape[0], h.shape[2], self.grid, self.grid)

    def head_path(self):
        return [_cls_token]

    def features(self, x: Tensor) -> Tensor:
        """The normalised [CLS] output [B, D], the image representation (`forward_head(..., pre_logits=True)`)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    @torch.no_grad()
    def attention_maps(self, x: Tensor) -> list[Tensor]:
        """Per-layer attention weights [B, heads, 1 + N, 1 + N] (token 0 is [CLS]), for the notes' Fig. 3.10."""
        h, maps = self.tokens(x), []
        for layer in self.encoder.layers:
            maps.append(layer.self_attn(layer.norm1(h), need_weights=True, average_attn_weights=False)[1])
            h = layer(h)
        return maps


def _cls_token(tokens: Tensor) -> Tensor:
    return tokens[:, 0]


def position_embedding_similarity(pos_embed: Tensor) -> Tensor:
    """Cosine similarity [N, N] between the position embeddings of the patches (no [CLS]). Notes: 002 §3.2 Fig. 3.9."""
    e = F.normalize(pos_embed, dim=-1)
    return e @ e.T


def mean_attention_distance(attn: Tensor, grid: int, patch_size: int = 1) -> Tensor:
    """Attention-weighted mean distance (pixels) from each query patch to the patches it attends. Notes: 002 §3.2.

    attn [..., N, N] over the N = grid^2 patch tokens (drop [CLS] first); returns [...] (mean over queries) of
    sum_j a_ij ||pos_i - pos_j|| * patch_size (Fig. 3.10: "mean attention distance").
    """
    if attn.shape[-1] != grid * grid or attn.shape[-2] != grid * grid:
        raise ConfigError(f"attn must be [..., {grid * grid}, {grid * grid}] for a {grid}x{grid} grid (drop [CLS]); "
                          f"got {tuple(attn.shape)}")
    yx = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"), -1).reshape(-1, 2)
    dist = torch.cdist(yx.to(attn.dtype), yx.to(attn.dtype)).to(attn.device) * patch_size
    return (attn * dist).sum(-1).mean(-1)


def _vit(img_size: int, patch: int, dim: int, depth: int, heads: int, kw: dict) -> VisionTransformer:
    return VisionTransformer(**{"img_size": img_size, "patch_size": patch, "dim": dim, "depth": depth,
                                "num_heads": heads, "mlp_dim": 4 * dim, **kw})


@register_model(input_size=(3, 224, 224), num_params=86_567_656, params_source="torchvision")
def vit_b_16(**kw) -> VisionTransformer:
    """ViT-B/16: 86,567,656 parameters (torchvision). 590,592 patch conv + 768 [CLS] + 197 * 768 positions +
    12 * 7,087,872 layers + 1,536 final LN + 769,000 head. Notes: 002 §3.2."""
    return _vit(224, 16, 768, 12, 12, kw)


@register_model(input_size=(3, 224, 224), num_params=88_224_232, params_source="torchvision")
def vit_b_32(**kw) -> VisionTransformer:
    """ViT-B/32: 88,224,232 parameters (torchvision). Notes: 002 §3.2."""
    return _vit(224, 32, 768, 12, 12, kw)


@register_model(input_size=(3, 224, 224), num_params=304_326_632, params_source="torchvision")
def vit_l_16(**kw) -> VisionTransformer:
    """ViT-L/16: 304,326,632 parameters (torchvision; the notes round ViT-Large to 307M). Notes: 002 §3.2."""
    return _vit(224, 16, 1024, 24, 16, kw)


@register_model(input_size=(3, 224, 224), num_params=306_535_400, params_source="torchvision")
def vit_l_32(**kw) -> VisionTransformer:
    """ViT-L/32: 306,535,400 parameters (torchvision). Notes: 002 §3.2."""
    return _vit(224, 32, 1024, 24, 16, kw)


@register_model(input_size=(3, 224, 224), num_params=632_045_800, params_source="torchvision")
def vit_h_14(**kw) -> VisionTransformer:
    """ViT-H/14: 632,045,800 parameters (torchvision), 257 tokens at 224 x 224. Notes: 002 §3.2."""
    return _vit(224, 14, 1280, 32, 16, kw)


@register_model(input_size=(1, 28, 28))
def vit_tiny_mnist(**kw) -> VisionTransformer:
    """A CPU ViT for 28 x 28 grey digits: patch 7 (16 patches + [CLS]), 64 wide, 6 layers, 4 heads, MLP 128.

    Notes: 002 §3.2.
    """
    return VisionTransformer(**{"img_size": 28, "patch_size": 7, "in_chans": 1, "num_classes": 10, "dim": 64,
                                "depth": 6, "num_heads": 4, "mlp_dim": 128, **kw})
