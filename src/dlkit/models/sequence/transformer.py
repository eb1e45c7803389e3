"""The encoder-decoder Transformer (Vaswani et al., 2017; Notes: 002 §3.1, 000 §5.3, 003 §9.3, 004 TRANSFORMERS).

The encoder reads the whole source at once; the decoder predicts the target one token at a time, attending
to its own past (masked self-attention) and to the encoder output (cross-attention). Training is parallel
with teacher forcing (002 §3.1.4): for a target [<SoS>, t_1..t_n, <EoS>] the decoder input is
[<SoS>, t_1..t_n] and the expected output [t_1..t_n, <EoS>]. Inference is autoregressive (002 §3.1):
start from <SoS>, append the argmax token, stop at <EoS> or at a length limit.

Token embeddings are scaled by sqrt(d_model) and summed with sinusoidal (or learned) positions; the output
projection shares the target embedding's weight (`tie_output`), and `share_embeddings` uses one table for
source and target, as the paper does with its shared BPE vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from ...nn.transformer import TransformerDecoder, TransformerEncoder
from ...registry import register_model


def add_special_tokens(seq: Tensor, sos_id: int, eos_id: int) -> Tensor:
    """[B, n] token ids -> [B, n + 2] target sequences [<SoS>, t_1..t_n, <EoS>]. Notes: 002 §3.1.4, 003 §9."""
    B = seq.shape[0]
    sos = torch.full((B, 1), sos_id, dtype=seq.dtype, device=seq.device)
    eos = torch.full((B, 1), eos_id, dtype=seq.dtype, device=seq.device)
    return torch.cat([sos, seq, eos], 1)


def shift_targets(tgt: Tensor) -> tuple[Tensor, Tensor]:
    """Teacher forcing split of [<SoS>, t_1..t_n, <EoS>]: (decoder input [<SoS>, t_1..t_n], expected [t_1..t_n, <EoS>]).

    Notes: 002 §3.1.4. Padded targets keep their padding in both halves (the loss ignores it).
    """
    if tgt.dim() != 2 or tgt.shape[1] < 2:
        raise ConfigError(f"targets must be [B, T] with T >= 2 (<SoS> ... <EoS>); got {tuple(tgt.shape)}")
    return tgt[:, :-1], tgt[:, 1:]


class Transformer(nn.Module):
    """Encoder-decoder Transformer: logits = W_out Decoder(E_tgt[y] + pe, Encoder(E_src[x] + pe)). Notes: 002 §3.1.

    Token ids use `pad_id`, `sos_id`, `eos_id`; source padding (src == pad_id) is masked out of attention.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int | None = None, d_model: int = 512,
                 num_heads: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6, d_ff: int = 2048,
                 dropout: float = 0.1, activation: str = "relu", norm_first: bool = False, max_len: int = 512,
                 positional: str = "sinusoidal", share_embeddings: bool = False, tie_output: bool = True,
                 pad_id: int = 0, sos_id: int = 1, eos_id: int = 2, label_smoothing: float = 0.0):
        super().__init__()
        tgt_vocab_size = tgt_vocab_size or src_vocab_size
        if share_embeddings and tgt_vocab_size != src_vocab_size:
            raise ConfigError(f"share_embeddings needs one vocabulary; got sizes {src_vocab_size} and {tgt_vocab_size}")
        if positional not in ("sinusoidal", "learned"):
            raise ConfigError(f"positional must be 'sinusoidal' or 'learned'; got {positional!r}")
        self.d_model, self.pad_id, self.sos_id, self.eos_id = d_model, pad_id, sos_id, eos_id
        self.label_smoothing = label_smoothing
        self.src_emb = nn.Embedding(src_vocab_size, d_model)
        self.tgt_emb = self.src_emb if share_embeddings else nn.Embedding(tgt_vocab_size, d_model)
        self.pos = (SinusoidalPositionalEncoding(d_model, max_len) if positional == "sinusoidal"
                    else LearnedPositionalEmbedding(max_len, d_model))
        self.drop = nn.Dropout(dropout)
        kw = dict(d_ff=d_ff, dropout=dropout, activation=activation, norm_first=norm_first)
        self.encoder = TransformerEncoder(num_encoder_layers, d_model, num_heads, **kw)
        self.decoder = TransformerDecoder(num_decoder_layers, d_model, num_heads, **kw)
        self.out_proj = nn.Linear(d_model, tgt_vocab_size, bias=False)
        self._init_weights()
        if tie_output:
            self.out_proj.weight = self.tgt_emb.weight

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Xavier-uniform matrices, zero biases; embeddings N(0, 1/d_model) (scaled by sqrt(d_model) on use)."""
        for name, p in self.named_parameters():
            if name.endswith("_emb.weight"):
                nn.init.normal_(p, std=self.d_model**-0.5)
            elif p.dim() > 1 and not name.startswith("pos."):
                nn.init.xavier_uniform_(p)
            elif name.endswith(".bias") and "norm" not in name:
                nn.init.zeros_(p)

    def _embed(self, table: nn.Embedding, ids: Tensor, offset: int = 0) -> Tensor:
        if ids.dim() != 2 or ids.dtype.is_floating_point:
            raise ConfigError(f"Transformer expects integer token ids [B, T]; got {ids.dtype} {tuple(ids.shape)}")
        return self.drop(self.pos(table(ids) * math.sqrt(self.d_model), offset))

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder output [B, S, d_model] and the source padding mask [B, S] (True = <PAD>)."""
        src_kpm = src == self.pad_id
        return self.encoder(self._embed(self.src_emb, src), key_padding_mask=src_kpm), src_kpm

    def decode(self, tgt_in: Tensor, memory: Tensor, memory_key_padding_mask: Tensor | None = None) -> Tensor:
        """Next-token logits [B, T, V] for the decoder input [B, T] (causal: position t sees tgt_in[:, :t+1])."""
        h = self.decoder(self._embed(self.tgt_emb, tgt_in), memory, memory_key_padding_mask=memory_key_padding_mask)
        return self.out_proj(h)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        memory, src_kpm = self.encode(src)
        return self.decode(tgt_in, memory, src_kpm)

    def loss(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Teacher-forced cross-entropy of [t_1..t_n, <EoS>] given [<SoS>, t_1..t_n], <PAD> targets ignored."""
        tgt_in, tgt_out = shift_targets(tgt)
        logits = self(src, tgt_in)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=self.pad_id,
                               label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, max_len: int = 50) -> Tensor:
        """Autoregressive greedy decoding (Notes: 002 §3.1, 000 §5.3): [B, <= max_len + 1] ids starting at <SoS>.

        Each step appends argmax p(y_t | y_<t, x); a sequence ends at <EoS> and is padded with <PAD> after it;
        the loop stops when every sequence has ended or after `max_len` new tokens.
        """
        memory, src_kpm = self.encode(src)
        ys = torch.full((src.shape[0], 1), self.sos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            nxt = self.decode(ys, memory, src_kpm)[:, -1].argmax(-1)
            nxt = nxt.masked_fill(done, self.pad_id)
            ys = torch.cat([ys, nxt[:, None]], 1)
            done |= nxt == self.eos_id
            if bool(done.all()):
                break
        return ys

    @torch.no_grad()
    def cross_attention_maps(self, src: Tensor, tgt_in: Tensor) -> list[Tensor]:
        """Per-decoder-layer cross-attention weights [B, heads, T, S] for decoder input `tgt_in` [B, T].

        Notes: 002 §3.1.4 (queries from the decoder, keys and values from the encoder output). Row t says how
        much the prediction of token t + 1 looks at each source position; <PAD> source positions get weight 0.
        Each layer's attention inputs are recorded in one forward pass, then its weights are recomputed.
        """
        calls: list[tuple[tuple, dict]] = []
        hooks = [layer.cross_attn.register_forward_hook(lambda m, a, kw, out: calls.append((a, kw)), with_kwargs=True)
                 for layer in self.decoder.layers]
        try:
            self(src, tgt_in)
        finally:
            for h in hooks:
                h.remove()
        maps = []
        for layer, (args, kw) in zip(self.decoder.layers, calls):
            kw = {**kw, "need_weights": True, "average_attn_weights": False}
            maps.append(layer.cross_attn(*args, **kw)[1])
        return maps


@register_model(task="seq2seq", num_params=63_082_496, params_source="by hand (Vaswani et al. 2017: 65M)")
def transformer_base(**kw) -> Transformer:
    """Transformer base (Vaswani et al. 2017): d 512, 8 heads, 6 + 6 layers, d_ff 2048, shared 37,000-token vocab.

    63,082,496 parameters (the paper rounds to 65M): embeddings 37,000 * 512 = 18,944,000 (shared and tied);
    encoder layers 6 * 3,152,384; decoder layers 6 * 4,204,032.
    Notes: 002 §3.1.
    """
    return Transformer(**{"src_vocab_size": 37000, "share_embeddings": True, **kw})


@register_model(task="seq2seq", num_params=214_245_376, params_source="by hand (Vaswani et al. 2017: 213M)")
def transformer_big(**kw) -> Transformer:
    """Transformer big: d 1024, 16 heads, d_ff 4096, dropout 0.3: 214,245,376 parameters (the paper: 213M).

    Notes: 002 §3.1.
    """
    return Transformer(**{"src_vocab_size": 37000, "share_embeddings": True, "d_model": 1024, "num_heads": 16,
                          "d_ff": 4096, "dropout": 0.3, **kw})


@register_model(task="seq2seq")
def transformer_tiny(**kw) -> Transformer:
    """A CPU-sized Transformer for toy copy/reverse tasks: d 64, 4 heads, 2 + 2 layers, d_ff 128, 16 tokens.

    Notes: 002 §3.1.
    """
    return Transformer(**{"src_vocab_size": 16, "d_model": 64, "num_heads": 4, "num_encoder_layers": 2,
                          "num_decoder_layers": 2, "d_ff": 128, "dropout": 0.0, "max_len": 64, **kw})
