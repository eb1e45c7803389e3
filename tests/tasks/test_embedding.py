"""EmbeddingTask (Notes: 003 §9.1, 004 Word2Vec): the skip-gram batches are what a plain loop with one generator
draws and resume mid-epoch, neighbour ranks against a hand example, and a corpus learnt through the Trainer."""

from types import SimpleNamespace

import pytest
import torch

from dlkit.data.text import Vocab
from dlkit.engine.trainer import TrainerConfig, fit
from dlkit.models.sequence.word2vec import Word2Vec, noise_distribution, skipgram_pairs, subsample
from dlkit.tasks.embedding import EmbeddingTask, SkipGramBatches
from dlkit.tasks.optimization import OPTIMIZER_OPTIONS


def stream_args(seed=3):
    ids = torch.randint(0, 12, (400,), generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(ids, minlength=12).double()
    return dict(ids=ids, counts=counts, window=2, batch_size=64, subsample_t=0.05,
                noise_probs=noise_distribution(counts), num_negatives=3, seed=seed, min_id=3)


def test_batches_are_those_of_a_plain_loop_over_one_generator():
    a = stream_args()
    batches = SkipGramBatches(**a)
    g = torch.Generator().manual_seed(a["seed"])
    for epoch in range(2):
        kept = subsample(a["ids"], a["counts"], t=a["subsample_t"], generator=g)
        pairs = skipgram_pairs(kept[kept > a["min_id"]], a["window"])
        perm = torch.randperm(len(pairs), generator=g)
        batches.set_epoch(epoch)
        got = list(batches)
        assert len(got) == -(-len(pairs) // 64)
        if epoch == 0:
            assert len(batches) == len(got)
        for (c, o, neg), s in zip(got, range(0, len(perm), 64)):
            idx = perm[s: s + 64]
            want = torch.multinomial(a["noise_probs"], len(idx) * 3, replacement=True, generator=g).view(-1, 3)
            assert torch.equal(c, pairs[idx, 0]) and torch.equal(o, pairs[idx, 1]) and torch.equal(neg, want)


def test_a_run_stopped_mid_epoch_draws_the_rest_of_the_epoch_as_before():
    first = SkipGramBatches(**stream_args())
    list(first)  # epoch 0
    it = first.iter_from(0)
    done = [next(it) for _ in range(2)]
    state = first.state_dict()
    rest = list(it)
    second = SkipGramBatches(**stream_args())
    second.load_state_dict(state)
    again = list(second.iter_from(len(done)))
    assert len(again) == len(rest) and all(torch.equal(u, v) for x, y in zip(again, rest) for u, v in zip(x, y))
    nxt, nxt2 = list(first), list(second)  # and the epoch after it
    assert all(torch.equal(u, v) for x, y in zip(nxt, nxt2) for u, v in zip(x, y))


def test_ranks_and_related_fraction_by_hand():
    vocab = Vocab(["a", "b", "c", "d"])  # ids 4..7 after the four special tokens
    model = Word2Vec(len(vocab), 2, vocab=vocab)
    vecs = torch.zeros(8, 2)
    vecs[:4] = torch.tensor([[-1.0, -0.1]] * 4)  # specials: far from everything
    vecs[4:] = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, -0.7]])
    with torch.no_grad():
        model.in_embed.weight.copy_(vecs)
    task = EmbeddingTask(model, SimpleNamespace(), vocab, top_fraction=0.2)
    # cosines to a: b 0.994, d 0.707, c 0; specials < 0, a itself excluded. b nearest (0 of 8 closer),
    # c: b and d closer (2/8)
    got = task.evaluate(model, [("a", "b"), ("a", "c"), ("a", "zzz")])
    assert got["a~b/rank"] == 0.0 and got["a~c/rank"] == pytest.approx(2 / 8)
    assert got["related_pairs_in_top20pct"] == pytest.approx(0.5) and "a~zzz/rank" not in got


def test_words_of_shared_contexts_become_neighbours_through_the_trainer():
    # "x" and "y" fill the same slot between the same words; "p" and "q" fill another
    g = torch.Generator().manual_seed(0)
    words = []
    for _ in range(600):
        slot = torch.randint(2, (1,), generator=g).item()
        fill = ["x", "y"][torch.randint(2, (1,), generator=g).item()] if slot else \
            ["p", "q"][torch.randint(2, (1,), generator=g).item()]
        words += (["the", fill, "is"] if slot else ["a", fill, "was"])
    vocab = Vocab.build([words])
    ids = vocab.encode(words)
    counts = torch.tensor([vocab.counts.get(t, 0) for t in vocab.itos], dtype=torch.float64)
    torch.manual_seed(0)
    model = Word2Vec(len(vocab), 8, num_negatives=3, noise_probs=noise_distribution(counts), vocab=vocab)
    cfg = SimpleNamespace(**{**OPTIMIZER_OPTIONS, "lr": 0.05})
    task = EmbeddingTask(model, cfg, vocab)
    train = SkipGramBatches(ids, counts, 1, 128, 1.0, model.noise_probs, 3, seed=0, min_id=vocab.unk_id)
    pairs = [("x", "y"), ("p", "q")]
    before = task.evaluate(model, pairs)
    result = fit(task, train, pairs, TrainerConfig(epochs=15, eval_every_epochs=None, progress=False,
                                                   tensorboard=False, checkpoint_every_minutes=None))
    assert before["x~y/rank"] > 0.2
    assert result.metrics["val/x~y/rank"] == 0.0 and result.metrics["val/p~q/rank"] == 0.0


def test_metric_names_are_known_from_the_pairs_and_a_monitor_word2vec_never_logs_is_refused_before_training():
    from dlkit.engine.callbacks import EarlyStopping
    from dlkit.engine.trainer import Trainer
    from dlkit.errors import ConfigError

    vocab = Vocab(["a", "b", "c"])
    torch.manual_seed(0)
    model = Word2Vec(len(vocab), 4, vocab=vocab)
    task = EmbeddingTask(model, SimpleNamespace(**{**OPTIMIZER_OPTIONS, "lr": 0.05}), vocab, top_fraction=0.1)
    pairs = [("a", "b"), ("b", "zzz")]
    assert set(task.evaluate(model, pairs)) == set(task.metric_names_for(pairs)) == {
        "related_pairs_in_top10pct", "a~b/rank"}
    before = [p.detach().clone() for p in model.parameters()]
    counts = torch.ones(len(vocab), dtype=torch.float64)
    train = SkipGramBatches(torch.arange(4, 7).repeat(20), counts, 1, 8, 1.0, noise_distribution(counts), 2,
                            seed=0, min_id=vocab.unk_id)
    cfg = TrainerConfig(epochs=1, progress=False, tensorboard=False, checkpoint_every_minutes=None)
    with pytest.raises(ConfigError, match="'val/b~a/rank', which the task does not log.*val/a~b/rank"):
        Trainer(task, train, pairs, cfg, callbacks=[EarlyStopping(monitor="val/b~a/rank", patience=1)]).fit()
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
