"""Recurrent sequence-to-sequence models with attention (Notes: 003 §9, §9.2; 004 Seq2Seq; 000 §5.2).

An encoder RNN (embedding + GRU or LSTM, optionally bidirectional) reads the source x_1..x_S into states
h_1..h_S; a decoder RNN, started from the encoder's final state, generates the target token by token from <SOS>
until it emits <EOS> (003 §9). With attention (003 §9.2) the decoder looks at every encoder state at each step:

    e_i = score(s, h_i),   a_i = exp(e_i) / sum_j exp(e_j),   c = sum_i a_i h_i

- `bahdanau`: score = v^T tanh(W_1 s_{t-1} + W_2 h_i) with the previous decoder state; the decoder reads
  [E y_{t-1}; c_t], and logits_t = W_o [s_t; c_t] (Bahdanau et al. 2015, with a linear read-out for the maxout).
- `luong_dot` / `luong_general`: score = s_t^T h_i or s_t^T W h_i with the current state; s_t = RNN(E y_{t-1}),
  h~_t = tanh(W_c [c_t; s_t]), logits_t = W_s h~_t (Luong et al. 2015, without input feeding).
- `none`: c = the last encoder state for every step (Cho et al. 2014): the decoder reads [E y_{t-1}; c].

Training is teacher-forced: for a target [<SOS>, t_1..t_n, <EOS>] the decoder reads [<SOS>, t_1..t_n] and is
scored on [t_1..t_n, <EOS>] with <PAD> positions ignored; `teacher_forcing_ratio` < 1 feeds the model's own
argmax instead of the true previous token with probability 1 - ratio (per example and step). Decoding is greedy
or a beam search; both return the attention weights [T_out, S] for alignment heat maps (zero on <PAD>).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ...errors import ConfigError
from ...nn.attention import BahdanauAttention, LuongAttention
from ...registry import register_model

_ATTENTION = {"bahdanau": "bahdanau", "additive": "bahdanau", "luong_dot": "luong_dot", "dot": "luong_dot",
              "luong_general": "luong_general", "general": "luong_general", "luong": "luong_general",
              "none": "none"}
_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


def _cell(cell: str) -> type[nn.Module]:
    if cell not in _CELLS:
        raise ConfigError(f"cell must be 'gru' or 'lstm'; got {cell!r}")
    return _CELLS[cell]


class EncoderOutput(NamedTuple):
    """What the decoder needs: states h_1..h_S [B, S, E] (0 at <PAD>), padding_mask [B, S] (True = <PAD>), the
    last state [B, E] (top layer, both directions) and the decoder's initial state (torch layout [layers, B, H])."""

    outputs: Tensor
    padding_mask: Tensor
    last: Tensor
    state: Tensor | tuple[Tensor, Tensor] | None


class Hypothesis(NamedTuple):
    """A decoded sequence: tokens (after <SOS>, with the final <EOS> if finished), log-probability sum, the score
    used for ranking (length-normalised), attention weights [len(tokens), S] or None, and whether it ended."""

    tokens: list[int]
    score: float
    normalized_score: float
    attention: Tensor | None
    finished: bool


