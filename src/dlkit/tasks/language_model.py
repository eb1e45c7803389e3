"""Language modelling: next-token cross-entropy, the whole-split validation loss, generated samples
(Notes: 004 RNN/LSTM, 004 GPT, 002 §3.1-3.1.4, 000 §5.2).

Contract: `model(x [B, T])` returns logits [B, T, V], or (logits, state) for a recurrent model; a training
batch is (x, y) with y = x shifted left by one (`data.char_lm.RandomWindows`). The evaluation data is the id
tensor of a split (1-D, integer): it is cut into consecutive non-overlapping windows of `block_size`
predictions (`data.char_lm.split_windows`), so every token after the first is predicted exactly once and

    loss = - (1 / (N - 1)) sum_{i=2..N} log p(x_i | the tokens before x_i in its window)   (nats per token)

is a deterministic number (nanoGPT estimates it from a few random batches); bits per character = loss / ln 2.
The sum is a `metrics.meter.Mean` weighted by token counts, so under DDP each rank scores its share of the
windows and the ranks' sums are added. The validation passes run in float32 even when training uses bf16.
The optimizer is AdamW over the model's `param_groups(weight_decay)` where it has them (GPT: decay the
matrices only, as nanoGPT does), else over all its parameters, with linear warm-up then cosine decay
(`optim.WarmupCosineLR`, nanoGPT's `get_lr`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.char_lm import split_windows
from ..engine.callbacks import Callback
from ..engine.task import Task, TrainingPlan
from ..errors import ConfigError
from ..metrics.meter import Mean
from ..optim import WarmupCosineLR, create_optimizer


def logits_of(out) -> Tensor:
    """The logits of a language model's output: recurrent models return (logits, state)."""
    return out[0] if isinstance(out, tuple) else out


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / torch.compile wrappers (to read attributes such as `generate`)."""
    while isinstance(getattr(model, "_orig_mod", None) or getattr(model, "module", None), nn.Module):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


class LanguageModelTask(Task):
    """Next-token prediction (Notes: 004 GPT, 004 RNN/LSTM): cross-entropy of the logits at t against token t+1.

    Optimizer: AdamW(lr, betas, weight_decay) (torch's fused kernel where `fused`), scheduled by WarmupCosineLR
    (`warmup_steps` of linear warm-up, cosine decay to `min_lr` at `lr_decay_steps`, the run's length when None).
    Evaluation: `loss` (nats per token over the whole split) and `bits_per_char`. Figures: samples.txt with
    `num_samples` continuations of `prompt` (`sample_chars` tokens at `temperature`, top-k where the model's
    `generate` takes it), decoded with `vocab`, headed by `title`.
    """

    metric_names = ("loss", "bits_per_char")

    def __init__(self, model: nn.Module, *, block_size: int, lr: float, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, warmup_steps: int = 0, lr_decay_steps: int | None = None,
                 min_lr: float = 0.0, fused: bool = True, eval_batch_size: int = 128, vocab=None,
                 num_samples: int = 3, sample_chars: int = 500, temperature: float = 0.8, top_k: int | None = None,
                 prompt: str = "\n", seed: int = 0, title: str = "language model"):
        super().__init__(model)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (block_size, eval_batch_size)):
            raise ConfigError(f"block_size and eval_batch_size must be whole numbers >= 1; got {block_size!r} and "
                              f"{eval_batch_size!r}")
        self.block_size, self.lr, self.betas, self.weight_decay = block_size, lr, tuple(betas), weight_decay
        self.warmup_steps, self.lr_decay_steps, self.min_lr, self.fused = warmup_steps, lr_decay_steps, min_lr, fused
        self.eval_batch_size, self.vocab, self.num_samples, self.sample_chars = eval_batch_size, vocab, num_samples, \
            sample_chars
        self.temperature, self.top_k, self.prompt, self.seed, self.title = temperature, top_k, prompt, seed, title
        self.last_loss: float | None = None  # the latest evaluation, for the samples' header
        self.eval_seconds = 0.0              # time spent in evaluate (to report the training speed alone)

    def configure_optimizers(self, plan: TrainingPlan):
        groups = self.model.param_groups(self.weight_decay) if hasattr(self.model, "param_groups") \
            else [p for p in self.model.parameters() if p.requires_grad]
        opt = create_optimizer("adamw", groups, lr=self.lr, weight_decay=self.weight_decay, betas=self.betas,
                               fused=self.fused)
        total = self.lr_decay_steps if self.lr_decay_steps is not None else plan.total_steps
        if not 0 <= self.warmup_steps <= total:
            raise ConfigError(f"warmup_steps must be in [0, lr_decay_steps = {total}]; got {self.warmup_steps}. "
                              "Lower warmup_steps or raise lr_decay_steps")
        return [opt], [WarmupCosineLR(opt, warmup_steps=self.warmup_steps, total_steps=total, eta_min=self.min_lr)]

    def training_step(self, model, batch, ctx):
        x, y = batch
        logits = logits_of(model(x))  # through the module's __call__, so DDP and torch.compile see the forward
        return {"loss": F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))}

    def _windows(self, data: Tensor) -> list[tuple[Tensor, Tensor]]:
        """This rank's batches of the split's non-overlapping windows (all of them in one process)."""
        x, y, x_tail, y_tail = split_windows(torch.as_tensor(data), self.block_size)
        b = self.eval_batch_size
        chunks = [(x[i:i + b], y[i:i + b]) for i in range(0, len(x), b)]
        if y_tail.numel():
            chunks.append((x_tail, y_tail))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            chunks = chunks[dist.get_rank()::dist.get_world_size()]
        return chunks

    @torch.no_grad()
    def evaluate(self, model, data):
        """Loss in nats per token over every token of the split `data` (a 1-D id tensor), and bits per char."""
        if not isinstance(data, torch.Tensor) or data.dim() != 1:
            got = f"a tensor of shape {list(data.shape)}" if isinstance(data, torch.Tensor) else type(data).__name__
            raise ConfigError(f"{type(self).__name__} evaluates a whole split given as one 1-D tensor of token ids "
                              f"(every window of it is scored); got {got}")
        t0 = time.perf_counter()
        device = next(model.parameters()).device
        loss = Mean()
        with torch.autocast(device.type, enabled=False):  # the validation passes run in float32
            for xb, yb in self._windows(data):
                logits = logits_of(model(xb.to(device))).float()
                total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.to(device).reshape(-1),
                                        reduction="sum")
                loss.update(total.double() / yb.numel(), yb.numel())  # weight = tokens: the Mean is sum / count
        value = loss.compute()
        self.last_loss = value
        self.eval_seconds += time.perf_counter() - t0
        return {"loss": value, "bits_per_char": value / math.log(2)}

    @torch.no_grad()
    def generate_text(self, model, generator: torch.Generator) -> str:
        """One continuation of the prompt, decoded (the prompt itself is left out)."""
        if self.vocab is None:
            raise ConfigError("LanguageModelTask needs a vocab to write samples; pass vocab=...")
        model = _unwrap(model)
        device = next(model.parameters()).device
        prompt = self.vocab.encode(self.prompt)[None].to(device)
        kw = {"top_k": self.top_k} if self.top_k is not None else {}
        out = model.generate(prompt, self.sample_chars, self.temperature, generator=generator, **kw)
        return self.vocab.decode(out[0, prompt.shape[1]:].cpu())

    def figures(self, run_dir: Path, model, data) -> list[Path]:
        """samples.txt: `num_samples` continuations drawn with a generator seeded by `seed`."""
        if self.vocab is None or self.num_samples < 1:
            return []
        device = next(model.parameters()).device
        g = torch.Generator(device=device).manual_seed(self.seed)
        texts = [self.generate_text(model, g) for _ in range(self.num_samples)]
        loss = f", validation loss {self.last_loss:.4f} nats/char" if self.last_loss is not None else ""
        top_k = f", top-k {self.top_k}" if self.top_k is not None else ""
        header = f"{self.title}{loss}; samples at temperature {self.temperature:g}{top_k}"
        sep = "\n" + "-" * 60 + "\n"
        path = Path(run_dir) / "samples.txt"
        path.write_text(header + sep + sep.join(texts) + "\n")
        return []  # samples.txt is not a picture; the report shows samples*.txt itself


class Throughput(Callback):
    """Training speed into `out` at the end of a run: iterations_per_second and tokens_per_second over the
    training steps of this process's session, without the time `task` spent evaluating (Notes: 000 §5.3)."""

    def __init__(self, task: LanguageModelTask, tokens_per_step: int, out: dict):
        self.task, self.tokens_per_step, self.out = task, tokens_per_step, out
        self.start_step, self.eval_start, self.start_seconds = 0, 0.0, 0.0

    def on_train_start(self, trainer) -> None:
        self.start_step, self.eval_start = trainer.step, self.task.eval_seconds
        self.start_seconds = trainer.seconds_trained()  # a resumed run's earlier segments: not this one's speed

    def on_fit_end(self, trainer) -> None:
        steps = trainer.step - self.start_step
        elapsed = trainer.train_seconds - self.start_seconds
        seconds = elapsed - (self.task.eval_seconds - self.eval_start)
        if steps > 0 and seconds > 0:
            self.out.update(train_seconds=round(seconds, 3), eval_seconds=round(elapsed - seconds, 3),
                            iterations_per_second=steps / seconds,
                            tokens_per_second=steps * self.tokens_per_step / seconds)
