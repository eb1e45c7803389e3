"""Word2Vec (Notes: 003 §9.1, 004 Word2Vec): training pairs, the negative-sampling and full-softmax losses, the
unigram^0.75 noise distribution, subsampling, the notes' complexity formula, and embeddings that group words
sharing contexts."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlkit import create_model
from dlkit.data.text import Vocab
from dlkit.errors import ConfigError
from dlkit.models.sequence.word2vec import (
    Word2Vec,
    cbow_examples,
    negative_sampling_loss,
    noise_distribution,
    skipgram_pairs,
    subsample,
    train_word2vec,
    word2vec_complexity,
)


def log_sigmoid(x: float) -> float:
    return math.log(1.0 / (1.0 + math.exp(-x)))


def test_negative_sampling_loss_equals_hand_computation():
    h = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    pos = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    neg = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    # example 1: u_o.h = 2, negatives 0 and -1; example 2: u_o.h = 2, negatives 2.5 and 0
    l1 = -log_sigmoid(2.0) - log_sigmoid(-0.0) - log_sigmoid(1.0)
    l2 = -log_sigmoid(2.0) - log_sigmoid(-2.5) - log_sigmoid(-0.0)
    assert negative_sampling_loss(h, pos, neg).item() == pytest.approx((l1 + l2) / 2, rel=1e-6)


def test_model_negative_sampling_loss_uses_input_and_output_vectors():
    m = Word2Vec(10, 4, objective="negative", num_negatives=3).double()
    torch.nn.init.normal_(m.out_embed.weight)
    centre, ctx, negs = torch.tensor([1, 4]), torch.tensor([2, 7]), torch.tensor([[0, 3, 3], [9, 8, 1]])
    v, u = m.in_embed.weight, m.out_embed.weight
    want = 0.0
    for b in range(2):
        want += -F.logsigmoid(u[ctx[b]] @ v[centre[b]]) - F.logsigmoid(-(u[negs[b]] @ v[centre[b]])).sum()
    torch.testing.assert_close(m.loss(centre, ctx, negatives=negs), want / 2)


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_full_softmax_loss_equals_cross_entropy(mode):
    m = Word2Vec(12, 5, mode=mode, objective="softmax").double()
    torch.nn.init.normal_(m.out_embed.weight)
    v, u = m.in_embed.weight, m.out_embed.weight
    targets = torch.tensor([3, 0, 11])
    if mode == "skipgram":
        inputs = torch.tensor([1, 2, 3])
        h = v[inputs]
    else:
        inputs = torch.tensor([[1, 2, 4, 5], [7, 8, -1, -1], [0, 0, 9, -1]])  # -1: no word (text edge)
        h = torch.stack([v[[1, 2, 4, 5]].mean(0), v[[7, 8]].mean(0), v[[0, 0, 9]].mean(0)])
    torch.testing.assert_close(m.loss(inputs, targets), F.cross_entropy(h @ u.t(), targets))


def test_cbow_prediction_does_not_depend_on_context_order():
    m = Word2Vec(20, 8, mode="cbow", objective="softmax").double()
    ctx = torch.randint(0, 20, (6, 4))
    torch.testing.assert_close(m(ctx[:, torch.randperm(4)]), m(ctx), rtol=0, atol=1e-15)


def test_noise_distribution_is_counts_to_the_three_quarters_normalised():
    counts = torch.tensor([1.0, 16.0, 81.0, 0.0])
    torch.testing.assert_close(noise_distribution(counts), torch.tensor([1.0, 8.0, 27.0, 0.0]) / 36)
    m = Word2Vec(4, 2, num_negatives=5, noise_probs=noise_distribution(counts))
    draws = m.sample_negatives(20000, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws.flatten(), minlength=4) / draws.numel()
    torch.testing.assert_close(freq, noise_distribution(counts), atol=0.01, rtol=0)


def test_subsampling_keeps_each_word_with_probability_sqrt_t_over_f():
    ids = torch.cat([torch.zeros(9000, dtype=torch.long), torch.ones(1000, dtype=torch.long)])
    counts = torch.tensor([9000, 1000])
    kept = subsample(ids, counts, t=0.01, generator=torch.Generator().manual_seed(0))
    frac = torch.bincount(kept, minlength=2) / counts
    assert frac[0].item() == pytest.approx(math.sqrt(0.01 / 0.9), abs=0.02)  # 0.105
    assert frac[1].item() == pytest.approx(math.sqrt(0.01 / 0.1), abs=0.03)  # 0.316


def test_skipgram_pairs_and_cbow_windows_equal_a_double_loop():
    ids = torch.tensor([5, 6, 7, 8, 9])
    assert len(skipgram_pairs(ids, 1)) == 2 * (5 - 1)  # 2(L - 1) pairs for a window of 1
    for w in (1, 2, 3):
        ref = sorted((int(ids[i]), int(ids[j])) for i in range(5) for j in range(5) if 0 < abs(i - j) <= w)
        assert sorted(map(tuple, skipgram_pairs(ids, w).tolist())) == ref
    ctx, centre = cbow_examples(ids, 2)
    assert centre.tolist() == ids.tolist()
    assert ctx[0].tolist() == [-1, -1, 6, 7] and ctx[2].tolist() == [5, 6, 8, 9]


def test_complexity_follows_the_notes_formula_and_mikolovs():
    assert word2vec_complexity(300, 10, 2**20) == 3000 + 200 == 3200  # n m + m log2|V|
    assert word2vec_complexity(300, 10, 2**20, form="cbow") == 3000 + 6000
    assert word2vec_complexity(300, 10, 2**20, form="skipgram") == 10 * (300 + 6000)
    with pytest.raises(ConfigError):
        word2vec_complexity(300, 10, 2**20, form="huffman")


@pytest.mark.parametrize("mode,objective", [("skipgram", "negative"), ("cbow", "softmax")])
def test_training_puts_words_of_the_same_cluster_nearest(mode, objective):
    g = torch.Generator().manual_seed(0)
    words = [f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)]
    vocab = Vocab(words, specials=[])
    # 300 sentences of 6 words, each drawn from one cluster: a-words co-occur with a-words, b-words with b-words
    ids = torch.cat([torch.randint(0, 6, (6,), generator=g) + 6 * (i % 2) for i in range(300)])
    counts = torch.bincount(ids, minlength=12)
    m = Word2Vec(12, 16, mode=mode, objective=objective, noise_probs=noise_distribution(counts), vocab=vocab)
    losses = train_word2vec(m, ids, window=2, epochs=5, batch_size=64, lr=0.02, seed=0)
    assert losses[-1] < losses[0]
    for w in words:
        assert all(n[0] == w[0] for n, _ in m.most_similar(w, 5)), (w, m.most_similar(w, 5))
    unit = F.normalize(m.embeddings.detach(), dim=1)
    sims = unit @ unit.t()
    same = torch.block_diag(torch.ones(6, 6), torch.ones(6, 6)).bool() & ~torch.eye(12, dtype=torch.bool)
    assert sims[same].mean() > sims[~same & ~torch.eye(12, dtype=torch.bool)].mean() + 0.5


def test_most_similar_is_cosine_ranking_and_analogy_is_b_minus_a_plus_c():
    words = ["man", "king", "woman", "queen", "apple"]
    m = Word2Vec(5, 3, vocab=words)
    with torch.no_grad():
        m.in_embed.weight.copy_(torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1], [-1, -1, 0.2]]))
    assert m.analogy("man", "king", "woman")[0][0] == "queen"
    sims = F.cosine_similarity(m.embeddings[1:2], m.embeddings).detach()
    ranked = [(words[i], pytest.approx(float(sims[i]))) for i in sims.argsort(descending=True).tolist() if i != 1]
    assert m.most_similar("king", 4) == ranked


def test_registered_models_have_two_tables_of_vocab_by_dim():
    with torch.device("meta"):
        m = create_model("word2vec_skipgram")
    assert sum(p.numel() for p in m.parameters()) == 2 * 10_000 * 100
    assert create_model("word2vec_cbow", vocab_size=50, dim=4).mode == "cbow"
