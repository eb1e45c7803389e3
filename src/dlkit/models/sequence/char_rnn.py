"""Character-level recurrent language model (Notes: 004 RNN, 000 §5.2, 003 §8; Karpathy's char-rnn).

Each character id is embedded, a stack of recurrent layers (Elman RNN, LSTM or GRU from `dlkit.nn.recurrent`)
carries the context, and a linear read-out gives the next character's logits: h_t = RNN(E[x_t], h_{t-1}),
o_t = W h_t + b (004: o_t = g(W h_t) with g the softmax of the loss). Trained with L = mean_t L_t, the
cross-entropy of o_t against x_{t+1}; the state can be carried between batches for truncated BPTT
(`dlkit.techniques.bptt`), and sampling feeds each drawn character back in, one step at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.recurrent import recurrent_layer
from ...registry import register_model


class CharRNN(nn.Module):
    """Embedding -> recurrent layers -> linear. Notes: 004 RNN, 000 §5.2. logits_t = W h_t^(L) + b.

    Input token ids [B, T]; forward returns (logits [B, T, vocab_size], state), state as the recurrent layer's
    (h_n, or (h_n, c_n) for an LSTM). `fast=True` (default) runs torch's fused kernels on the same parameters;
    `fast=False` the Python time loop of the notes' equations.
    """

    def __init__(self, vocab_size: int = 65, embed_dim: int = 64, hidden_size: int = 256, num_layers: int = 2,
                 cell: str = "lstm", dropout: float = 0.0, fast: bool = True, init_state: str = "zeros"):
        super().__init__()
        if not isinstance(vocab_size, int) or vocab_size < 2:
            raise ConfigError(f"vocab_size must be an int >= 2; got {vocab_size!r}")
        self.vocab_size, self.cell = vocab_size, cell
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.rnn = recurrent_layer(cell, embed_dim, hidden_size, num_layers, batch_first=True, dropout=dropout,
                                   fast=fast, init_state=init_state)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx: Tensor, state=None, lengths: Tensor | None = None):
        if idx.dim() != 2 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise ConfigError(f"CharRNN expects integer character ids [B, T]; got {idx.dtype} {tuple(idx.shape)}")
        h, state = self.rnn(self.embed(idx), state, lengths=lengths)
        return self.head(self.drop(h)), state

    def loss(self, idx: Tensor, targets: Tensor, state=None, ignore_index: int = -100):
        """Next-character cross-entropy averaged over all tokens (targets = idx shifted left); returns (loss, state)."""
        logits, state = self(idx, state)
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), targets.reshape(-1),
                               ignore_index=ignore_index), state

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """Sample continuations of the prompts idx [B, T0]: the prompt is read once, then each new character is fed
        back with the carried state. Temperature 0 is greedy argmax; returns [B, T0 + max_new_tokens]."""
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy); got {temperature}")
        logits, state = self(idx)
        out = [idx]
        for _ in range(max_new_tokens):
            last = logits[:, -1]
            if temperature == 0:
                nxt = last.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(torch.softmax(last / temperature, -1), 1, generator=generator)
            out.append(nxt)
            logits, state = self(nxt, state)
        return torch.cat(out, 1)


@register_model(task="language_model", num_params=4_160 + 1 * (82_432 + 131_584) + 16_705,
                params_source="by hand: embedding 4,160 + g (82,432 + 131,584) + output 16,705, g = 1 (RNN)")
def char_rnn(**kw) -> CharRNN:
    """Character LM with a 2-layer tanh Elman RNN (64-dim embedding, 256 hidden, 65 characters). Notes: 004 RNN."""
    return CharRNN(**{"cell": "rnn", **kw})


@register_model(task="language_model", num_params=4_160 + 4 * (82_432 + 131_584) + 16_705,
                params_source="by hand: embedding 4,160 + g (82,432 + 131,584) + output 16,705, g = 4 (LSTM)")
def char_lstm(**kw) -> CharRNN:
    """Character LM with a 2-layer LSTM (64-dim embedding, 256 hidden, 65 characters: Tiny Shakespeare).

    Notes: 004 RNN.
    """
    return CharRNN(**{"cell": "lstm", **kw})


@register_model(task="language_model", num_params=4_160 + 3 * (82_432 + 131_584) + 16_705,
                params_source="by hand: embedding 4,160 + g (82,432 + 131,584) + output 16,705, g = 3 (GRU)")
def char_gru(**kw) -> CharRNN:
    """Character LM with a 2-layer GRU (64-dim embedding, 256 hidden, 65 characters). Notes: 004 RNN."""
    return CharRNN(**{"cell": "gru", **kw})
