"""Character language models on Tiny Shakespeare: an LSTM (char-rnn) and nanoGPT's small CPU GPT.

Notes: 004 RNN/LSTM, 004 GPT, 000 §5.2, 002 §3.1-3.1.4. Both read the 90/10 contiguous split of
`dlkit.data.char_lm`, train through the Trainer on an endless stream of random windows gathered from the
in-memory id tensor (`max_steps` long; under torchrun every process takes its rows of the same global batch),
and report the validation loss in nats per character over the whole validation split (every character
predicted once, windows of the training length; `dlkit.tasks.language_model`). Generated text goes to
samples.txt, the loss curves to figures/curve_loss.png.

`char-gpt-shakespeare` is nanoGPT's `config/train_shakespeare_char.py` with the README's CPU overrides: 4 layers,
4 heads, 128 wide, block 64, batch 12, dropout 0, no biases, 2000 steps; AdamW lr 1e-3, betas (0.9, 0.99),
weight decay 0.1 on the matrices, linear warm-up over 100 steps then cosine decay to 1e-4 at 2000, gradient
clipping at norm 1.

nanoGPT's full baby GPT (6 layers, 6 heads, 384 wide, block 256, dropout 0.2) on a GPU, in bf16 with
torch.compile, is the same recipe with options:

    dlkit run char-gpt-shakespeare --device cuda --set n_layer=6 n_head=6 n_embd=384 block_size=256 \
        batch_size=64 dropout=0.2 max_steps=5000 lr_decay_steps=5000 bf16=true compile=true
"""

from __future__ import annotations

import torch

from ..data.char_lm import CharCorpus, RandomWindows, char_corpus
from ..data.text import load_tiny_shakespeare
from ..errors import ConfigError
from ..registry import create_model
from ..runs import model_spec
from ..tasks.language_model import LanguageModelTask, Throughput
from .registry import Recipe, Setup, register_recipe


def _corpus(cfg, dist) -> CharCorpus:
    """The 90/10 character split of Tiny Shakespeare (its first `cfg.subset` characters if set), on the device
    this process trains on."""
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {cfg.device!r} was asked for but no CUDA GPU is visible; use --device cpu")
    device = f"cuda:{dist.local_rank}" if cfg.device == "cuda" and dist.enabled else cfg.device
    text = load_tiny_shakespeare(cfg.data_dir)
    corpus = char_corpus(text[: cfg.subset] if cfg.subset else text, cfg.val_fraction)
    return CharCorpus(corpus.vocab, corpus.train.to(device), corpus.val.to(device))


def _setup(cfg, dist, corpus: CharCorpus, name: str, kwargs: dict, block_size: int, title: str,
           top_k: int | None = None) -> Setup:
    """The Setup both recipes share: the model `name(**kwargs)`, the LM task, random windows, throughput."""
    option = "seq_len" if "seq_len" in cfg else "block_size"
    split, shortest = min((len(corpus.train), "training"), (len(corpus.val), "validation"))[::-1]
    if block_size >= shortest:
        raise ConfigError(f"{option}={block_size}: a window of {option} predictions needs {option} + 1 tokens, and "
                          f"the {split} text has {shortest}; use a smaller {option}, or more text (subset=0: all)")
    model = create_model(name, **kwargs)
    task = LanguageModelTask(
        model, block_size=block_size, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps, lr_decay_steps=cfg.lr_decay_steps, min_lr=cfg.min_lr,
        eval_batch_size=cfg.eval_batch_size, vocab=corpus.vocab, num_samples=cfg.num_samples,
        sample_chars=cfg.sample_chars, temperature=cfg.temperature, top_k=top_k, seed=cfg.seed, title=title)
    train = RandomWindows(corpus.train, cfg.batch_size, block_size, seed=cfg.seed, rank=dist.rank,
                          world_size=dist.world_size)
    extra = {"parameters": sum(p.numel() for p in model.parameters())}
    return Setup(task, train, corpus.val, extra=extra, callbacks=[Throughput(task, cfg.batch_size * block_size, extra)],
                 model_spec=model_spec(name, kwargs, class_names=corpus.vocab.chars))


