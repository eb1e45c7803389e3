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
- `bert-mlm-shakespeare` pre-trains `bert_tiny` on the words of Tiny Shakespeare's spoken lines with masked LM
  (15%, 80/10/10) plus next-sentence prediction, scores masked-word accuracy on the last 10% of the lines
  (never trained on) against the unigram baseline, then fine-tunes the encoder with a new output layer on a
  generated task (real line or words shuffled) and compares it with the same classifier trained from scratch.
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
from ..data.text import PAD, UNK, Vocab, load_tiny_shakespeare, word_tokenize
from ..data.transforms import RandomCrop
from ..errors import ConfigError
from ..models.classification.vit import mean_attention_distance, position_embedding_similarity
from ..models.sequence.bert import IGNORE_INDEX, BertForSequenceClassification, mask_tokens
from ..optim import create_optimizer, create_scheduler
from ..registry import create_model
from ..report.figures import plot_attention_maps, plot_image_grid, plot_lines
from .base import Experiment, Recipe, Setup, register_recipe
from .classification import in_memory_splits, normalise_images
from .tasks.classification import ClassificationTask


def _with_threads(cfg, run):
    """`run` under the `threads` option (CPU intra-op threads; the Trainer does this for Setup recipes), with
    the previous setting restored afterwards."""
    if cfg.get("threads") is not None and cfg.threads < 1:
        raise ConfigError(f"threads must be >= 1; got {cfg.threads}")

    def wrapped(run_dir: Path) -> dict[str, float]:
        before = torch.get_num_threads()
        if cfg.get("threads") is not None:
            torch.set_num_threads(cfg.threads)
        try:
            return run(run_dir)
        finally:
            torch.set_num_threads(before)
    return wrapped


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
    train, val, test = in_memory_splits(x_tr, y_tr, x_te, y_te, cfg, dist, val_size=cfg.val_size)
    if cfg.crop_padding:
        train.transform = RandomCrop(28, padding=cfg.crop_padding, fill=-0.1307 / 0.3081)
    model = create_model("vit_tiny_mnist", dropout=cfg.dropout, **cfg.model_kwargs)
    task = ViTClassificationTask(model, cfg, class_names=MNIST_CLASSES, label_smoothing=cfg.label_smoothing)
    return Setup(task, train, val, test, extra={"parameters": sum(p.numel() for p in model.parameters())})


register_recipe(Recipe(
    name="vit-mnist", task="classification", notes="002 §3.2, 004 VISUAL TRANSFORMERS",
    description="Vision Transformer (7x7 patches, 4 layers, 64 wide) on MNIST with AdamW and warm-up + cosine",
    build=_vit_mnist, metric="test/accuracy", threshold=0.975, budget_s=360,
    defaults=dict(epochs=8, batch_size=64, lr=2e-3, optimizer="adamw", weight_decay=0.05,
                  schedule="warmup_cosine", label_smoothing=0.0, dropout=0.0, crop_padding=0,
                  model_kwargs={"depth": 4}, val_size=5000, subset=0, log_every=100, threads=1),
    # measured on the 2-core CPU (one thread): test 0.9799 after 243 s (val 0.927, 0.955, 0.968 after epochs
    # 1-3); 6 epochs give 0.9780 in 195 s, 5 epochs at batch 128 only 0.9702. Two threads are not faster.
    smoke=dict(epochs=1, subset=256), datasets=("mnist",),
))


# ----------------------------------------------------------------------------- Transformer on reversal / copy

SEQUENCE_TASKS = {"reversal": reversal_task, "copy": copy_task}


def exact_match(guesses: list[str], truths: list[str]) -> float:
    """Fraction of generated strings equal to their targets (whole sequence right, <EOS> at the right place)."""
    if len(guesses) != len(truths):
        raise ConfigError(f"exact_match needs one guess per target; got {len(guesses)} and {len(truths)}")
    return sum(g == t for g, t in zip(guesses, truths)) / max(len(truths), 1)


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
        losses, steps, t0 = [], 0, time.perf_counter()
        for epoch in range(cfg.epochs):
            for src, tgt in task.batches("train", cfg.batch_size, seed=cfg.seed, epoch=epoch):
                loss = model.loss(src.ids, tgt)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                steps += 1
                if steps % 10 == 0:
                    losses.append((steps, loss.item()))
        train_seconds = time.perf_counter() - t0
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
    return Experiment(_with_threads(cfg, run), extra={"task": cfg.task})


register_recipe(Recipe(
    name="transformer-copy", task="sequence", notes="002 §3.1, §3.1.4; 000 §5.3; 004 TRANSFORMERS",
    description="Encoder-decoder Transformer (2 + 2 layers, d 64) reversing strings of 3-8 letters, greedy "
                "decoding to <EOS> on held-out strings (task=copy copies them)",
    build=_transformer_copy, metric="test/exact_match", threshold=0.99, budget_s=180,
    defaults=dict(task="reversal", n_train=10_000, n_test=1_000, num_symbols=8, min_len=3, max_len=8,
                  model_kwargs={}, lr=1e-3, weight_decay=0.01, warmup_fraction=0.05, batch_size=64, epochs=4,
                  threads=1),
    smoke=dict(n_train=256, n_test=32, epochs=1),
))