class Seq2SeqEncoder(nn.Module):
    """Embedding + GRU/LSTM encoder: h_1..h_S = RNN(E x_1..E x_S), packed so padding never enters. Notes: 003 §9.

    Bidirectional encoders concatenate the forward and backward states, h_i = [h_i^fwd; h_i^bwd] (003 §8.2.1).
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int = 1, cell: str = "gru",
                 bidirectional: bool = False, dropout: float = 0.0, pad_id: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.drop = nn.Dropout(dropout)
        self.rnn = _cell(cell)(embed_dim, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional,
                               dropout=dropout if num_layers > 1 else 0.0)
        self.dirs, self.num_layers, self.hidden_size = 2 if bidirectional else 1, num_layers, hidden_size
        self.out_dim = self.dirs * hidden_size

    def _merge_dirs(self, h: Tensor) -> Tensor:  # [layers * dirs, B, H] -> [layers, B, dirs * H]
        L, B = self.num_layers, h.shape[1]
        return h.view(L, self.dirs, B, self.hidden_size).permute(0, 2, 1, 3).reshape(L, B, self.out_dim)

    def forward(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        """(outputs [B, S, dirs*H], final state [layers, B, dirs*H] (a pair (h, c) for an LSTM))."""
        packed = pack_padded_sequence(self.drop(self.embed(src)), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, state = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        if isinstance(state, tuple):
            return out, (self._merge_dirs(state[0]), self._merge_dirs(state[1]))
        return out, self._merge_dirs(state)


class AttentionDecoder(nn.Module):
    """GRU/LSTM decoder with Bahdanau, Luong (dot/general) or no attention; see the module docstring. Notes: 003 §9.2.

    `step(y_prev, state, memory)` advances one token and returns (logits [B, V], state, weights [B, S] or None).
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, enc_dim: int, num_layers: int = 1,
                 cell: str = "gru", attention: str = "bahdanau", attn_dim: int | None = None, dropout: float = 0.0,
                 pad_id: int = 0):
        super().__init__()
        if attention not in _ATTENTION:
            raise ConfigError(f"attention must be one of {sorted(set(_ATTENTION.values()))}; got {attention!r}")
        self.kind = _ATTENTION[attention]
        if self.kind == "luong_dot" and enc_dim != hidden_size:
            raise ConfigError(f"Luong's dot score needs encoder states as wide as the decoder state; got {enc_dim} "
                              f"and {hidden_size}. Use attention='luong_general', or encoder_hidden_size = "
                              f"hidden_size / 2 with a bidirectional encoder.")
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.drop = nn.Dropout(dropout)
        self.is_lstm = cell == "lstm"
        rnn_in, out_in = embed_dim + enc_dim, hidden_size + enc_dim
        if self.kind == "bahdanau":
            self.attn = BahdanauAttention(hidden_size, enc_dim, attn_dim or hidden_size)
        elif self.kind.startswith("luong"):
            self.attn = LuongAttention(hidden_size, enc_dim, self.kind.split("_")[1])
            self.combine = nn.Linear(enc_dim + hidden_size, hidden_size, bias=False)  # W_c
            rnn_in, out_in = embed_dim, hidden_size
        self.rnn = _cell(cell)(rnn_in, hidden_size, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0)
        self.out = nn.Linear(out_in, vocab_size)

    def _top(self, state) -> Tensor:
        return (state[0] if self.is_lstm else state)[-1]

    def step(self, y_prev: Tensor, state, memory: EncoderOutput):
        """One decoder step from the previous tokens y_prev [B]: (logits [B, V], new state, weights [B, S] or None)."""
        e = self.drop(self.embed(y_prev))
        w = None
        if self.kind == "bahdanau":
            c, w = self.attn(self._top(state), memory.outputs, key_padding_mask=memory.padding_mask)
            s, state = self.rnn(torch.cat([e, c], -1)[:, None], state)
            logits = self.out(torch.cat([s[:, 0], c], -1))
        elif self.kind == "none":
            c = memory.last
            s, state = self.rnn(torch.cat([e, c], -1)[:, None], state)
            logits = self.out(torch.cat([s[:, 0], c], -1))
        else:
            s, state = self.rnn(e[:, None], state)
            c, w = self.attn(s[:, 0], memory.outputs, key_padding_mask=memory.padding_mask)
            logits = self.out(torch.tanh(self.combine(torch.cat([c, s[:, 0]], -1))))
        return logits, state, w

    def forward(self, tgt_in: Tensor, state, memory: EncoderOutput) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced logits [B, T, V] and weights [B, T, S] (or None). Luong and no attention run the RNN over
        the whole target at once; Bahdanau's input depends on the previous state, so it steps."""
        if self.kind == "bahdanau":
            logits, ws = [], []
            for t in range(tgt_in.shape[1]):
                lg, state, w = self.step(tgt_in[:, t], state, memory)
                logits.append(lg)
                ws.append(w)
            return torch.stack(logits, 1), torch.stack(ws, 1)
        e = self.drop(self.embed(tgt_in))
        if self.kind == "none":
            c = memory.last[:, None].expand(-1, tgt_in.shape[1], -1)
            s, _ = self.rnn(torch.cat([e, c], -1), state)
            return self.out(torch.cat([s, c], -1)), None
        s, _ = self.rnn(e, state)
        c, w = self.attn(s, memory.outputs, key_padding_mask=memory.padding_mask)
        return self.out(torch.tanh(self.combine(torch.cat([c, s], -1)))), w


# ----------------------------------------------------------------------------- decoding, model-independent

StepFn = Callable[[Tensor, object], tuple[Tensor, object, Tensor | None]]


