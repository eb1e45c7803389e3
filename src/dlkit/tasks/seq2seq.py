"""Sequence to sequence: teacher-forced training, greedy and beam decoding, exact match (Notes: 003 §9, §9.2;
002 §3.1, §3.1.4; 004 Seq2Seq, TRANSFORMERS).

Contract: a batch is (source ids [B, S] padded with <PAD>, source lengths [B], targets [B, T]) with targets
[<SOS>, t_1..t_n, <EOS>, <PAD>...] (`data.sequence_tasks.SequenceBatches`). The model is a recurrent
`Seq2Seq` (forward(src, tgt_in, src_lengths) -> (logits, attention)) or an encoder-decoder `Transformer`
(forward(src, tgt_in) -> logits). Training is teacher-forced (002 §3.1.4): the decoder reads
[<SOS>, t_1..t_n] and is scored by cross-entropy on [t_1..t_n, <EOS>], <PAD> ignored. Evaluation generates
from <SOS> until <EOS> (003 §9), greedily and, with `beam_width` > 1, by beam search too, and reports the
teacher-forced loss in nats per target token over the whole split, exact match (whole sequences, <EOS>
included) and token accuracy (position by position).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.task import Task
from ..errors import ConfigError
from ..metrics.meter import Mean
from ..metrics.sequence import ExactMatch, TokenAccuracy
from ..models.sequence.seq2seq import Seq2Seq, beam_search
from .optimization import build_optimizers


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP and torch.compile wrappers (to ask what it is; call the wrapper to train)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def at_least_fp32(x: Tensor) -> Tensor:
    """`x` in float32 if it is in a half-precision type (bf16 autocast), else as it is."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def until_eos(row: Tensor | list[int], eos_id: int, pad_id: int) -> list[int]:
    """The tokens of a generated row up to and including its first <EOS> (all non-<PAD> tokens if none)."""
    out = []
    for t in row.tolist() if isinstance(row, Tensor) else row:
        if t == eos_id:
            return out + [t]
        if t != pad_id:
            out.append(t)
    return out


def transformer_beam_search(model: nn.Module, src: Tensor, beam_width: int, max_len: int,
                            length_penalty: float = 0.0) -> list[list[int]]:
    """Beam search over an encoder-decoder `Transformer` (Notes: 003 §9; 002 §3.1): for each source row, the
    tokens of the best hypothesis after <SOS> (with its <EOS> if it finished). The generic `beam_search` of
    models/sequence/seq2seq.py runs it; the step state is (prefix [N, t], encoder output, source padding mask)
    and each step decodes the whole prefix again (no key/value cache: the sequences here are short)."""
    memory, kpm = model.encode(src)

    def step(tokens: Tensor, state):
        prefix, mem, mask = state
        ys = torch.cat([prefix, tokens[:, None]], 1)
        return at_least_fp32(model.decode(ys, mem, mask)[:, -1]).log_softmax(-1), (ys, mem, mask), None

    out = []
    for b in range(src.shape[0]):
        state = (src.new_zeros((1, 0)), memory[b: b + 1], kpm[b: b + 1])
        hyps = beam_search(step, state, model.sos_id, model.eos_id, beam_width, max_len, length_penalty)
        out.append(hyps[0].tokens)
    return out