# ----------------------------------------------------------------------------- BERT on Tiny Shakespeare

CLS, SEP, MASK = "[CLS]", "[SEP]", "[MASK]"
BERT_SPECIALS = (PAD, UNK, CLS, SEP, MASK)  # <PAD> first: id 0 is BertModel's padding id


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


@torch.no_grad()
def _masked_eval(model, ids, cfg, cls_id, sep_id, mask_id, special_ids, vocab_size, most_frequent):
    g = torch.Generator().manual_seed(cfg.seed + 1)  # the same held-out batches every time
    model.eval()
    hits = base = total = nsp_hits = pairs = 0
    for _ in range(cfg.eval_batches):
        x, types, is_next = sentence_pairs(ids, cfg.batch_size, cfg.segment_len, cfg.segment_len, cls_id, sep_id, g)
        corrupted, labels = mask_tokens(x, vocab_size, mask_id, special_ids, 0.15, g)
        h, pooled = model.bert(corrupted, types)
        chosen = labels != IGNORE_INDEX
        target = labels[chosen]
        hits += int((model.mlm(h[chosen]).argmax(-1) == target).sum())
        base += int((target == most_frequent).sum())
        total += len(target)
        nsp_hits += int((model.nsp(pooled).argmax(-1) == is_next).sum())
        pairs += len(is_next)
    model.train()
    return hits / max(total, 1), base / max(total, 1), nsp_hits / max(pairs, 1)


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
            loss = F.cross_entropy(clf(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 5 == 0:
                history.append((step, loss.item()))
    clf.eval()
    with torch.no_grad():
        pred = torch.cat([clf(x_te[i: i + 500]).argmax(-1) for i in range(0, len(y_te), 500)])
    return float((pred == y_te).float().mean()), history


def _bert_shakespeare(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        lines = speech_lines(load_tiny_shakespeare(cfg.data_dir))
        cut = int(len(lines) * (1 - cfg.heldout_fraction))
        train_lines, test_lines = lines[:cut], lines[cut:]
        if cfg.subset:
            train_lines, test_lines = train_lines[: cfg.subset], test_lines[: cfg.subset]
        train_words = [w for line in train_lines for w in word_tokenize(line)]
        test_words = [w for line in test_lines for w in word_tokenize(line)]
        vocab = Vocab.build([train_words], max_size=cfg.vocab_size, specials=BERT_SPECIALS)
        cls_id, sep_id, mask_id, pad_id = vocab[CLS], vocab[SEP], vocab[MASK], vocab.pad_id
        special_ids = [vocab[s] for s in BERT_SPECIALS]  # <UNK> is never a target either
        train_ids, test_ids = vocab.encode(train_words), vocab.encode(test_words)
        most_frequent = len(BERT_SPECIALS)  # Vocab orders regular tokens by frequency in the training text
        seq_len = 2 * cfg.segment_len + 3
        bert_kw = dict(vocab_size=len(vocab), max_position=max(seq_len, cfg.ft_max_len), dropout=cfg.dropout,
                       **cfg.model_kwargs)
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
            x, types, is_next = sentence_pairs(train_ids, cfg.batch_size, cfg.segment_len, cfg.segment_len, cls_id,
                                               sep_id, g)
            corrupted, labels = mask_tokens(x, len(vocab), mask_id, special_ids, 0.15, g)
            mlm, nsp, _ = pretraining_losses(model, corrupted, types, labels, is_next)
            opt.zero_grad(set_to_none=True)
            (mlm + nsp).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 10 == 0 or step == cfg.steps:
                for name, v in (("MLM loss", mlm), ("NSP loss", nsp)):
                    hist[name][0].append(step)
                    hist[name][1].append(v.item())
            if step % cfg.eval_every == 0 or step == cfg.steps:
                acc, base, nsp_acc = _masked_eval(model, test_ids, cfg, cls_id, sep_id, mask_id, special_ids,
                                                  len(vocab), most_frequent)
                for name, v in (("held-out masked accuracy", acc), ("unigram baseline", base)):
                    evals[name][0].append(step)
                    evals[name][1].append(v)
        pretrain_seconds = time.perf_counter() - t0
        figs = run_dir / "figures"
        plot_lines(hist, figs / "pretraining_loss.png", "step", "cross-entropy", logy=True,
                   title="BERT pre-training on Tiny Shakespeare (words)")
        plot_lines(evals, figs / "masked_accuracy.png", "step", "accuracy on masked words",
                   title="held-out masked-word accuracy")
        _write_fill_ins(run_dir / "samples_mlm.txt", model, vocab, test_lines[:12], cls_id, sep_id, mask_id, cfg)

        # fine-tuning: a new output layer on the pre-trained encoder against the same classifier from scratch
        t1 = time.perf_counter()
        ft_tr = word_order_examples(train_lines, cfg.ft_train, min_words=cfg.ft_min_words, seed=cfg.seed)
        ft_te = word_order_examples(test_lines, cfg.ft_test, min_words=cfg.ft_min_words, seed=cfg.seed + 1)

        def enc(ex):
            return encode_single_sentences([vocab.encode(t) for t in ex.tokens], cfg.ft_max_len, cls_id, sep_id,
                                           pad_id)

        x_tr, x_te = enc(ft_tr), enc(ft_te)
        torch.manual_seed(cfg.seed + 2)
        tuned = BertForSequenceClassification.from_pretrained_body(copy.deepcopy(model.bert), 2, cfg.dropout)
        torch.manual_seed(cfg.seed + 2)
        scratch = BertForSequenceClassification.from_pretrained_body(create_model("bert_tiny", **bert_kw).bert, 2,
                                                                     cfg.dropout)  # the same body, freshly drawn
        acc_tuned, h_tuned = _fine_tune(tuned, x_tr, ft_tr.labels, x_te, ft_te.labels, cfg, cfg.seed + 3)
        acc_scratch, h_scratch = _fine_tune(scratch, x_tr, ft_tr.labels, x_te, ft_te.labels, cfg, cfg.seed + 3)
        finetune_seconds = time.perf_counter() - t1
        plot_lines({"pre-trained encoder": ([s for s, _ in h_tuned], [v for _, v in h_tuned]),
                    "from scratch": ([s for s, _ in h_scratch], [v for _, v in h_scratch])},
                   figs / "fine_tuning_loss.png", "step", "training cross-entropy",
                   title=f"real vs shuffled lines: test acc {acc_tuned:.3f} (pre-trained), {acc_scratch:.3f} (scratch)")
        return {"test/masked_accuracy": evals["held-out masked accuracy"][1][-1],
                "test/masked_accuracy_unigram_baseline": evals["unigram baseline"][1][-1],
                "test/nsp_accuracy": nsp_acc, "test/finetune_accuracy_pretrained": acc_tuned,
                "test/finetune_accuracy_scratch": acc_scratch, "steps": cfg.steps,
                "pretrain_seconds": pretrain_seconds, "finetune_seconds": finetune_seconds,
                "vocab_size": len(vocab), "train_words": len(train_ids), "heldout_words": len(test_ids),
                "unk_rate_heldout": float((test_ids == vocab.unk_id).float().mean())}
    return Experiment(_with_threads(cfg, run), extra={"tokens": "words (word_tokenize, lower case)"})


@torch.no_grad()
def _write_fill_ins(path: Path, model, vocab, lines, cls_id, sep_id, mask_id, cfg) -> None:
    """A few held-out lines with every fourth word masked and the model's guesses, for the report."""
    model.eval()
    out = []
    for line in lines:
        words = word_tokenize(line)[: 2 * cfg.segment_len]
        if len(words) < 2:
            continue
        ids = encode_single_sentences([vocab.encode(words)], len(words) + 2, cls_id, sep_id)
        masked = torch.zeros_like(ids, dtype=torch.bool)
        masked[0, 1: len(words) + 1: 4] = True
        h, _ = model.bert(ids.masked_fill(masked, mask_id))
        guesses = vocab.decode(model.mlm(h[masked]).argmax(-1))
        shown, k = [], 0
        for i, w in enumerate(words):
            if masked[0, i + 1]:
                shown.append(f"[{guesses[k]}|{w}]")
                k += 1
            else:
                shown.append(w)
        out.append(" ".join(shown))
    path.write_text("[guess|truth] for every fourth word of held-out lines\n\n" + "\n".join(out) + "\n")
    model.train()


register_recipe(Recipe(
    name="bert-mlm-shakespeare", task="sequence", notes="004 BERT (Training / Fine-tuning BERT), 000 §5.3",
    description="BERT-tiny pre-trained by masked LM + NSP on Tiny Shakespeare words (last 10% of lines held out), "
                "then fine-tuned to tell real lines from word-shuffled ones, against the same model from scratch",
    build=_bert_shakespeare, metric="test/masked_accuracy", threshold=0.2, budget_s=300,
    defaults=dict(heldout_fraction=0.1, vocab_size=4000, segment_len=30, batch_size=64, steps=1500, lr=1e-3,
                  weight_decay=0.01, warmup_fraction=0.05, dropout=0.1, model_kwargs={}, eval_every=250,
                  eval_batches=20, ft_train=2000, ft_test=1000, ft_min_words=6, ft_max_len=24, ft_batch_size=32,
                  ft_epochs=4, ft_lr=3e-4, subset=0, threads=1),
    smoke=dict(steps=4, eval_every=2, eval_batches=1, batch_size=8, ft_train=32, ft_test=16, ft_epochs=1,
               subset=2000), datasets=("tinyshakespeare",),
))