LM_DEFAULTS = dict(val_fraction=0.1, subset=0, eval_every_steps=500, eval_batch_size=128, log_every=10,
                   num_samples=3, sample_chars=500, temperature=0.8, grad_clip_norm=1.0)
LM_TYPES = {"grad_clip_norm": "float | None", "lr_decay_steps": "int | None", "top_k": "int | None"}


# ----------------------------------------------------------------------------- char-lstm-shakespeare


def _char_lstm(cfg, dist):
    corpus = _corpus(cfg, dist)
    kwargs = dict(vocab_size=len(corpus.vocab), embed_dim=cfg.embed_dim, hidden_size=cfg.hidden_size,
                  num_layers=cfg.num_layers, dropout=cfg.dropout)
    title = f"{cfg.num_layers}-layer LSTM ({cfg.hidden_size} units), {cfg.max_steps} steps"
    return _setup(cfg, dist, corpus, "char_lstm", kwargs, cfg.seq_len, title)


register_recipe(Recipe(
    name="char-lstm-shakespeare", task="sequence", notes="004 RNN/LSTM, 000 §5.2, 003 §8",
    description="Character-level 2-layer LSTM language model on Tiny Shakespeare (Karpathy's char-rnn); "
                "whole-split validation loss and generated text",
    # measured 1.6000 nats/char (seed 0; the verify run: 1500 iterations at 11.1 it/s, 143 s in all on 2 cores)
    build=_char_lstm, metric="val/loss", threshold=1.65, higher_is_better=False, budget_s=300,
    defaults=dict(LM_DEFAULTS, embed_dim=64, hidden_size=256, num_layers=2, dropout=0.0, seq_len=64, batch_size=32,
                  max_steps=1500, lr=3e-3, min_lr=3e-4, warmup_steps=50, lr_decay_steps=1500, weight_decay=0.0,
                  beta1=0.9, beta2=0.99),
    smoke=dict(max_steps=6, eval_every_steps=3, log_every=2, subset=20_000, hidden_size=32, num_layers=1,
               batch_size=4, seq_len=16, lr_decay_steps=6, warmup_steps=2, num_samples=1, sample_chars=40),
    datasets=("tinyshakespeare",), types=LM_TYPES,
))


# ----------------------------------------------------------------------------- char-gpt-shakespeare


def _char_gpt(cfg, dist):
    corpus = _corpus(cfg, dist)
    kwargs = dict(vocab_size=len(corpus.vocab), block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                  n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias)
    title = (f"GPT {cfg.n_layer} layers x {cfg.n_head} heads x {cfg.n_embd}, block {cfg.block_size}, "
             f"{cfg.max_steps} steps")
    return _setup(cfg, dist, corpus, "gpt_char_small", kwargs, cfg.block_size, title, top_k=cfg.top_k)


register_recipe(Recipe(
    name="char-gpt-shakespeare", task="sequence", notes="004 GPT, 002 §3.1-3.1.4, 000 §5.3",
    description="nanoGPT's CPU character GPT (4 layers, 4 heads, 128 wide, block 64, 2000 steps) on Tiny "
                "Shakespeare; whole-split validation loss, speed and generated text",
    # measured 1.8964 nats/char with seed 0 (the verify run on a 2-core AVX2 EPYC: 2000 iterations at 18.4 it/s,
    # 128 s in all); the config's spread over seeds is about +-0.015 (before the fused QKV product, seed 1: 1.9207,
    # seed 2: 1.9041), so 1.90 is met by seed 0 only narrowly. nanoGPT's README quotes ~1.88 from 20 random
    # validation batches, a noisier estimate.
    build=_char_gpt, metric="val/loss", threshold=1.90, higher_is_better=False, budget_s=180,
    defaults=dict(LM_DEFAULTS, n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0,
                  bias=False, max_steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100, lr_decay_steps=2000,
                  weight_decay=0.1, beta1=0.9, beta2=0.99, top_k=200),
    smoke=dict(max_steps=6, eval_every_steps=3, log_every=2, subset=20_000, n_layer=1, n_head=2, n_embd=32,
               block_size=16, batch_size=4, lr_decay_steps=6, warmup_steps=2, num_samples=1, sample_chars=40),
    datasets=("tinyshakespeare",), types=LM_TYPES,
))
