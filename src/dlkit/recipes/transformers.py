"""Transformer recipes: a Vision Transformer on MNIST, the encoder-decoder Transformer on sequence reversal, and
BERT pre-trained on Tiny Shakespeare then fine-tuned (Notes: 002 §3.1-§3.2, 000 §5.3, 004 TRANSFORMERS, BERT,
VISUAL TRANSFORMERS).

- `vit-mnist` trains `vit_tiny_mnist` (7 x 7 patches, 16 tokens + [CLS]) through the Trainer like the other
  classification recipes (AdamW, warm-up then cosine) and adds the notes' ViT analyses to the report: the
  cosine similarity of the learned position embeddings (002 Fig. 3.9) and the mean attention distance of every
  head (Fig. 3.10).
- `transformer-copy` teaches `transformer_tiny` to reverse (or copy) strings of letters with teacher forcing
  and scores greedy decoding to <EOS> on held-out strings (exact match); the cross-attention of the decoder
  shows the alignment (for reversal, an anti-diagonal).
- `bert-mlm-shakespeare` pre-trains a 64-wide `bert_tiny` on the characters of Tiny Shakespeare's spoken lines
  (lower-cased) with masked LM (15%, 80/10/10) plus next-sentence prediction, scores masked-character accuracy
  on the last 10% of the lines (never trained on) against the unigram baseline, then fine-tunes the encoder with
  a new output layer on a generated task (a real line, or its words shuffled) and compares it with the same
  classifier trained from scratch. Characters, not words: in a CPU budget of minutes the character model gets
  past the initial plateau and learns the context, the word model (`level=word`) hardly does.
"""

from __future__ import annotations

import torch

from ..data.mnist import MNIST_CLASSES, load_mnist
from ..data.sentence_tasks import MaskedLMCorpus, speech_lines
from ..data.sequence_tasks import copy_task, reversal_task
from ..data.splits import in_memory_splits
from ..data.text import load_tiny_shakespeare
from ..data.transforms import RandomCrop, normalise_images
from ..errors import ConfigError
from ..registry import create_model
from ..tasks.masked_lm import FineTuneComparison, MaskedLMTask
from ..tasks.optimization import OPTIMIZER_OPTIONS
from ..tasks.seq2seq import Seq2SeqTask
from ..tasks.vit import ViTClassificationTask
from .options import with_model_kwargs
from .registry import Recipe, Setup, register_recipe

# ----------------------------------------------------------------------------- ViT on MNIST


def _vit_mnist(cfg, dist):
    x_tr, y_tr = load_mnist("train", data_dir=cfg.data_dir)
    x_te, y_te = load_mnist("test", data_dir=cfg.data_dir)
    x_tr, x_te = normalise_images(x_tr, 0.1307, 0.3081), normalise_images(x_te, 0.1307, 0.3081)
    train, val, test, val_name = in_memory_splits(x_tr, y_tr, x_te, y_te, batch_size=cfg.batch_size, seed=cfg.seed,
                                                  dist=dist, val_size=cfg.val_size, subset=cfg.subset)
    if cfg.crop_padding:
        train.transform = RandomCrop(28, padding=cfg.crop_padding, fill=-0.1307 / 0.3081)
    kwargs = with_model_kwargs({"dropout": cfg.dropout}, cfg.model_kwargs)
    model = create_model("vit_tiny_mnist", **kwargs)
    task = ViTClassificationTask(model, cfg, class_names=MNIST_CLASSES, label_smoothing=cfg.label_smoothing)
    spec = {"name": "vit_tiny_mnist", "kwargs": kwargs, "class_names": list(MNIST_CLASSES),
            "input": {"mean": [0.1307], "std": [0.3081], "size": [28, 28], "channels": 1}}
    return Setup(task, train, val, test, val_name=val_name, model_spec=spec,
                 extra={"parameters": sum(p.numel() for p in model.parameters())})


