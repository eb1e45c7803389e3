"""GPT: a decoder-only Transformer language model (Radford et al. 2018, 2019; Notes: 004 GPT, 000 §5.3 remark).

A stack of decoder blocks with masked self-attention and an FFN and no cross-attention (004 GPT), trained to
predict the next token: the loss is the cross-entropy of the logits at position t against token t+1. The
layout follows GPT-2 as nanoGPT writes it: token embedding + learned positions, pre-norm blocks
(`TransformerEncoderLayer(norm_first=True)` called causally, GELU, 4x FFN), a final LayerNorm and a linear
head whose weight is the token embedding's (weight tying, counted once). `gpt2_small` has 124,439,808
parameters. Attention runs through `F.scaled_dot_product_attention(is_causal=True)`, and the forward pass
makes no host synchronisation (only shape checks), so a training step stays on the device.
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


class GPT(nn.Module):
    """Decoder-only Transformer LM: logits = LN(blocks(E[idx] + P[pos])) E^T. Notes: 004 GPT, 002 §3.1.4.

    Input token ids [B, T] with T <= block_size; output logits [B, T, vocab_size]. `bias=False` drops the biases
    of every Linear and LayerNorm; `tie_weights=False` gives the head its own matrix.
    """

    def __init__(self, vocab_size: int = 50257, block_size: int = 1024, n_layer: int = 12, n_head: int = 12,
                 n_embd: int = 768, dropout: float = 0.0, bias: bool = True, tie_weights: bool = True):
        super().__init__()
        self.vocab_size, self.block_size = vocab_size, block_size
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = LearnedPositionalEmbedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = TransformerEncoder(n_layer, n_embd, n_head, final_norm=True, d_ff=4 * n_embd, dropout=dropout,
                                         activation="gelu", norm_first=True, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self._init_weights(n_layer)

    @torch.no_grad()
    def _init_weights(self, n_layer: int) -> None:
        """GPT-2 init: N(0, 0.02) weights, zero biases; residual output projections N(0, 0.02 / sqrt(2 n_layer))."""
        init_weights(self, conv=None, conv_bias=False, linear="normal_0.02", embedding="normal_0.02", norm=False)
        for layer in self.blocks.layers:
            for lin in (layer.self_attn.out_proj, layer.ffn.linear2):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * n_layer))

    def features(self, idx: Tensor) -> Tensor:
        """Final hidden states [B, T, n_embd] (after the last LayerNorm)."""
        if idx.dim() != 2 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise ConfigError(f"GPT expects integer token ids [B, T]; got {idx.dtype} {tuple(idx.shape)}")
        if idx.shape[1] > self.block_size:
            raise ConfigError(f"GPT's context holds block_size = {self.block_size} tokens; got T = {idx.shape[1]}. "
                              "Crop the input (generate() does) or build a model with a larger block_size.")
        x = self.drop(self.pos_emb(self.tok_emb(idx)))
        return self.blocks(x, is_causal=True)

    def forward(self, idx: Tensor) -> Tensor:
        return self.lm_head(self.features(idx))

    def loss(self, idx: Tensor, targets: Tensor, ignore_index: int = -1) -> Tensor:
        """Next-token cross-entropy: targets[b, t] is the token after idx[b, t] (idx shifted left by one)."""
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index)

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Autoregressive sampling (Notes: 002 §3.1): append one token at a time, feeding the last block_size.

        The next token is drawn from softmax(logits / temperature), restricted to the `top_k` largest logits when
        given; temperature 0 (or top_k = 1) is greedy argmax decoding.
        """
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy); got {temperature}")
        for _ in range(max_new_tokens):
            logits = self.lm_head(self.features(idx[:, -self.block_size :])[:, -1])
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            idx = torch.cat([idx, nxt], 1)
        return idx

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups as nanoGPT's `configure_optimizers`: decay every matrix (dim >= 2: the Linear weights and
        both embedding tables), not biases or LayerNorm gains."""
        decay, no_decay = [], []
        for p in self.parameters():
            (decay if p.dim() >= 2 else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@register_model(task="language_model", num_params=124_439_808, params_source="Hugging Face GPT2Model")
def gpt2_small(**kw) -> GPT:
    """GPT-2 small (124M): 12 layers, 12 heads, 768 wide, context 1024, vocab 50257: 124,439,808 parameters.

    wte 50257*768 = 38,597,376; wpe 1024*768 = 786,432; per block 12 d^2 + 13 d = 7,087,872 (x12 = 85,054,464);
    final LN 1,536; the head is tied to wte.
    Notes: 004 GPT.
    """
    return GPT(**{"vocab_size": 50257, "block_size": 1024, "n_layer": 12, "n_head": 12, "n_embd": 768, **kw})


@register_model(task="language_model", num_params=354_823_168, params_source="Hugging Face GPT2Model")
def gpt2_medium(**kw) -> GPT:
    """GPT-2 medium: 24 layers, 16 heads, 1024 wide: 354,823,168 parameters. Notes: 004 GPT."""
    return GPT(**{"vocab_size": 50257, "block_size": 1024, "n_layer": 24, "n_head": 16, "n_embd": 1024, **kw})


@register_model(task="language_model", num_params=774_030_080, params_source="Hugging Face GPT2Model")
def gpt2_large(**kw) -> GPT:
    """GPT-2 large: 36 layers, 20 heads, 1280 wide: 774,030,080 parameters. Notes: 004 GPT."""
    return GPT(**{"vocab_size": 50257, "block_size": 1024, "n_layer": 36, "n_head": 20, "n_embd": 1280, **kw})


@register_model(task="language_model", num_params=1_557_611_200, params_source="Hugging Face GPT2Model")
def gpt2_xl(**kw) -> GPT:
    """GPT-2 XL: 48 layers, 25 heads, 1600 wide: 1,557,611,200 parameters. Notes: 004 GPT."""
    return GPT(**{"vocab_size": 50257, "block_size": 1024, "n_layer": 48, "n_head": 25, "n_embd": 1600, **kw})


@register_model(task="language_model", num_params=10_646_784 + 256 * 384,
                params_source="nanoGPT (10.65M, printed without the position table)")
def gpt_shakespeare_char(**kw) -> GPT:
    """nanoGPT's Tiny Shakespeare character model: 6 layers, 6 heads, 384 wide, context 256, no biases, dropout 0.2.

    10,745,088 parameters; 10,646,784 without the position table (nanoGPT prints "10.65M").
    Notes: 004 GPT.
    """
    return GPT(**{"vocab_size": 65, "block_size": 256, "n_layer": 6, "n_head": 6, "n_embd": 384, "dropout": 0.2,
                  "bias": False, **kw})


@register_model(task="language_model", num_params=65 * 128 + 128 * 128 + 4 * (12 * 128**2 + 13 * 128) + 2 * 128,
                params_source="by hand: V d + T d + L (12 d^2 + 13 d) + 2 d")
def gpt_char_small(**kw) -> GPT:
    """A CPU-sized character GPT: 4 layers, 4 heads, 128 wide, context 128, 65 characters (Tiny Shakespeare).

    Notes: 004 GPT.
    """
    return GPT(**{"vocab_size": 65, "block_size": 128, "n_layer": 4, "n_head": 4, "n_embd": 128, **kw})


@register_model(task="language_model", num_params=65 * 64 + 64 * 64 + 2 * (12 * 64**2 + 13 * 64) + 2 * 64,
                params_source="by hand: V d + T d + L (12 d^2 + 13 d) + 2 d")
def gpt_char_nano(**kw) -> GPT:
    """The smallest character GPT, for tests and smoke runs: 2 layers, 2 heads, 64 wide, context 64. Notes: 004 GPT."""
    return GPT(**{"vocab_size": 65, "block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 64, **kw})
