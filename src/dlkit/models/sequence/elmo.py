"""ELMo: contextual embeddings from a bidirectional LSTM language model (Peters et al. 2018; Notes: 004 ELMo).

Two language models share the token representation x_k and the softmax: a forward LM reads left to right and
predicts token k+1 from tokens 1..k, a backward LM reads right to left and predicts token k-1 from tokens k..N;
training maximises the sum of both log-likelihoods. Each is a 2-layer LSTM with a projection (LSTMP, hidden
state projected back to the embedding width), and, as the notes say, a residual connection between the first
and second layers: the second layer's output is LSTM_2(h_1) + h_1 (as the reference implementation adds each
layer's input to its output from the second layer on). The ELMo vector of token k mixes the layers:
ELMo_k = gamma * sum_j softmax(s)_j h_{k,j}, with h_{k,0} = [x_k; x_k] and h_{k,j} = [->h_{k,j}; <-h_{k,j}] (2D).

Not reproduced: the character-CNN token encoder (a token embedding stands in), cell and projection clipping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.recurrent import LSTM, reverse_padded
from ...registry import register_model


class ELMo(nn.Module):
    """Bidirectional LSTM LM with residual layers and a shared softmax. Notes: 004 ELMo.

    forward(tokens [B, T], lengths=None) -> (fwd_logits, bwd_logits), each [B, T, vocab]: fwd_logits[:, k]
    predicts token k+1 from tokens <= k, bwd_logits[:, k] predicts token k-1 from tokens >= k.
    h_1 = LSTM_1(x), h_j = LSTM_j(h_{j-1}) + h_{j-1} for j >= 2, in each direction separately.
    """

    def __init__(self, vocab_size: int = 65, embed_dim: int = 64, hidden_size: int = 256, num_layers: int = 2,
                 dropout: float = 0.1, fast: bool = True):
        super().__init__()
        if hidden_size < embed_dim:
            raise ConfigError(f"ELMo projects the LSTM state (hidden_size) to embed_dim, so hidden_size >= embed_dim; "
                              f"got hidden_size={hidden_size}, embed_dim={embed_dim}")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ConfigError(f"num_layers must be a positive int; got {num_layers!r}")
        self.vocab_size, self.embed_dim, self.num_layers = vocab_size, embed_dim, num_layers
        proj = embed_dim if embed_dim < hidden_size else 0  # torch's LSTM needs proj_size < hidden_size

        def stack() -> nn.ModuleList:
            return nn.ModuleList(LSTM(embed_dim, hidden_size, proj_size=proj, batch_first=True, fast=fast)
                                 for _ in range(num_layers))

        self.embed = nn.Embedding(vocab_size, embed_dim)  # shared token representation
        self.forward_lm, self.backward_lm = stack(), stack()
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, vocab_size)  # shared softmax
        self.mix_weights = nn.Parameter(torch.zeros(num_layers + 1))  # s (softmax-normalised), task specific
        self.gamma = nn.Parameter(torch.ones(()))

    def _check(self, tokens: Tensor) -> None:
        if tokens.dim() != 2 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ConfigError(f"ELMo expects integer token ids [B, T]; got {tokens.dtype} {tuple(tokens.shape)}")

    def _run(self, x: Tensor, layers: nn.ModuleList, lengths: Tensor | None) -> list[Tensor]:
        outputs, h = [], x
        for j, lstm in enumerate(layers):
            y, _ = lstm(self.drop(h), lengths=lengths)
            h = y + h if j > 0 else y  # residual from the second layer on
            outputs.append(h)
        return outputs

    def directional_states(self, tokens: Tensor, lengths: Tensor | None = None):
        """(x, forward layers, backward layers): the token embeddings [B, T, E] and each LM's per-layer outputs
        [B, T, E], the backward ones put back in reading order."""
        self._check(tokens)
        x = self.embed(tokens)
        fwd = self._run(x, self.forward_lm, lengths)
        bwd = self._run(reverse_padded(x, lengths, time_dim=1), self.backward_lm, lengths)
        return x, fwd, [reverse_padded(h, lengths, time_dim=1) for h in bwd]

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _, fwd, bwd = self.directional_states(tokens, lengths)
        return self.head(self.drop(fwd[-1])), self.head(self.drop(bwd[-1]))

    def lm_loss(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(CE_forward + CE_backward) / 2: next-token and previous-token cross-entropy averaged over valid tokens
        (the negative of ELMo's joint log-likelihood, per token and direction)."""
        fwd, bwd = self(tokens, lengths)
        targets_f, targets_b = tokens[:, 1:].clone(), tokens[:, :-1].clone()
        if lengths is not None:
            valid = torch.arange(tokens.shape[1], device=tokens.device) < torch.as_tensor(
                lengths, device=tokens.device).unsqueeze(1)
            targets_f[~valid[:, 1:]] = -100
            targets_b[~valid[:, 1:]] = -100  # bwd_logits[:, k] (k >= 1 valid) predicts token k-1
        ce_f = F.cross_entropy(fwd[:, :-1].reshape(-1, self.vocab_size), targets_f.reshape(-1), ignore_index=-100)
        ce_b = F.cross_entropy(bwd[:, 1:].reshape(-1, self.vocab_size), targets_b.reshape(-1), ignore_index=-100)
        return (ce_f + ce_b) / 2

    def layer_outputs(self, tokens: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        """The L + 1 biLM representations [B, T, 2E]: [x; x], then [->h_j; <-h_j] for each layer j."""
        x, fwd, bwd = self.directional_states(tokens, lengths)
        return [torch.cat([x, x], -1)] + [torch.cat([f, b], -1) for f, b in zip(fwd, bwd)]

    def embed_tokens(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """ELMo vectors [B, T, 2E]: gamma * sum_j softmax(s)_j h_{k,j} (Peters et al. 2018, eq. 1)."""
        layers = torch.stack(self.layer_outputs(tokens, lengths))  # [L + 1, B, T, 2E]
        w = torch.softmax(self.mix_weights, 0).view(-1, 1, 1, 1)
        return self.gamma * (w * layers).sum(0)


@register_model(task="language_model", num_params=606_405,
                params_source="by hand: embedding, 4 projected LSTMs, softmax, s and gamma")
def elmo_small(**kw) -> ELMo:
    """A CPU-sized ELMo: 2-layer biLM, LSTM 256 cells projected to 64, 64-dim tokens, 65 symbols, dropout 0.1.

    Notes: 004 ELMo.
    """
    return ELMo(**{"vocab_size": 65, "embed_dim": 64, "hidden_size": 256, "num_layers": 2, "dropout": 0.1, **kw})