register_recipe(Recipe(
    name="vit-mnist", task="classification", notes="002 §3.2, 004 VISUAL TRANSFORMERS",
    description="Vision Transformer (7x7 patches, 4 layers, 64 wide) on MNIST with AdamW and warm-up + cosine",
    build=_vit_mnist, metric="test/accuracy", threshold=0.975, budget_s=360,
    defaults=dict(OPTIMIZER_OPTIONS, epochs=8, batch_size=64, lr=2e-3, optimizer="adamw", weight_decay=0.05,
                  schedule="warmup_cosine", label_smoothing=0.0, dropout=0.0, crop_padding=0,
                  model_kwargs={"depth": 4}, val_size=5000, subset=0, log_every=100, threads=1),
    # measured on the 2-core CPU (one thread): test 0.9799 after 227-243 s (val 0.927, 0.955, 0.968 after epochs
    # 1-3), 0.9795 in 311 s with the fused QKV product on the slower AVX2 EPYC; 6 epochs give 0.9780 in 195 s,
    # 5 epochs at batch 128 only 0.9702. Two threads are not faster.
    smoke=dict(epochs=1, subset=256), datasets=("mnist",),
))


# ----------------------------------------------------------------------------- Transformer on reversal / copy

SEQUENCE_TASKS = {"reversal": reversal_task, "copy": copy_task}


def _transformer_copy(cfg, dist):
    if cfg.task not in SEQUENCE_TASKS:
        raise ConfigError(f"task must be one of {sorted(SEQUENCE_TASKS)}; got {cfg.task!r}")
    data = SEQUENCE_TASKS[cfg.task](n_train=cfg.n_train, n_test=cfg.n_test, num_symbols=cfg.num_symbols,
                                    min_len=cfg.min_len, max_len=cfg.max_len, seed=cfg.seed)
    vocab = data.src_vocab
    kwargs = with_model_kwargs(dict(src_vocab_size=len(vocab), share_embeddings=True, pad_id=vocab.pad_id,
                                    sos_id=vocab.sos_id, eos_id=vocab.eos_id, max_len=cfg.max_len + 2),
                               cfg.model_kwargs)
    torch.manual_seed(cfg.seed)
    model = create_model("transformer_tiny", **kwargs)
    task = Seq2SeqTask(model, cfg, vocab, vocab, beam_width=cfg.beam_width, decode_margin=0)
    train = data.loader("train", cfg.batch_size, seed=cfg.seed, rank=dist.rank, world_size=dist.world_size)
    return Setup(task, train,
                 val=data.loader("test", cfg.eval_batch_size, shuffle=False, bucket=False), val_name="test",
                 model_spec={"name": "transformer_tiny", "kwargs": kwargs, "class_names": list(vocab.itos),
                             "input": None},  # class_names: the token of each id (one vocabulary for both sides)
                 extra={"sequence_task": cfg.task, "parameters": sum(p.numel() for p in model.parameters())})


register_recipe(Recipe(
    name="transformer-copy", task="sequence", notes="002 §3.1, §3.1.4; 000 §5.3; 004 TRANSFORMERS",
    description="Encoder-decoder Transformer (2 + 2 layers, d 64) reversing strings of 3-8 letters, greedy "
                "decoding to <EOS> on held-out strings (task=copy copies them)",
    build=_transformer_copy, metric="test/exact_match", threshold=0.99, budget_s=180,
    defaults=dict(OPTIMIZER_OPTIONS, task="reversal", n_train=10_000, n_test=1_000, num_symbols=8, min_len=3,
                  max_len=8, model_kwargs={}, optimizer="adamw", lr=1e-3, weight_decay=0.01,
                  schedule="warmup_cosine", warmup_steps=78, batch_size=64, epochs=10, grad_clip_norm=1.0,
                  eval_batch_size=500, beam_width=1, eval_every_epochs=None, threads=1),
    # warm-up over 78 steps = 5% of the 1,570. Measured: exact match 1.000 (0 of 1,000 wrong) after 50 s;
    # 4 epochs: 0.991 in 21 s. The final weights are always scored; eval_every_epochs=1 scores every epoch
    # (~1 s each). beam_width=k > 1 adds test/beam_exact_match.
    smoke=dict(n_train=256, n_test=32, epochs=1, warmup_steps=1),
))


# ----------------------------------------------------------------------------- BERT on Tiny Shakespeare


