"""Recipes of recurrent sequence models: seq2seq with attention on a generated date-translation task, word2vec on
Tiny Shakespeare, and the gradient flow through time of RNNs, LSTMs and GRUs (Notes: 003 §8.1, §9-9.2, 000 §5,
004 RNN/LSTM, Seq2Seq, Word2Vec).

- `seq2seq-attention-dates` trains a bidirectional-GRU encoder and a GRU decoder with Bahdanau attention by
  teacher forcing through the Trainer (`tasks.seq2seq`), scores greedy decoding to <EOS> on held-out dates
  (exact match) and draws the attention alignments.
- `word2vec-shakespeare` trains skip-gram with negative sampling (`tasks.embedding`) and scores where related
  words (thou/thee, king/queen, ...) fall among each other's neighbours.
- `rnn-gradient-flow` trains nothing: it measures ||dh_T / ds_t|| of freshly drawn cells, so it is a Study.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.sequence_tasks import date_task
from ..data.text import Vocab, load_tiny_shakespeare, word_tokenize
from ..errors import ConfigError
from ..models.sequence.word2vec import noise_distribution
from ..registry import create_model
from ..report.figures import plot_lines
from ..tasks.embedding import EmbeddingTask, SkipGramBatches
from ..tasks.optimization import OPTIMIZER_OPTIONS
from ..tasks.seq2seq import Seq2SeqTask
from ..techniques.bptt import gradient_norm_vs_distance
from .registry import Recipe, Setup, Study, register_recipe


def _seq2seq_dates(cfg, dist):
    data = date_task(n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed)
    src, tgt = data.src_vocab, data.tgt_vocab
    kwargs = dict(src_vocab_size=len(src), tgt_vocab_size=len(tgt), embed_dim=cfg.embed_dim,
                  hidden_size=cfg.hidden_size, bidirectional=cfg.bidirectional, attention=cfg.attention,
                  pad_id=tgt.pad_id, sos_id=tgt.sos_id, eos_id=tgt.eos_id)
    torch.manual_seed(cfg.seed)
    model = create_model("seq2seq_gru_attention", **kwargs)
    task = Seq2SeqTask(model, cfg, src, tgt, beam_width=cfg.beam_width)
    train = data.loader("train", cfg.batch_size, seed=cfg.seed, rank=dist.rank, world_size=dist.world_size)
    return Setup(task, train,
                 val=data.loader("test", cfg.eval_batch_size, shuffle=False, bucket=False), val_name="test",
                 model_spec={"name": "seq2seq_gru_attention", "kwargs": kwargs, "class_names": list(tgt.itos),
                             "source_tokens": list(src.itos), "input": None},  # the token of each id, both sides
                 extra={"parameters": sum(p.numel() for p in model.parameters())})


register_recipe(Recipe(
    name="seq2seq-attention-dates", task="sequence", notes="003 §9, §9.2; 000 §5.3; 004 Seq2Seq",
    description="GRU encoder-decoder with attention translating written dates to ISO format (generated data)",
    build=_seq2seq_dates, metric="test/exact_match", threshold=0.99, budget_s=300,
    defaults=dict(OPTIMIZER_OPTIONS, n_train=10_000, n_test=1_000, attention="bahdanau", bidirectional=True,
                  embed_dim=32, hidden_size=128, lr=3e-3, batch_size=64, epochs=3, grad_clip_norm=1.0,
                  eval_batch_size=1000, beam_width=1, eval_every_epochs=None, threads=1),
    # 1.000 after 3 epochs (loss < 1e-3 by epoch 2). The final weights are always scored; scoring every epoch
    # (eval_every_epochs=1) costs ~2 s each. beam_width=k > 1 adds test/beam_exact_match. One thread: on the
    # shared 2-core machine two threads spin on each other (15 min instead of 1 when other jobs run).
    smoke=dict(n_train=256, n_test=32, epochs=1),
))

# pairs a reader of Shakespeare expects to be near each other (forms of one word, or one role)
RELATED_PAIRS = [("thou", "thee"), ("thy", "thine"), ("my", "thy"), ("king", "queen"), ("lord", "lady"),
                 ("he", "she"), ("him", "her"), ("father", "mother"), ("son", "daughter"), ("brother", "sister"),
                 ("good", "noble"), ("love", "hate"), ("day", "night"), ("heaven", "earth"), ("man", "woman")]
QUERY_WORDS = ["king", "love", "thou", "death", "sweet", "sword", "night", "father"]


def _word2vec(cfg, dist):
    words = word_tokenize(load_tiny_shakespeare(cfg.data_dir))
    words = words[: cfg.subset] if cfg.subset else words
    vocab = Vocab.build([words], min_freq=cfg.min_freq)
    if len(vocab) == len(vocab.specials):
        raise ConfigError(f"no word occurs at least min_freq={cfg.min_freq} times in the {len(words):,} tokens of "
                          "the text; lower min_freq, or use more of the text (subset=0: all)")
    counts = torch.tensor([vocab.counts.get(t, 0) for t in vocab.itos], dtype=torch.float64)
    torch.manual_seed(cfg.seed)
    model = create_model("word2vec_skipgram", vocab_size=len(vocab), dim=cfg.dim, num_negatives=cfg.negatives,
                         noise_probs=noise_distribution(counts), vocab=vocab)
    train = SkipGramBatches(vocab.encode(words), counts, cfg.window, cfg.batch_size, cfg.subsample_t,
                            model.noise_probs, cfg.negatives, seed=cfg.seed, min_id=vocab.unk_id)
    task = EmbeddingTask(model, cfg, vocab, QUERY_WORDS, note=f"min count {cfg.min_freq}; {len(words):,} tokens")
    return Setup(task, train, val=RELATED_PAIRS, val_name="test",  # chance level: 5% of random pairs
                 model_spec={"name": "word2vec_skipgram", "class_names": list(vocab.itos), "input": None,
                             "kwargs": {"vocab_size": len(vocab), "dim": cfg.dim, "num_negatives": cfg.negatives}},
                 extra={"vocab_size": len(vocab)})


register_recipe(Recipe(
    name="word2vec-shakespeare", task="sequence", notes="003 §9.1, 004 Word2Vec",
    description="Skip-gram with negative sampling on Tiny Shakespeare words; nearest neighbours in the report",
    build=_word2vec, metric="test/related_pairs_in_top5pct", threshold=0.6, budget_s=300,  # measured 0.73
    defaults=dict(OPTIMIZER_OPTIONS, min_freq=5, dim=64, window=3, negatives=5, subsample_t=1e-4, lr=1e-2,
                  batch_size=1024, epochs=5, subset=0, threads=1),
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
