"""Recipes of sequence models without a Trainer loop of their own: seq2seq with attention on a generated
date-translation task, and word2vec on Tiny Shakespeare (Notes: 003 §9-9.2, 000 §5, 004 Seq2Seq/Word2Vec)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.sequence_tasks import date_task
from ..data.text import Vocab, load_tiny_shakespeare, word_tokenize
from ..engine.gradient_step import gradient_step
from ..models.sequence.seq2seq import Seq2Seq
from ..models.sequence.word2vec import Word2Vec, noise_distribution, skipgram_pairs, subsample
from ..optim import create_optimizer
from ..report.figures import plot_attention_maps, plot_lines
from ..techniques.bptt import gradient_norm_vs_distance
from .registry import Recipe, Study, register_recipe


def train_on_sequence_task(task, batch_loss, opt, cfg, scheduler=None, record_every: int = 10
                           ) -> tuple[list[tuple[int, float]], int, float]:
    """`cfg.epochs` epochs over `task.batches("train", cfg.batch_size)`, one `gradient_step` (clip at norm 1) on
    `batch_loss(src, tgt)` per batch. Returns (the loss every `record_every` steps, steps, seconds)."""
    losses, steps, t0 = [], 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        for src, tgt in task.batches("train", cfg.batch_size, seed=cfg.seed, epoch=epoch):
            loss = gradient_step(batch_loss(src, tgt), opt, clip_norm=1.0, scheduler=scheduler)
            steps += 1
            if steps % record_every == 0:
                losses.append((steps, loss.item()))
    return losses, steps, time.perf_counter() - t0


def _seq2seq_dates(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        task = date_task(n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed)
        torch.manual_seed(cfg.seed)
        model = Seq2Seq(len(task.src_vocab), len(task.tgt_vocab), embed_dim=cfg.embed_dim,
                        hidden_size=cfg.hidden_size, bidirectional=cfg.bidirectional, attention=cfg.attention,
                        pad_id=task.tgt_vocab.pad_id, sos_id=task.tgt_vocab.sos_id, eos_id=task.tgt_vocab.eos_id)
        opt = create_optimizer("adam", model.parameters(), lr=cfg.lr, fused=True)
        losses, steps, train_seconds = train_on_sequence_task(
            task, lambda src, tgt: model.loss(src.ids, tgt, src.lengths), opt, cfg, record_every=20)
        model.eval()
        src, tgt = task.tensors("test")
        tokens, _, attn = model.greedy_decode(src.ids, src.lengths, max_len=tgt.shape[1] + 2)
        guesses = [task.tgt_vocab.to_text(t.tolist()) for t in tokens]
        truths = [t for _, t in task.test]
        exact = float(np.mean([g == t for g, t in zip(guesses, truths)]))
        figs = run_dir / "figures"
        plot_lines({"training loss": ([s for s, _ in losses], [v for _, v in losses])}, figs / "seq2seq_loss.png",
                   "step", "cross-entropy per target character", logy=True)
        if attn is not None:
            k = min(4, len(truths))
            plot_attention_maps([attn[i, : len(guesses[i]) + 1, : int(src.lengths[i])].numpy() for i in range(k)],
                                [list(task.test[i][0]) for i in range(k)],
                                [list(guesses[i]) + ["<EOS>"] for i in range(k)], figs / "attention_maps.png")
        wrong = [f"{s!r} -> {g!r} (expected {t!r})" for (s, t), g in zip(task.test, guesses) if g != t]
        samples = [f"{s!r} -> {g!r}" for (s, _), g in zip(task.test[:20], guesses[:20])]
        (run_dir / "samples.txt").write_text("\n".join(samples + ["", f"{len(wrong)} wrong:"] + wrong[:50]) + "\n")
        return {"test/exact_match": exact, "train_seconds": train_seconds, "steps": steps,
                "final_train_loss": losses[-1][1] if losses else float("nan")}
    return Study(run)


register_recipe(Recipe(
    name="seq2seq-attention-dates", task="sequence", notes="003 §9, §9.2; 000 §5.3; 004 Seq2Seq",
    description="GRU encoder-decoder with attention translating written dates to ISO format (generated data)",
    build=_seq2seq_dates, metric="test/exact_match", threshold=0.99, budget_s=300,
    study=True,
    defaults=dict(n_train=10_000, n_test=1_000, attention="bahdanau", bidirectional=True, embed_dim=32,
                  hidden_size=128, lr=3e-3, batch_size=64, epochs=3),  # 1.000 after 6 epochs; loss < 1e-3 by epoch 2
    smoke=dict(n_train=256, n_test=32, epochs=1),
))

# pairs a reader of Shakespeare expects to be near each other (forms of one word, or one role)
RELATED_PAIRS = [("thou", "thee"), ("thy", "thine"), ("my", "thy"), ("king", "queen"), ("lord", "lady"),
                 ("he", "she"), ("him", "her"), ("father", "mother"), ("son", "daughter"), ("brother", "sister"),
                 ("good", "noble"), ("love", "hate"), ("day", "night"), ("heaven", "earth"), ("man", "woman")]
QUERY_WORDS = ["king", "love", "thou", "death", "sweet", "sword", "night", "father"]


def _word2vec(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        words = word_tokenize(load_tiny_shakespeare(cfg.data_dir))
        if cfg.subset:
            words = words[: cfg.subset]
        vocab = Vocab.build([words], min_freq=cfg.min_freq)
        ids = vocab.encode(words)
        counts = torch.tensor([vocab.counts.get(t, 0) for t in vocab.itos], dtype=torch.float64)
        g = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        model = Word2Vec(len(vocab), cfg.dim, mode="skipgram", num_negatives=cfg.negatives,
                         noise_probs=noise_distribution(counts), vocab=vocab)
        opt = create_optimizer("adam", model.parameters(), lr=cfg.lr, fused=True)
        history, steps = [], 0
        for _ in range(cfg.epochs):
            kept = subsample(ids, counts, t=cfg.subsample_t, generator=g)
            pairs = skipgram_pairs(kept[kept > vocab.unk_id], cfg.window)  # no special tokens in the pairs
            perm = torch.randperm(len(pairs), generator=g)
            for s in range(0, len(perm), cfg.batch_size):
                idx = perm[s: s + cfg.batch_size]
                loss = gradient_step(model.loss(pairs[idx, 0], pairs[idx, 1], generator=g), opt)
                steps += 1
                if steps % 50 == 0:
                    history.append((steps, loss.item()))
        plot_lines({"negative-sampling loss": ([s for s, _ in history], [v for _, v in history])},
                   run_dir / "figures" / "word2vec_loss.png", "step", "loss")
        emb = F.normalize(model.embeddings.detach(), dim=1)
        known = [(a, b) for a, b in RELATED_PAIRS if a in vocab.stoi and b in vocab.stoi]
        ranks = {}  # fraction of the vocabulary closer to a than b is (0 = b is a's nearest neighbour)
        for a, b in known:
            sims = emb @ emb[vocab.stoi[a]]
            sims[vocab.stoi[a]] = -2.0
            ranks[f"{a}~{b}"] = float((sims > sims[vocab.stoi[b]]).double().mean())
        lines = [f"vocabulary {len(vocab)} words (min count {cfg.min_freq}); {len(words):,} tokens", ""]
        for w in QUERY_WORDS:
            if w in vocab.stoi:
                near = ", ".join(f"{n} ({s:.2f})" for n, s in model.most_similar(w, 8))
                lines.append(f"{w}: {near}")
        lines += ["", "related pairs: fraction of the vocabulary nearer to the first word than the second is"]
        lines += [f"{k}: {v:.4f}" for k, v in ranks.items()]
        (run_dir / "samples_neighbours.txt").write_text("\n".join(lines) + "\n")
        # chance level: 5% of random pairs fall in each other's nearest 5%
        top = np.mean([v < 0.05 for v in ranks.values()]) if ranks else float("nan")
        return {"test/related_pairs_in_top5pct": float(top), "steps": steps, "vocab_size": len(vocab),
                **{f"rank/{k}": v for k, v in ranks.items()}}
    return Study(run)


register_recipe(Recipe(
    name="word2vec-shakespeare", task="sequence", notes="003 §9.1, 004 Word2Vec",
    description="Skip-gram with negative sampling on Tiny Shakespeare words; nearest neighbours in the report",
    build=_word2vec, metric="test/related_pairs_in_top5pct", threshold=0.6, budget_s=300,  # measured 0.73
    study=True,
    defaults=dict(min_freq=5, dim=64, window=3, negatives=5, subsample_t=1e-4, lr=1e-2, batch_size=1024,
                  epochs=5, subset=0),
    smoke=dict(epochs=1, subset=20_000), datasets=("tinyshakespeare",),
))


def _rnn_gradient_flow(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        curves, metrics = {}, {}
        settings = [("rnn", {"weight_scale": 0.9}), ("rnn", {"weight_scale": 2.0}), ("lstm", {"forget_bias": 1.0}),
                    ("lstm", {"forget_bias": 3.0}), ("gru", {})]
        for cell, kw in settings:
            norms = gradient_norm_vs_distance(cell, cfg.T, hidden_size=cfg.hidden_size, seed=cfg.seed, **kw)
            label = cell + "".join(f" {k}={v:g}" for k, v in kw.items())
            distance = torch.arange(cfg.T, -1, -1)  # T - t
            curves[label] = (distance.numpy(), norms.numpy())
            metrics[f"{label}/norm_at_T"] = float(norms[0])
        plot_lines(curves, run_dir / "figures" / "gradient_norm_vs_distance.png", "distance T - t (time steps)",
                   "||dh_T / ds_t||", logy=True, title="vanishing and exploding gradients through time")
        # the notes' claim: an LSTM (forget bias 1) keeps gradients orders of magnitude longer than a tanh RNN
        metrics["test/lstm_over_rnn_orders"] = float(np.log10(metrics["lstm forget_bias=1/norm_at_T"])
                                                     - np.log10(metrics["rnn weight_scale=0.9/norm_at_T"]))
        metrics["steps"] = len(settings)
        return metrics
    return Study(run)


register_recipe(Recipe(
    name="rnn-gradient-flow", task="sequence", notes="000 §5.2, 003 §8.1, 004 RNN/LSTM",
    description="Gradient norm against time-step distance for tanh RNNs, LSTMs (forget bias 1 and 3) and a GRU",
    build=_rnn_gradient_flow, metric="test/lstm_over_rnn_orders", threshold=3.0, budget_s=30,
    study=True,
    defaults=dict(T=50, hidden_size=32), smoke=dict(T=10),
))