def _bert_shakespeare(cfg, dist):
    lines = [line.lower() for line in speech_lines(load_tiny_shakespeare(cfg.data_dir))]
    cut = int(len(lines) * (1 - cfg.heldout_fraction))
    train_lines, test_lines = lines[:cut], lines[cut:]
    if cfg.subset:
        train_lines, test_lines = train_lines[: cfg.subset], test_lines[: cfg.subset]
    corpus = MaskedLMCorpus(train_lines, test_lines, cfg.level, cfg.vocab_size)
    kwargs = with_model_kwargs(dict(vocab_size=len(corpus.vocab), dropout=cfg.dropout,
                                    max_position=max(2 * cfg.segment_len + 3, cfg.ft_max_len)), cfg.model_kwargs)
    torch.manual_seed(cfg.seed)
    model = create_model("bert_tiny", **kwargs)
    task = MaskedLMTask(model, cfg, corpus, sample_lines=test_lines[:12], sample_max_len=cfg.ft_max_len)
    fine_tuning = FineTuneComparison(corpus, train_lines, test_lines, lambda: create_model("bert_tiny", **kwargs).bert,
                                     cfg)  # the same body, freshly drawn, for the classifier from scratch
    return Setup(task, corpus.stream(cfg.batch_size, cfg.segment_len, seed=cfg.seed),
                 val=corpus.heldout_batches(cfg.eval_batches, cfg.batch_size, cfg.segment_len, seed=cfg.seed + 1),
                 val_name="test", callbacks=[fine_tuning],
                 model_spec={"name": "bert_tiny", "kwargs": kwargs, "class_names": list(corpus.vocab.itos),
                             "input": None},  # class_names: the token of each id
                 extra={"level": cfg.level, "vocab_size": len(corpus.vocab), "train_tokens": len(corpus.train_ids),
                        "heldout_tokens": len(corpus.test_ids)})


register_recipe(Recipe(
    name="bert-mlm-shakespeare", task="sequence", notes="004 BERT (Training / Fine-tuning BERT), 000 §5.3",
    description="BERT-tiny (2 layers, 64 wide) pre-trained by masked LM + NSP on the characters of Tiny "
                "Shakespeare's spoken lines (last 10% held out), then fine-tuned to tell real lines from "
                "word-shuffled ones, against the same classifier trained from scratch",
    build=_bert_shakespeare, metric="test/masked_accuracy", threshold=0.43, budget_s=420,
    defaults=dict(OPTIMIZER_OPTIONS, level="char", heldout_fraction=0.1, vocab_size=0, segment_len=30,
                  batch_size=64, max_steps=2500, optimizer="adamw", lr=2e-3, weight_decay=0.01,
                  schedule="warmup_cosine", warmup_steps=-1, grad_clip_norm=1.0, dropout=0.0,
                  model_kwargs={"hidden": 64}, eval_every_steps=250, eval_batches=20, ft_train=2000, ft_test=1000,
                  ft_min_words=6, ft_max_len=63, ft_batch_size=32, ft_epochs=8, ft_lr=1e-3, ft_dropout=0.1, subset=0,
                  threads=1),
    # measured on the 2-core CPU (one thread): masked-character accuracy 0.474 against the unigram baseline
    # 0.167 (always a space), NSP 0.62; fine-tuning 0.733 with the pre-trained encoder, 0.557 from scratch
    # (0.50 at ft_lr 3e-4); 194 s pre-training + 36 s fine-tuning. With the fused QKV product (other rounding):
    # 0.452, fine-tuning 0.727 against 0.557, 267 s + 51 s on the AVX2 EPYC. The accuracy sits on a plateau near
    # 0.24 for the first ~750 steps, then climbs; when it leaves the plateau moves the final value by ~0.02,
    # hence the threshold 0.43 below both measured values. warmup_steps -1: 5% of the steps (125).
    # Words (level=word, vocab_size=4000) stay near 0.17 against 0.10
    # in the same time, and neither encoder learns the word-order task from them (about 0.5-0.55).
    smoke=dict(max_steps=4, eval_every_steps=2, eval_batches=1, batch_size=8, ft_train=32, ft_test=16, ft_epochs=1,
               subset=2000), datasets=("tinyshakespeare",),
))
