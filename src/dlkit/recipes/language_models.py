"""Character language models on Tiny Shakespeare: an LSTM (char-rnn) and nanoGPT's small CPU GPT.

Notes: 004 RNN/LSTM, 004 GPT, 000 §5.2, 002 §3.1-3.1.4. Both read the 90/10 contiguous split of
`dlkit.data.char_lm`, train on random windows gathered from the in-memory id tensor, and report the validation
loss in nats per character over the whole validation split (every character predicted once, windows of the
training length). Generated text goes to samples.txt, the loss curves to figures/curve_loss.png.

`char-gpt-shakespeare` is nanoGPT's `config/train_shakespeare_char.py` with the README's CPU overrides: 4 layers,
4 heads, 128 wide, block 64, batch 12, dropout 0, no biases, 2000 iterations; AdamW lr 1e-3, betas (0.9, 0.99),
weight decay 0.1 on the matrices, linear warm-up over 100 iterations then cosine decay to 1e-4 at 2000, gradient
clipping at norm 1.

nanoGPT's full baby GPT (6 layers, 6 heads, 384 wide, block 256, dropout 0.2) on a GPU, in bf16 with
torch.compile, is the same recipe with options:

    dlkit run char-gpt-shakespeare --device cuda --set n_layer=6 n_head=6 n_embd=384 block_size=256 \
        batch_size=64 dropout=0.2 iters=5000 lr_decay_iters=5000 bf16=true compile=true
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data.char_lm import CharCorpus, RandomWindows, char_corpus, split_loss
from ..data.text import load_tiny_shakespeare
from ..engine.gradient_step import gradient_step
from ..engine.logger import MetricLogger, echo
from ..engine.machine import resolve_bf16
from ..errors import ConfigError, TrainingDiverged
from ..models.sequence.char_rnn import CharRNN
from ..models.sequence.gpt import GPT
from ..optim import WarmupCosineLR, create_optimizer
from ..report.figures import plot_lines
from .options import Config
from .registry import Recipe, Study, register_recipe


def _corpus(cfg: Config, device: torch.device) -> CharCorpus:
    """The 90/10 character split of Tiny Shakespeare (its first `cfg.subset` characters if set) on `device`."""
    text = load_tiny_shakespeare(cfg.data_dir)
    corpus = char_corpus(text[: cfg.subset] if cfg.subset else text, cfg.val_fraction)
    return CharCorpus(corpus.vocab, corpus.train.to(device), corpus.val.to(device))


def _device(cfg: Config) -> torch.device:
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device(cfg.device)


def train_char_lm(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], opt: torch.optim.Optimizer,
                  sched, corpus: CharCorpus, cfg: Config, run_dir: Path, block_size: int) -> dict[str, float]:
    """The loop shared by both recipes: `cfg.iters` steps on random windows, whole-split validation every
    `cfg.eval_every` steps and at the end. The loss is read on the host only every `cfg.log_every` steps.
    `cfg.bf16` (true, false or auto) runs the forward pass and loss under bf16 autocast; weights, gradients and
    the optimizer stay fp32, and the validation passes run in fp32.

    Returns val/loss, train/loss (mean of the last logging interval), steps, train_seconds (the training steps
    alone, without the validation passes), eval_seconds and iterations_per_second = steps / train_seconds.
    """
    batches = RandomWindows(corpus.train, cfg.batch_size, block_size, seed=cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    logger = MetricLogger(run_dir, tensorboard=cfg.tensorboard)
    train_curve, val_curve, pending = [], [], []
    train_s = eval_s = 0.0
    t0 = time.perf_counter()
    device_type = corpus.train.device.type
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=resolve_bf16(cfg.bf16, device_type))
    model.train()
    for step in range(1, cfg.iters + 1):
        x, y = next(batches)
        with autocast:  # the forward pass and loss in bf16 where asked (weights, gradients, optimizer: fp32)
            loss = loss_fn(x, y)
        pending.append(gradient_step(loss, opt, cfg.grad_clip_norm or None, sched))
        if step % cfg.log_every == 0 or step == cfg.iters:
            value = torch.stack(pending).mean().item()  # the only host read of the loss
            pending.clear()
            if not math.isfinite(value):
                raise TrainingDiverged(f"the training loss is {value} at step {step}; lower lr (now {cfg.lr:g}) "
                                       "or clip gradients harder (grad_clip_norm)")
            train_curve.append((step, value))
            logger.log(step, 0, {"train/loss": value, "lr": opt.param_groups[0]["lr"]})
        if step % cfg.eval_every == 0 or step == cfg.iters:
            t1 = time.perf_counter()
            train_s += t1 - t0
            val = split_loss(model, corpus.val, block_size, cfg.eval_batch_size)
            val_curve.append((step, val))
            logger.log(step, 0, {"val/loss": val})
            t0 = time.perf_counter()
            eval_s += t0 - t1
            echo(f"step {step}/{cfg.iters}: train loss {train_curve[-1][1]:.4f}, val loss {val:.4f} nats/char "
                 f"({step / train_s:.1f} it/s)", cfg.progress)
    logger.close()
    plot_lines({"train (mean over the logging interval)": tuple(zip(*train_curve)),
                "validation (whole split)": tuple(zip(*val_curve))}, run_dir / "figures" / "curve_loss.png",
               "iteration", "cross-entropy (nats per character)", title="character LM loss")
    return {"val/loss": val_curve[-1][1], "val/bits_per_char": val_curve[-1][1] / math.log(2),
            "train/loss": train_curve[-1][1], "steps": cfg.iters, "train_seconds": train_s, "eval_seconds": eval_s,
            "iterations_per_second": cfg.iters / train_s, "tokens_per_second": cfg.iters * cfg.batch_size
            * block_size / train_s, "parameters": sum(p.numel() for p in params)}


def write_samples(run_dir: Path, corpus: CharCorpus, generate: Callable[[Tensor, torch.Generator], Tensor],
                  cfg: Config, device: torch.device, header: str) -> None:
    """`cfg.num_samples` continuations of a newline prompt (nanoGPT's sample.py start) into samples.txt."""
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    prompt = corpus.vocab.encode("\n")[None].to(device)
    texts = [corpus.vocab.decode(generate(prompt, g)[0, 1:].cpu()) for _ in range(cfg.num_samples)]
    sep = "\n" + "-" * 60 + "\n"
    (run_dir / "samples.txt").write_text(header + sep + sep.join(texts) + "\n")


def _schedule(opt, cfg: Config) -> WarmupCosineLR:
    return WarmupCosineLR(opt, warmup_steps=cfg.warmup_iters, total_steps=cfg.lr_decay_iters, eta_min=cfg.min_lr)


LM_DEFAULTS = dict(val_fraction=0.1, subset=0, eval_every=500, eval_batch_size=128, log_every=10, num_samples=3,
                   sample_chars=500, temperature=0.8, grad_clip_norm=1.0, bf16=False, compile=False, tensorboard=True)


# ----------------------------------------------------------------------------- char-lstm-shakespeare


def _char_lstm(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        device = _device(cfg)
        corpus = _corpus(cfg, device)
        torch.manual_seed(cfg.seed)
        model = CharRNN(len(corpus.vocab), cfg.embed_dim, cfg.hidden_size, cfg.num_layers, cell="lstm",
                        dropout=cfg.dropout).to(device)
        opt = create_optimizer("adamw", model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                               betas=(cfg.beta1, cfg.beta2), fused=True)

        def loss_fn(x, y):
            return model.loss(x, y)[0]

        metrics = train_char_lm(model, torch.compile(loss_fn) if cfg.compile else loss_fn, opt,
                                _schedule(opt, cfg), corpus, cfg, run_dir, cfg.seq_len)
        header = (f"{cfg.num_layers}-layer LSTM ({cfg.hidden_size} units), {cfg.iters} iterations, validation loss "
                  f"{metrics['val/loss']:.4f} nats/char; samples at temperature {cfg.temperature:g}")
        write_samples(run_dir, corpus, lambda p, g: model.generate(p, cfg.sample_chars, cfg.temperature, generator=g),
                      cfg, device, header)
        return metrics
    return Study(run)


register_recipe(Recipe(
    name="char-lstm-shakespeare", task="sequence", notes="004 RNN/LSTM, 000 §5.2, 003 §8",
    description="Character-level 2-layer LSTM language model on Tiny Shakespeare (Karpathy's char-rnn); "
                "whole-split validation loss and generated text",
    # measured 1.6000 nats/char (seed 0; the verify run: 1500 iterations at 11.1 it/s, 143 s in all on 2 cores)
    build=_char_lstm, metric="val/loss", threshold=1.65, higher_is_better=False, budget_s=300,
    study=True,
    defaults=dict(LM_DEFAULTS, embed_dim=64, hidden_size=256, num_layers=2, dropout=0.0, seq_len=64, batch_size=32,
                  iters=1500, lr=3e-3, min_lr=3e-4, warmup_iters=50, lr_decay_iters=1500, weight_decay=0.0,
                  beta1=0.9, beta2=0.99),
    smoke=dict(iters=6, eval_every=3, log_every=2, subset=20_000, hidden_size=32, num_layers=1, batch_size=4,
               seq_len=16, lr_decay_iters=6, warmup_iters=2, num_samples=1, sample_chars=40),
    datasets=("tinyshakespeare",),
))


# ----------------------------------------------------------------------------- char-gpt-shakespeare


def _char_gpt(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        device = _device(cfg)
        corpus = _corpus(cfg, device)
        torch.manual_seed(cfg.seed)
        model = GPT(len(corpus.vocab), cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.dropout,
                    bias=cfg.bias).to(device)
        opt = create_optimizer("adamw", model.param_groups(cfg.weight_decay), lr=cfg.lr,
                               betas=(cfg.beta1, cfg.beta2), fused=True)
        loss_fn = torch.compile(model.loss) if cfg.compile else model.loss
        metrics = train_char_lm(model, loss_fn, opt, _schedule(opt, cfg), corpus, cfg, run_dir, cfg.block_size)
        header = (f"GPT {cfg.n_layer} layers x {cfg.n_head} heads x {cfg.n_embd}, block {cfg.block_size}, "
                  f"{cfg.iters} iterations, validation loss {metrics['val/loss']:.4f} nats/char; samples at "
                  f"temperature {cfg.temperature:g}, top-k {cfg.top_k}")
        write_samples(run_dir, corpus, lambda p, g: model.generate(p, cfg.sample_chars, cfg.temperature, cfg.top_k,
                                                                   generator=g), cfg, device, header)
        return metrics
    return Study(run)


register_recipe(Recipe(
    name="char-gpt-shakespeare", task="sequence", notes="004 GPT, 002 §3.1-3.1.4, 000 §5.3",
    description="nanoGPT's CPU character GPT (4 layers, 4 heads, 128 wide, block 64, 2000 iterations) on Tiny "
                "Shakespeare; whole-split validation loss, speed and generated text",
    # measured 1.8964 nats/char with seed 0 (the verify run on a 2-core AVX2 EPYC: 2000 iterations at 18.4 it/s,
    # 128 s in all); the config's spread over seeds is about +-0.015 (before the fused QKV product, seed 1: 1.9207,
    # seed 2: 1.9041), so 1.90 is met by seed 0 only narrowly. nanoGPT's README quotes ~1.88 from 20 random
    # validation batches, a noisier estimate.
    build=_char_gpt, metric="val/loss", threshold=1.90, higher_is_better=False, budget_s=180,
    study=True,
    defaults=dict(LM_DEFAULTS, n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0,
                  bias=False, iters=2000, lr=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=2000,
                  weight_decay=0.1, beta1=0.9, beta2=0.99, top_k=200),
    smoke=dict(iters=6, eval_every=3, log_every=2, subset=20_000, n_layer=1, n_head=2, n_embd=32, block_size=16,
               batch_size=4, lr_decay_iters=6, warmup_iters=2, num_samples=1, sample_chars=40),
    datasets=("tinyshakespeare",),
))
