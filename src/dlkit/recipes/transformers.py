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

import copy
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.mnist import MNIST_CLASSES, load_mnist
from ..data.sentence_tasks import encode_single_sentences, sentence_pairs, speech_lines, word_order_examples
from ..data.sequence_tasks import copy_task, reversal_task
from ..data.splits import in_memory_splits
from ..data.text import PAD, UNK, Vocab, load_tiny_shakespeare, word_tokenize
from ..data.transforms import RandomCrop, normalise_images
from ..engine.gradient_step import gradient_step
from ..errors import ConfigError
from ..metrics.sequence import exact_match
from ..models.classification.vit import mean_attention_distance, position_embedding_similarity
from ..models.sequence.bert import IGNORE_INDEX, BertForSequenceClassification, mask_tokens
from ..optim import create_optimizer, create_scheduler
from ..registry import create_model
from ..report.figures import plot_attention_maps, plot_image_grid, plot_lines
from ..tasks.classification import ClassificationTask
from ..tasks.optimization import OPTIMIZER_OPTIONS
from .registry import Recipe, Setup, Study, register_recipe
from .sequence import train_on_sequence_task


def _adamw_warmup_cosine(params, cfg, total_steps: int, lr: float | None = None):
    opt = create_optimizer("adamw", params, lr=cfg.lr if lr is None else lr, weight_decay=cfg.weight_decay, fused=True)
    warmup = max(1, round(cfg.warmup_fraction * total_steps))
    return opt, create_scheduler("warmup_cosine", opt, total_steps=max(total_steps, 1), warmup_steps=warmup)


# ----------------------------------------------------------------------------- ViT on MNIST


class ViTClassificationTask(ClassificationTask):
    """Classification of a `VisionTransformer`, with the ViT figures of 002 §3.2 added to the report."""

    def figures(self, run_dir: Path, model, loader) -> list[Path]:
        paths = super().figures(run_dir, model, loader)
        figs, grid = run_dir / "figures", model.grid
        sim = position_embedding_similarity(model.pos_embed.weight[1:].detach().float().cpu())  # no [CLS]
        titles = [f"patch ({r}, {c})" for r in range(grid) for c in range(grid)]
        paths.append(plot_image_grid(list(sim.reshape(grid * grid, grid, grid)), figs / "position_similarity.png",
                                     titles=titles, ncols=grid))
        if loader is not None:
            x, _ = next(iter(loader))
            x = x[:256].to(next(model.parameters()).device)
            curves = {}
            for layer, attn in enumerate(model.attention_maps(x)):
                a = attn[:, :, 1:, 1:].float().cpu()  # patch-to-patch weights, renormalised without [CLS]
                a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
                dist = mean_attention_distance(a, grid, model.patch_size).mean(0)  # [heads]
                for h, d in enumerate(dist.tolist()):
                    xs, ys = curves.setdefault(f"head {h}", ([], []))
                    xs.append(layer + 1)
                    ys.append(d)
            paths.append(plot_lines(curves, figs / "mean_attention_distance.png", "layer",
                                    "mean attention distance (pixels)",
                                    title="how far each head looks (002 Fig. 3.10)"))
        return paths