class Seq2SeqTask(Task):
    """Encoder-decoder training and scoring; see the module docstring.

    `cfg` holds the optimizer options (`tasks.optimization`). `beam_width` > 1 adds beam-search exact match and
    token accuracy (`beam_exact_match`, `beam_token_accuracy`) to the greedy ones; `length_penalty` ranks
    hypotheses by log p / len^penalty. Decoding stops at <EOS> or after the longest target of the batch
    (with its <EOS>) plus `decode_margin` tokens. `src_vocab`/`tgt_vocab` turn ids into text for samples.
    """

    @property
    def metric_names(self) -> tuple[str, ...]:
        """What `evaluate` returns (the beam-search scores only with beam_width > 1)."""
        beam = ("beam_exact_match", "beam_token_accuracy") if self.beam_width > 1 else ()
        return ("loss", "exact_match", "token_accuracy", *beam)

    def __init__(self, model: nn.Module, cfg, src_vocab, tgt_vocab, beam_width: int = 1,
                 length_penalty: float = 0.0, decode_margin: int = 2):
        super().__init__(model)
        if not isinstance(beam_width, int) or beam_width < 1:
            raise ConfigError(f"beam_width must be a whole number >= 1 (1: greedy decoding only); got {beam_width!r}")
        if decode_margin < 0:
            raise ConfigError(f"decode_margin must be >= 0; got {decode_margin}")
        self.cfg, self.src_vocab, self.tgt_vocab = cfg, src_vocab, tgt_vocab
        self.beam_width, self.length_penalty, self.decode_margin = beam_width, length_penalty, decode_margin
        core = unwrap(model)
        self.pad_id, self.sos_id, self.eos_id = core.pad_id, core.sos_id, core.eos_id

    # -- training ---------------------------------------------------------------------------------
    def configure_optimizers(self, plan):
        return build_optimizers(self.model.parameters(), self.cfg, plan)

    def logits(self, model: nn.Module, src: Tensor, lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced next-token logits [B, T, V] for decoder inputs tgt_in [B, T] (through `model`'s forward,
        so DDP and torch.compile wrappers see the call)."""
        if isinstance(unwrap(model), Seq2Seq):
            return model(src, tgt_in, lengths)[0]
        return model(src, tgt_in)

    def loss(self, model: nn.Module, src: Tensor, lengths: Tensor, tgt: Tensor, reduction: str = "mean",
             label_smoothing: float | None = None) -> Tensor:
        """Cross-entropy of [t_1..t_n, <EOS>] given [<SOS>, t_1..t_n], <PAD> targets ignored (002 §3.1.4), with the
        model's label smoothing unless `label_smoothing` is given (evaluation scores plain nats: 0)."""
        if tgt.dim() != 2 or tgt.shape[1] < 2:
            raise ConfigError(f"targets must be [B, T] with T >= 2 (<SOS> ... <EOS>); got {tuple(tgt.shape)}")
        logits = self.logits(model, src, lengths, tgt[:, :-1])
        smoothing = getattr(unwrap(model), "label_smoothing", 0.0) if label_smoothing is None else label_smoothing
        return F.cross_entropy(at_least_fp32(logits.reshape(-1, logits.shape[-1])), tgt[:, 1:].reshape(-1),
                               ignore_index=self.pad_id, label_smoothing=smoothing, reduction=reduction)

    def training_step(self, model, batch, ctx):
        src, lengths, tgt = batch
        return {"loss": self.loss(model, src, lengths, tgt)}

    # -- decoding ---------------------------------------------------------------------------------
    def max_len(self, tgt: Tensor) -> int:
        """Tokens to generate at most for a batch of targets: the longest target with its <EOS>, plus the margin."""
        return tgt.shape[1] - 1 + self.decode_margin

    def greedy(self, model: nn.Module, src: Tensor, lengths: Tensor, max_len: int
               ) -> tuple[Tensor, Tensor | None]:
        """Greedy decoding (003 §9): (tokens [B, T'] after <SOS>, <PAD> after <EOS>; attention [B, T', S] of a
        recurrent model with attention, else None)."""
        if isinstance(model, Seq2Seq):
            tokens, _, attn = model.greedy_decode(src, lengths, max_len=max_len)
            return tokens, attn
        return model.greedy_decode(src, max_len=max_len)[:, 1:], None

    def beam(self, model: nn.Module, src: Tensor, lengths: Tensor, max_len: int, beam_width: int | None = None
             ) -> list[list[int]]:
        """Beam search (003 §9): the best hypothesis's tokens after <SOS> per source row (<EOS> included if it
        finished)."""
        k = beam_width or self.beam_width
        if isinstance(model, Seq2Seq):
            hyps = model.beam_search(src, k, max_len, self.length_penalty, src_lengths=lengths)
            return [h[0].tokens for h in hyps]
        return transformer_beam_search(model, src, k, max_len, self.length_penalty)

    def _truths(self, tgt: Tensor) -> list[list[int]]:
        return [until_eos(row, self.eos_id, self.pad_id) for row in tgt[:, 1:]]

    def evaluate(self, model, data):
        model = unwrap(model)
        device = next(model.parameters()).device
        loss, exact, tokens = Mean(), ExactMatch(), TokenAccuracy(self.pad_id)
        beam_exact, beam_tokens = ExactMatch(), TokenAccuracy(self.pad_id)
        decoded = []
        for src, lengths, tgt in data:
            src, lengths, tgt = src.to(device), lengths.to(device), tgt.to(device)
            n_tokens = int((tgt[:, 1:] != self.pad_id).sum())
            loss.update(self.loss(model, src, lengths, tgt, "sum", label_smoothing=0.0) / max(n_tokens, 1), n_tokens)
            truths = self._truths(tgt)
            guess, attn = self.greedy(model, src, lengths, self.max_len(tgt))
            decoded.append((src, lengths, tgt, guess, attn))
            exact.update([until_eos(g, self.eos_id, self.pad_id) for g in guess], truths)
            tokens.update(guess, tgt[:, 1:])
            if self.beam_width > 1:
                found = self.beam(model, src, lengths, self.max_len(tgt))
                beam_exact.update([until_eos(g, self.eos_id, self.pad_id) for g in found], truths)
                width = max(len(f) for f in found)
                padded = torch.full((len(found), width), self.pad_id, dtype=torch.long, device=device)
                for i, f in enumerate(found):
                    padded[i, : len(f)] = torch.tensor(f, dtype=torch.long)
                beam_tokens.update(padded, tgt[:, 1:])
        self._decoded = (self._weights_key(model, data), decoded)  # the report reuses them (`figures`)
        out = {"loss": loss.compute(), "exact_match": exact.compute(), "token_accuracy": tokens.compute()}
        if self.beam_width > 1:
            out.update(beam_exact_match=beam_exact.compute(), beam_token_accuracy=beam_tokens.compute())
        return out

    # -- report -----------------------------------------------------------------------------------
    @staticmethod
    def _weights_key(model: nn.Module, data) -> tuple:
        """Which weights (every parameter's in-place version counter: optimizer steps and load_state_dict bump
        it) decoded which data: the key under which `evaluate` keeps its greedy outputs for the report."""
        return id(model), id(data), tuple(p._version for p in model.parameters())

    def _decode_all(self, model: nn.Module, data) -> list[tuple]:
        """(src, lengths, tgt, greedy tokens, attention) per batch: the last evaluation's if it decoded `data` with
        these weights, else decoded now."""
        key, decoded = getattr(self, "_decoded", (None, None))
        if key == self._weights_key(model, data):
            return decoded
        device = next(model.parameters()).device
        out = []
        for src, lengths, tgt in data:
            src, lengths, tgt = src.to(device), lengths.to(device), tgt.to(device)
            out.append((src, lengths, tgt, *self.greedy(model, src, lengths, self.max_len(tgt))))
        return out

    def figures(self, run_dir: Path, model, data) -> list[Path]:
        """samples.txt (the first 20 sources with their greedy outputs, then the wrong ones), and the attention of
        the first examples: attention_maps.png (recurrent model with attention) or cross_attention_layerN.png
        (Transformer: decoder-encoder attention of each layer, averaged over heads; 002 §3.1.4)."""
        from ..report.figures import plot_attention_maps

        if data is None:
            return []
        model = unwrap(model)
        device = next(model.parameters()).device
        figs, paths = run_dir / "figures", []
        rows, wrong, first = [], [], None
        for src, lengths, tgt, guess, attn in self._decode_all(model, data):
            if first is None:
                first = (src, lengths, guess, attn)
            for s, n, g, t in zip(src.cpu(), lengths.tolist(), guess.cpu(), tgt.cpu()):
                source, out, truth = (self.src_vocab.to_text(s[:n]), self.tgt_vocab.to_text(g),
                                      self.tgt_vocab.to_text(t))
                rows.append(f"{source!r} -> {out!r}")
                if until_eos(g, self.eos_id, self.pad_id) != until_eos(t[1:], self.eos_id, self.pad_id):
                    wrong.append(f"{source!r} -> {out!r} (expected {truth!r})")
        (run_dir / "samples.txt").write_text("\n".join(rows[:20] + ["", f"{len(wrong)} wrong:"] + wrong[:50]) + "\n")
        paths.append(run_dir / "samples.txt")
        if first is None:
            return paths
        src, lengths, guess, attn = first
        k = min(4 if isinstance(model, Seq2Seq) else 3, len(src))
        src_labels = [[self.src_vocab.itos[t] for t in src[i, : int(lengths[i])].tolist()] for i in range(k)]
        out_labels = [[self.tgt_vocab.itos[t] for t in until_eos(g, self.eos_id, self.pad_id)] for g in guess[:k]]
        if isinstance(model, Seq2Seq):
            if attn is not None:
                maps = [attn[i, : len(out_labels[i]), : int(lengths[i])].float().cpu().numpy() for i in range(k)]
                paths.append(plot_attention_maps(maps, src_labels, out_labels, figs / "attention_maps.png"))
            return paths
        dec_in = torch.cat([torch.full((k, 1), self.sos_id, dtype=torch.long, device=device), guess[:k, :-1]], 1)
        for layer, a in enumerate(model.cross_attention_maps(src[:k], dec_in)):
            maps = [a[i].mean(0)[: len(out_labels[i]), : int(lengths[i])].float().cpu().numpy() for i in range(k)]
            paths.append(plot_attention_maps(maps, src_labels, out_labels,
                                             figs / f"cross_attention_layer{layer + 1}.png"))
        return paths