def _select(state, idx: Tensor):
    """Rows `idx` (dim 0) of every tensor of a nested tuple."""
    if state is None:
        return None
    if isinstance(state, tuple | list):
        return type(state)(_select(s, idx) for s in state)
    return state.index_select(0, idx)


def greedy_search(step_fn: StepFn, state, batch_size: int, sos_id: int, eos_id: int, max_len: int = 50,
                  pad_id: int = 0, device=None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Greedy decoding: y_t = argmax_y log p(y | y_<t, x) from <SOS> until <EOS> or `max_len` tokens. Notes: 003 §9.

    `step_fn(tokens [N], state) -> (log_probs [N, V], state, extra [N, S] or None)`; the state is any nested tuple
    of tensors with the batch first. Returns (tokens [B, T] with <PAD> after <EOS>, log-probability sums [B],
    extras [B, T, S] (zero after <EOS>) or None).
    """
    inp = torch.full((batch_size,), sos_id, dtype=torch.long, device=device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    scores = torch.zeros(batch_size, device=device)
    toks, extras = [], []
    for _ in range(max_len):
        logp, state, extra = step_fn(inp, state)
        tok = logp.argmax(-1).masked_fill(done, pad_id)
        scores = scores + logp.gather(1, tok[:, None])[:, 0].masked_fill(done, 0.0)
        if extra is not None:
            extras.append(extra.masked_fill(done[:, None], 0.0))
        toks.append(tok)
        done = done | (tok == eos_id)
        inp = tok
        if bool(done.all()):
            break
    return torch.stack(toks, 1), scores, (torch.stack(extras, 1) if extras else None)


def beam_search(step_fn: StepFn, state, sos_id: int, eos_id: int, beam_width: int = 5, max_len: int = 50,
                length_penalty: float = 0.0) -> list[Hypothesis]:
    """Beam search for one source: keep the `beam_width` best prefixes by log p(y_1..y_t | x). Notes: 003 §9.

    Each step extends every live prefix by every token and keeps the best k; a prefix that emits <EOS> is set
    aside as finished. Ranking score: log p / len^length_penalty (0 = raw log-probability, 1 = mean per token).
    Without a length penalty the search stops once k finished hypotheses all beat every live prefix (extending
    only lowers a log-probability), so the best finished one is the best the beam can reach; with a penalty it
    stops at k finished. Prefixes still live at `max_len` are returned, as unfinished, only if fewer than k
    finished. `state` holds one example (batch dim 1). Returns hypotheses, best first; width 1 is greedy decoding.
    """
    if beam_width < 1 or max_len < 1:
        raise ConfigError(f"beam_width and max_len must be >= 1; got {beam_width}, {max_len}")
    k = beam_width

    def norm(score: float, length: int) -> float:
        return score / length**length_penalty if length_penalty else score

    tokens: list[list[int]] = [[]]
    extras: list[list[Tensor]] = [[]]
    scores = torch.zeros(1, dtype=torch.float64)
    finished: list[Hypothesis] = []
    dev = _device(state) or "cpu"
    inp = torch.tensor([sos_id])
    for _ in range(max_len):
        logp, state, extra = step_fn(inp.to(dev), state)
        V = logp.shape[-1]
        cand = (scores[:, None] + logp.detach().double().cpu()).view(-1)
        top_s, top_i = cand.topk(min(2 * k, cand.numel()))
        beams, new_tokens, new_extras, new_scores = [], [], [], []
        for s, i in zip(top_s.tolist(), top_i.tolist()):
            b, tok = divmod(i, V)
            seq, ext = tokens[b] + [tok], extras[b] + ([extra[b].detach()] if extra is not None else [])
            if tok == eos_id:
                finished.append(Hypothesis(seq, s, norm(s, len(seq)), torch.stack(ext) if ext else None, True))
                continue
            beams.append(b)
            new_tokens.append(seq)
            new_extras.append(ext)
            new_scores.append(s)
            if len(beams) == k:
                break
        finished.sort(key=lambda h: -h.normalized_score)
        tokens, extras, scores = new_tokens, new_extras, torch.tensor(new_scores, dtype=torch.float64)
        if not beams:
            break
        if len(finished) >= k and (length_penalty or max(new_scores) <= finished[k - 1].normalized_score):
            break
        state = _select(state, torch.tensor(beams, device=dev))
        inp = torch.tensor([seq[-1] for seq in tokens])
    if len(finished) < k:
        live = [Hypothesis(t, s, norm(s, len(t)), torch.stack(e) if e else None, False)
                for t, s, e in zip(tokens, scores.tolist(), extras)]
        finished += sorted(live, key=lambda h: -h.normalized_score)[:k - len(finished)]
    return finished[:k]


def _device(state):
    if isinstance(state, tuple | list):
        for s in state:
            d = _device(s)
            if d is not None:
                return d
        return None
    return state.device if isinstance(state, Tensor) else None


# ----------------------------------------------------------------------------- the model


class Seq2Seq(nn.Module):
    """Encoder-decoder RNN with attention; see the module docstring. Notes: 003 §9, §9.2; 004 Seq2Seq.

    Source and target are token ids [B, S], [B, T] padded on the right with `pad_id` (lengths are read from the
    padding unless `src_lengths` is given). The decoder starts from the encoder's final state, mapped by
    s_0 = tanh(W_b h_S) (`bridge`) when the widths differ (e.g. a bidirectional encoder, as Bahdanau does).
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int | None = None, embed_dim: int = 64,
                 hidden_size: int = 128, num_layers: int = 1, cell: str = "gru", bidirectional: bool = False,
                 attention: str = "bahdanau", attn_dim: int | None = None, encoder_hidden_size: int | None = None,
                 dropout: float = 0.0, pad_id: int = 0, sos_id: int = 1, eos_id: int = 2):
        super().__init__()
        tgt_vocab_size = tgt_vocab_size or src_vocab_size
        self.pad_id, self.sos_id, self.eos_id, self.cell = pad_id, sos_id, eos_id, cell
        self.encoder = Seq2SeqEncoder(src_vocab_size, embed_dim, encoder_hidden_size or hidden_size, num_layers,
                                      cell, bidirectional, dropout, pad_id)
        enc_dim = self.encoder.out_dim
        self.decoder = AttentionDecoder(tgt_vocab_size, embed_dim, hidden_size, enc_dim, num_layers, cell,
                                        attention, attn_dim, dropout, pad_id)
        self.bridge = nn.Linear(enc_dim, hidden_size) if enc_dim != hidden_size else None
        self.bridge_c = nn.Linear(enc_dim, hidden_size) if (self.bridge is not None and cell == "lstm") else None

    @property
    def attention(self) -> str:
        """The attention kind: bahdanau, luong_dot, luong_general or none."""
        return self.decoder.kind

    def _lengths(self, src: Tensor, src_lengths: Tensor | None) -> Tensor:
        if src.dim() != 2 or src.dtype.is_floating_point or src.dtype == torch.bool:
            raise ConfigError(f"Seq2Seq expects integer source ids [B, S]; got {src.dtype} {tuple(src.shape)}")
        lengths = (src != self.pad_id).sum(1) if src_lengths is None else torch.as_tensor(src_lengths)
        if (lengths < 1).any() or (lengths > src.shape[1]).any():
            raise ConfigError(f"source lengths must be in [1, {src.shape[1]}]; got {lengths.tolist()}. Empty "
                              "sources cannot be encoded; give each at least one token.")
        return lengths.to(src.device)

    def encode(self, src: Tensor, src_lengths: Tensor | None = None) -> EncoderOutput:
        """Encoder states, padding mask, last state and the decoder's initial state."""
        lengths = self._lengths(src, src_lengths)
        out, state = self.encoder(src, lengths)
        h = state[0] if isinstance(state, tuple) else state
        last = h[-1]
        if self.bridge is not None:
            h = torch.tanh(self.bridge(h))
            state = (h, self.bridge_c(state[1])) if isinstance(state, tuple) else h
        mask = torch.arange(src.shape[1], device=src.device) >= lengths[:, None]
        return EncoderOutput(out, mask, last, state)

    def forward(self, src: Tensor, tgt_in: Tensor, src_lengths: Tensor | None = None,
                teacher_forcing_ratio: float = 1.0, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """Logits [B, T, V] for decoder inputs tgt_in [B, T] (starting with <SOS>) and attention [B, T, S] or None."""
        if tgt_in.dim() != 2 or tgt_in.shape[0] != src.shape[0]:
            raise ConfigError(f"tgt_in must be [B, T] with B = {src.shape[0]}; got {tuple(tgt_in.shape)}")
        memory = self.encode(src, src_lengths)
        if teacher_forcing_ratio >= 1.0:
            return self.decoder(tgt_in, memory.state, memory)
        state, inp, logits, ws = memory.state, tgt_in[:, 0], [], []
        for t in range(tgt_in.shape[1]):
            lg, state, w = self.decoder.step(inp, state, memory)
            logits.append(lg)
            ws.append(w)
            if t + 1 < tgt_in.shape[1]:
                teach = torch.rand(src.shape[0], generator=generator).to(src.device) < teacher_forcing_ratio
                inp = torch.where(teach, tgt_in[:, t + 1], lg.argmax(-1))
        return torch.stack(logits, 1), (torch.stack(ws, 1) if ws[0] is not None else None)

    def loss(self, src: Tensor, tgt: Tensor, src_lengths: Tensor | None = None, teacher_forcing_ratio: float = 1.0,
             generator: torch.Generator | None = None) -> Tensor:
        """Mean cross-entropy of [t_1..t_n, <EOS>] given [<SOS>, t_1..t_n] over the non-<PAD> target tokens."""
        if tgt.dim() != 2 or tgt.shape[1] < 2:
            raise ConfigError(f"targets must be [B, T] with T >= 2 (<SOS> ... <EOS>); got {tuple(tgt.shape)}")
        logits, _ = self(src, tgt[:, :-1], src_lengths, teacher_forcing_ratio, generator)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=self.pad_id)

    # ------------------------------------------------------------------------- decoding

    def _search_state(self, memory: EncoderOutput):
        st = memory.state
        st = tuple(s.transpose(0, 1) for s in st) if isinstance(st, tuple) else st.transpose(0, 1)
        return st, memory.outputs, memory.padding_mask, memory.last

    def _search_step(self, tokens: Tensor, sstate):
        st, outputs, mask, last = sstate
        rnn_state = (tuple(s.transpose(0, 1).contiguous() for s in st) if isinstance(st, tuple)
                     else st.transpose(0, 1).contiguous())
        logits, rnn_state, w = self.decoder.step(tokens, rnn_state, EncoderOutput(outputs, mask, last, None))
        st = tuple(s.transpose(0, 1) for s in rnn_state) if isinstance(rnn_state, tuple) else rnn_state.transpose(0, 1)
        return logits.log_softmax(-1), (st, outputs, mask, last), w

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, src_lengths: Tensor | None = None, max_len: int = 50
                      ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Greedy decoding from <SOS>: (tokens [B, T] ending at <EOS> then <PAD>, log-probabilities [B],
        attention [B, T, S] or None)."""
        memory = self.encode(src, src_lengths)
        return greedy_search(self._search_step, self._search_state(memory), src.shape[0], self.sos_id, self.eos_id,
                             max_len, self.pad_id, src.device)

    @torch.no_grad()
    def beam_search(self, src: Tensor, beam_width: int = 5, max_len: int = 50, length_penalty: float = 0.0,
                    src_lengths: Tensor | None = None) -> list[list[Hypothesis]]:
        """Beam search per source sequence (see `beam_search`): for each, up to `beam_width` hypotheses, best first."""
        memory = self.encode(src, src_lengths)
        sstate = self._search_state(memory)
        out = []
        for b in range(src.shape[0]):
            one = _select(sstate, torch.tensor([b], device=src.device))
            out.append(beam_search(self._search_step, one, self.sos_id, self.eos_id, beam_width, max_len,
                                   length_penalty))
        return out


_DATE_VOCABS = {"src_vocab_size": 70, "tgt_vocab_size": 15}  # the character vocabularies of data.date_task()


@register_model(task="seq2seq")
def seq2seq_gru(**kw) -> Seq2Seq:
    """GRU encoder-decoder without attention (the context is the last encoder state), sized for the date task.

    Notes: 003 §9.
    """
    return Seq2Seq(**{**_DATE_VOCABS, "attention": "none", **kw})


@register_model(task="seq2seq")
def seq2seq_gru_attention(**kw) -> Seq2Seq:
    """Bidirectional-GRU encoder and GRU decoder with Bahdanau attention, sized for the date task. Notes: 003 §9.2."""
    return Seq2Seq(**{**_DATE_VOCABS, "bidirectional": True, "attention": "bahdanau", **kw})


@register_model(task="seq2seq")
def seq2seq_lstm_luong(**kw) -> Seq2Seq:
    """LSTM encoder-decoder with Luong's general (multiplicative) attention, sized for the date task.

    Notes: 003 §9.2.
    """
    return Seq2Seq(**{**_DATE_VOCABS, "cell": "lstm", "attention": "luong_general", **kw})