def _vit_mnist(cfg, dist):
    x_tr, y_tr = load_mnist("train", data_dir=cfg.data_dir)
    x_te, y_te = load_mnist("test", data_dir=cfg.data_dir)
    x_tr, x_te = normalise_images(x_tr, 0.1307, 0.3081), normalise_images(x_te, 0.1307, 0.3081)
    train, val, test, val_name = in_memory_splits(x_tr, y_tr, x_te, y_te, batch_size=cfg.batch_size, seed=cfg.seed,
                                                  dist=dist, val_size=cfg.val_size, subset=cfg.subset)
    if cfg.crop_padding:
        train.transform = RandomCrop(28, padding=cfg.crop_padding, fill=-0.1307 / 0.3081)
    model = create_model("vit_tiny_mnist", dropout=cfg.dropout, **cfg.model_kwargs)
    task = ViTClassificationTask(model, cfg, class_names=MNIST_CLASSES, label_smoothing=cfg.label_smoothing)
    return Setup(task, train, val, test, val_name=val_name,
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

    def run(run_dir: Path) -> dict[str, float]:
        task = SEQUENCE_TASKS[cfg.task](n_train=cfg.n_train, n_test=cfg.n_test, num_symbols=cfg.num_symbols,
                                        min_len=cfg.min_len, max_len=cfg.max_len, seed=cfg.seed)
        vocab = task.src_vocab
        torch.manual_seed(cfg.seed)
        model = create_model("transformer_tiny", src_vocab_size=len(vocab), share_embeddings=True,
                             pad_id=vocab.pad_id, sos_id=vocab.sos_id, eos_id=vocab.eos_id, max_len=cfg.max_len + 2,
                             **cfg.model_kwargs)
        total = cfg.epochs * math.ceil(cfg.n_train / cfg.batch_size)
        opt, sched = _adamw_warmup_cosine(model.parameters(), cfg, total)
        losses, steps, train_seconds = train_on_sequence_task(
            task, lambda src, tgt: model.loss(src.ids, tgt), opt, cfg, scheduler=sched, record_every=10)
        model.eval()
        src, tgt = task.tensors("test")
        width = tgt.shape[1]  # greedy_decode returns at most max_len + 1 = width ids
        out = torch.full((len(tgt), width), vocab.pad_id, dtype=torch.long)
        for i in range(0, len(tgt), 500):
            ys = model.greedy_decode(src.ids[i: i + 500], max_len=width - 1)
            out[i: i + len(ys), : ys.shape[1]] = ys
        guesses = [vocab.to_text(t.tolist()) for t in out]
        truths = [t for _, t in task.test]
        n = min(out.shape[1], tgt.shape[1])
        real = tgt[:, 1:n] != vocab.pad_id  # the target characters and <EOS>
        token_acc = float((out[:, 1:n] == tgt[:, 1:n])[real].float().mean()) if real.any() else float("nan")
        figs = run_dir / "figures"
        plot_lines({"training loss": ([s for s, _ in losses], [v for _, v in losses])}, figs / "loss.png",
                   "step", "cross-entropy per target token", logy=True)
        k = min(3, len(truths))
        if k:
            ex_src = src.ids[:k]
            dec_in = out[:k, :-1]  # the model's own outputs as decoder input: row t predicts token t + 1
            maps = model.cross_attention_maps(ex_src, dec_in)
            for layer, attn in enumerate(maps):
                plot_attention_maps([attn[i].mean(0)[: len(guesses[i]) + 1, : int(src.lengths[i])].numpy()
                                     for i in range(k)],
                                    [list(task.test[i][0]) for i in range(k)],
                                    [list(guesses[i]) + ["<EOS>"] for i in range(k)],
                                    figs / f"cross_attention_layer{layer + 1}.png")
        wrong = [f"{s} -> {g} (expected {t})" for (s, t), g in zip(task.test, guesses) if g != t]
        samples = [f"{s} -> {g}" for (s, _), g in zip(task.test[:20], guesses[:20])]
        (run_dir / "samples.txt").write_text("\n".join(samples + ["", f"{len(wrong)} wrong:"] + wrong[:50]) + "\n")
        return {"test/exact_match": exact_match(guesses, truths), "test/token_accuracy": token_acc,
                "train_seconds": train_seconds, "steps": steps,
                "final_train_loss": losses[-1][1] if losses else float("nan")}
    return Study(run, extra={"task": cfg.task})


register_recipe(Recipe(
    name="transformer-copy", task="sequence", notes="002 §3.1, §3.1.4; 000 §5.3; 004 TRANSFORMERS",
    description="Encoder-decoder Transformer (2 + 2 layers, d 64) reversing strings of 3-8 letters, greedy "
                "decoding to <EOS> on held-out strings (task=copy copies them)",
    build=_transformer_copy, metric="test/exact_match", threshold=0.99, budget_s=180,
    study=True,
    defaults=dict(task="reversal", n_train=10_000, n_test=1_000, num_symbols=8, min_len=3, max_len=8,
                  model_kwargs={}, lr=1e-3, weight_decay=0.01, warmup_fraction=0.05, batch_size=64, epochs=10,
                  threads=1),  # measured: exact match 1.000 (0 of 1,000 wrong) after 50 s; 4 epochs: 0.991 in 21 s
    smoke=dict(n_train=256, n_test=32, epochs=1),
))


# ----------------------------------------------------------------------------- BERT on Tiny Shakespeare

CLS, SEP, MASK = "[CLS]", "[SEP]", "[MASK]"
BERT_SPECIALS = (PAD, UNK, CLS, SEP, MASK)  # <PAD> first: id 0 is BertModel's padding id
TOKENIZERS = {"char": list, "word": word_tokenize}


def pretraining_losses(model, input_ids, token_type_ids, labels, is_next):
    """(MLM loss, NSP loss, masked-token accuracy) of a `BertForPreTraining` batch. Notes: 004 Training BERT.

    The same cross-entropies as `BertForPreTraining.loss`, with the vocabulary projection computed only at the
    masked positions (the loss is zero elsewhere), which saves most of the MLM head's work.
    """
    h, pooled = model.bert(input_ids, token_type_ids)
    chosen = labels != IGNORE_INDEX
    logits = model.mlm(h[chosen])
    target = labels[chosen]
    mlm = F.cross_entropy(logits, target)
    nsp = F.cross_entropy(model.nsp(pooled), is_next)
    return mlm, nsp, (logits.argmax(-1) == target).float().mean()


class _MLMData:
    """Token streams of the training and held-out lines, the vocabulary and the pair/mask sampler."""

    def __init__(self, cfg, train_lines, test_lines):
        if cfg.level not in TOKENIZERS:
            raise ConfigError(f"level must be one of {sorted(TOKENIZERS)}; got {cfg.level!r}")
        self.cfg, self.tokenize = cfg, TOKENIZERS[cfg.level]
        train = [t for line in train_lines for t in self.tokenize(line + "\n")]  # "\n" ends a line (dropped by
        test = [t for line in test_lines for t in self.tokenize(line + "\n")]    # word_tokenize)
        self.vocab = Vocab.build([train], max_size=cfg.vocab_size or None, specials=BERT_SPECIALS)
        v = self.vocab
        self.cls_id, self.sep_id, self.mask_id, self.pad_id = v[CLS], v[SEP], v[MASK], v.pad_id
        self.special_ids = [v[s] for s in BERT_SPECIALS]  # <UNK> is never a target either
        self.train_ids, self.test_ids = v.encode(train), v.encode(test)
        self.most_frequent = len(BERT_SPECIALS)  # Vocab puts the most frequent training token first

    def batch(self, ids, generator):
        """A masked next-sentence-prediction batch: (corrupted ids, segment ids, MLM labels, is_next)."""
        c = self.cfg
        x, types, is_next = sentence_pairs(ids, c.batch_size, c.segment_len, c.segment_len, self.cls_id,
                                           self.sep_id, generator)
        corrupted, labels = mask_tokens(x, len(self.vocab), self.mask_id, self.special_ids, 0.15, generator)
        return corrupted, types, labels, is_next

    def encode_sentences(self, token_lists) -> torch.Tensor:
        """[CLS] line [SEP] <PAD>... for fine-tuning; a line is its words joined by spaces, then tokenised."""
        return encode_single_sentences([self.vocab.encode(self.tokenize(" ".join(t))) for t in token_lists],
                                       self.cfg.ft_max_len, self.cls_id, self.sep_id, self.pad_id)


@torch.no_grad()
def _heldout_eval(model, data: _MLMData, cfg) -> dict[str, float]:
    """Masked-token accuracy, the unigram baseline (always guess the most frequent training token) and NSP
    accuracy on `eval_batches` fixed batches of the held-out text."""
    g = torch.Generator().manual_seed(cfg.seed + 1)  # the same held-out batches every time
    model.eval()
    hits = base = total = nsp_hits = pairs = 0
    for _ in range(cfg.eval_batches):
        x, types, labels, is_next = data.batch(data.test_ids, g)
        h, pooled = model.bert(x, types)
        chosen = labels != IGNORE_INDEX
        target = labels[chosen]
        hits += int((model.mlm(h[chosen]).argmax(-1) == target).sum())
        base += int((target == data.most_frequent).sum())
        total += len(target)
        nsp_hits += int((model.nsp(pooled).argmax(-1) == is_next).sum())
        pairs += len(is_next)
    model.train()
    return {"masked_accuracy": hits / max(total, 1), "unigram_baseline": base / max(total, 1),
            "nsp_accuracy": nsp_hits / max(pairs, 1)}


def _fine_tune(clf, x_tr, y_tr, x_te, y_te, cfg, seed: int) -> tuple[float, list[tuple[int, float]]]:
    """Train a sentence classifier for cfg.ft_epochs and return its test accuracy and its training losses."""
    steps_per_epoch = math.ceil(len(y_tr) / cfg.ft_batch_size)
    opt, sched = _adamw_warmup_cosine(clf.parameters(), cfg, cfg.ft_epochs * steps_per_epoch, lr=cfg.ft_lr)
    g = torch.Generator().manual_seed(seed)
    history, step = [], 0
    clf.train()
    for _ in range(cfg.ft_epochs):
        perm = torch.randperm(len(y_tr), generator=g)
        for s in range(0, len(perm), cfg.ft_batch_size):
            idx = perm[s: s + cfg.ft_batch_size]
            loss = gradient_step(F.cross_entropy(clf(x_tr[idx]), y_tr[idx]), opt, clip_norm=1.0, scheduler=sched)
            step += 1
            if step % 5 == 0:
                history.append((step, loss.item()))
    clf.eval()
    with torch.no_grad():
        pred = torch.cat([clf(x_te[i: i + 500]).argmax(-1) for i in range(0, len(y_te), 500)])
    return float((pred == y_te).float().mean()), history


def _bert_shakespeare(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        lines = [line.lower() for line in speech_lines(load_tiny_shakespeare(cfg.data_dir))]
        cut = int(len(lines) * (1 - cfg.heldout_fraction))
        train_lines, test_lines = lines[:cut], lines[cut:]
        if cfg.subset:
            train_lines, test_lines = train_lines[: cfg.subset], test_lines[: cfg.subset]
        data = _MLMData(cfg, train_lines, test_lines)
        bert_kw = dict(vocab_size=len(data.vocab), max_position=max(2 * cfg.segment_len + 3, cfg.ft_max_len),
                       dropout=cfg.dropout, **cfg.model_kwargs)
        torch.manual_seed(cfg.seed)
        model = create_model("bert_tiny", **bert_kw)

        # pre-training: masked LM + next-sentence prediction on random segment pairs of the training text
        opt, sched = _adamw_warmup_cosine(model.parameters(), cfg, cfg.steps)
        g = torch.Generator().manual_seed(cfg.seed)
        hist: dict[str, tuple[list, list]] = {"MLM loss": ([], []), "NSP loss": ([], [])}
        evals: dict[str, tuple[list, list]] = {"held-out masked accuracy": ([], []), "unigram baseline": ([], [])}
        t0 = time.perf_counter()
        model.train()
        for step in range(1, cfg.steps + 1):
            mlm, nsp, _ = pretraining_losses(model, *data.batch(data.train_ids, g))
            gradient_step(mlm + nsp, opt, clip_norm=1.0, scheduler=sched)
            if step % 10 == 0 or step == cfg.steps:
                for name, v in (("MLM loss", mlm), ("NSP loss", nsp)):
                    hist[name][0].append(step)
                    hist[name][1].append(v.item())
            if step % cfg.eval_every == 0 or step == cfg.steps:
                ev = _heldout_eval(model, data, cfg)
                for name, key in (("held-out masked accuracy", "masked_accuracy"), ("unigram baseline",
                                                                                     "unigram_baseline")):
                    evals[name][0].append(step)
                    evals[name][1].append(ev[key])
        pretrain_seconds = time.perf_counter() - t0
        figs = run_dir / "figures"
        plot_lines(hist, figs / "pretraining_loss.png", "step", "cross-entropy", logy=True,
                   title=f"BERT pre-training on Tiny Shakespeare ({cfg.level}s)")
        plot_lines(evals, figs / "masked_accuracy.png", "step", f"accuracy on masked {cfg.level}s",
                   title="held-out masked-token accuracy")
        _write_fill_ins(run_dir / "samples_mlm.txt", model, data, test_lines[:12])

        # fine-tuning: a new output layer on the pre-trained encoder against the same classifier from scratch
        t1 = time.perf_counter()
        ft_tr = word_order_examples(train_lines, cfg.ft_train, min_words=cfg.ft_min_words, seed=cfg.seed,
                                    tokenize=str.split, keep_punctuation=False)
        ft_te = word_order_examples(test_lines, cfg.ft_test, min_words=cfg.ft_min_words, seed=cfg.seed + 1,
                                    tokenize=str.split, keep_punctuation=False)
        x_tr, x_te = data.encode_sentences(ft_tr.tokens), data.encode_sentences(ft_te.tokens)
        torch.manual_seed(cfg.seed + 2)
        tuned = BertForSequenceClassification.from_pretrained_body(copy.deepcopy(model.bert), 2, cfg.ft_dropout)
        torch.manual_seed(cfg.seed + 2)
        scratch = BertForSequenceClassification.from_pretrained_body(create_model("bert_tiny", **bert_kw).bert, 2,
                                                                     cfg.ft_dropout)  # the same body, freshly drawn
        acc_tuned, h_tuned = _fine_tune(tuned, x_tr, ft_tr.labels, x_te, ft_te.labels, cfg, cfg.seed + 3)
        acc_scratch, h_scratch = _fine_tune(scratch, x_tr, ft_tr.labels, x_te, ft_te.labels, cfg, cfg.seed + 3)
        finetune_seconds = time.perf_counter() - t1
        plot_lines({"pre-trained encoder": ([s for s, _ in h_tuned], [v for _, v in h_tuned]),
                    "from scratch": ([s for s, _ in h_scratch], [v for _, v in h_scratch])},
                   figs / "fine_tuning_loss.png", "step", "training cross-entropy",
                   title=f"real vs shuffled lines: test acc {acc_tuned:.3f} (pre-trained), {acc_scratch:.3f} (scratch)")
        samples = [f"{'real' if y else 'shuffled'}: {' '.join(t)}" for t, y in zip(ft_te.tokens[:10],
                                                                                   ft_te.labels.tolist())]
        (run_dir / "samples_fine_tuning.txt").write_text("\n".join(samples) + "\n")
        return {"test/masked_accuracy": ev["masked_accuracy"],
                "test/masked_accuracy_unigram_baseline": ev["unigram_baseline"],
                "test/nsp_accuracy": ev["nsp_accuracy"],
                "test/finetune_accuracy_pretrained": acc_tuned, "test/finetune_accuracy_scratch": acc_scratch,
                "steps": cfg.steps, "pretrain_seconds": pretrain_seconds, "finetune_seconds": finetune_seconds,
                "vocab_size": len(data.vocab), "train_tokens": len(data.train_ids),
                "heldout_tokens": len(data.test_ids), "ft_train_lines": cfg.ft_train, "ft_test_lines": cfg.ft_test}
    return Study(run, extra={"level": cfg.level})


@torch.no_grad()
def _write_fill_ins(path: Path, model, data: _MLMData, lines) -> None:
    """Held-out lines with every fifth token masked, and the model's guesses ([guess|truth] where wrong)."""
    model.eval()
    out = []
    sep = "" if data.cfg.level == "char" else " "
    for line in lines:
        ids = data.vocab.encode(data.tokenize(line))[: data.cfg.ft_max_len - 2]
        if len(ids) < 2:
            continue
        x = encode_single_sentences([ids], len(ids) + 2, data.cls_id, data.sep_id, data.pad_id)
        masked = torch.zeros_like(x, dtype=torch.bool)
        masked[0, 1: len(ids) + 1: 5] = True
        h, _ = model.bert(x.masked_fill(masked, data.mask_id))
        guesses = iter(model.mlm(h[masked]).argmax(-1).tolist())
        shown = []
        for i, t in enumerate(ids.tolist()):
            truth = data.vocab.itos[t]
            guess = data.vocab.itos[next(guesses)] if masked[0, i + 1] else truth
            shown.append(truth if guess == truth else f"[{guess}|{truth}]")
        out.append(sep.join(shown))
    path.write_text("every fifth token of held-out lines masked; [guess|truth] where the guess is wrong\n\n"
                    + "\n".join(out) + "\n")
    model.train()


register_recipe(Recipe(
    name="bert-mlm-shakespeare", task="sequence", notes="004 BERT (Training / Fine-tuning BERT), 000 §5.3",
    description="BERT-tiny (2 layers, 64 wide) pre-trained by masked LM + NSP on the characters of Tiny "
                "Shakespeare's spoken lines (last 10% held out), then fine-tuned to tell real lines from "
                "word-shuffled ones, against the same classifier trained from scratch",
    build=_bert_shakespeare, metric="test/masked_accuracy", threshold=0.43, budget_s=420,
    study=True,
    defaults=dict(level="char", heldout_fraction=0.1, vocab_size=0, segment_len=30, batch_size=64, steps=2500,
                  lr=2e-3, weight_decay=0.01, warmup_fraction=0.05, dropout=0.0, model_kwargs={"hidden": 64},
                  eval_every=250, eval_batches=20, ft_train=2000, ft_test=1000, ft_min_words=6, ft_max_len=63,
                  ft_batch_size=32, ft_epochs=8, ft_lr=1e-3, ft_dropout=0.1, subset=0, threads=1),
    # measured on the 2-core CPU (one thread): masked-character accuracy 0.474 against the unigram baseline
    # 0.167 (always a space), NSP 0.62; fine-tuning 0.733 with the pre-trained encoder, 0.557 from scratch
    # (0.50 at ft_lr 3e-4); 194 s pre-training + 36 s fine-tuning. With the fused QKV product (other rounding):
    # 0.452, fine-tuning 0.727 against 0.557, 267 s + 51 s on the AVX2 EPYC. The accuracy sits on a plateau near
    # 0.24 for the first ~750 steps, then climbs; when it leaves the plateau moves the final value by ~0.02,
    # hence the threshold 0.43 below both measured values.
    # Words (level=word, vocab_size=4000) stay near 0.17 against 0.10
    # in the same time, and neither encoder learns the word-order task from them (about 0.5-0.55).
    smoke=dict(steps=4, eval_every=2, eval_batches=1, batch_size=8, ft_train=32, ft_test=16, ft_epochs=1,
               subset=2000), datasets=("tinyshakespeare",),
))
