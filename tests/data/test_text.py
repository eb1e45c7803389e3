"""Tokenisers, the special-token vocabulary, one-hot / bag-of-words / n-gram encodings, padding and length
bucketing (Notes: 003 §9, 000 §5.3), checked against hand examples, collections.Counter, sklearn's
CountVectorizer and torch's pad_sequence."""

import math
from collections import Counter

import pytest
import torch
from sklearn.feature_extraction.text import CountVectorizer

from dlkit.data.text import (
    EOS,
    GO,
    PAD,
    SOS,
    UNK,
    BucketBatchSampler,
    NGramModel,
    Vocab,
    bag_of_words,
    char_tokenize,
    ngram_counts,
    ngrams,
    one_hot,
    pad_sequences,
    word_tokenize,
)
from dlkit.errors import ConfigError

DOCS = ["The cat sat on the mat.", "The dog sat on the log!", "A cat, a dog: friends?", "Don't stop the cat."]


def test_word_tokenizer_lowercases_and_splits_words_from_punctuation():
    assert word_tokenize("Don't stop, Bob!  It's 3pm.") == ["don't", "stop", ",", "bob", "!", "it's", "3pm", "."]
    assert word_tokenize("Hello", lower=False) == ["Hello"]
    assert char_tokenize("a b!") == ["a", " ", "b", "!"]


def test_special_tokens_have_fixed_ids_and_go_is_sos():
    v = Vocab.build([word_tokenize(d) for d in DOCS])
    assert v.itos[:4] == [PAD, SOS, EOS, UNK]
    assert (v.pad_id, v.sos_id, v.eos_id, v.unk_id) == (0, 1, 2, 3)
    assert v[GO] == v.sos_id and GO in v
    ids = v.encode(word_tokenize("the cat"), add_sos=True, add_eos=True)
    assert ids[0] == v.sos_id and ids[-1] == v.eos_id  # decoder inputs start with <SOS>, targets end with <EOS>


def test_vocab_orders_by_frequency_and_maps_rare_words_to_unk():
    seqs = [word_tokenize(d) for d in DOCS]
    counts = Counter(t for s in seqs for t in s)
    v = Vocab.build(seqs, min_freq=2)
    want = sorted((t for t, n in counts.items() if n >= 2), key=lambda t: (-counts[t], t))
    assert v.itos[4:] == want and v.itos[4] == "the"  # 'the' occurs 5 times
    assert v["mat"] == v.unk_id and v["zebra"] == v.unk_id  # once in the corpus, and never
    assert v.decode(v.encode(["the", "mat"])) == ["the", UNK]
    capped = Vocab.build(seqs, max_size=6)  # max_size counts the special tokens
    assert len(capped) == 6 and capped.itos[4:] == want[:2]


def test_encode_decode_round_trips_and_to_text_stops_at_eos():
    v = Vocab.build([word_tokenize(d) for d in DOCS])
    toks = word_tokenize(DOCS[1])
    assert v.decode(v.encode(toks)) == toks
    chars = Vocab.build([char_tokenize("hello world")])
    ids = chars.encode("hello", add_sos=True, add_eos=True).tolist() + [chars.pad_id, chars["o"]]
    assert chars.to_text(ids) == "hello"
    assert chars.decode(ids, skip_special=True) == list("hello") + ["o"]
    with pytest.raises(ConfigError, match="sequences of tokens"):
        Vocab.build(["a str, not a token list"])


def test_one_hot_reproduces_the_notes_example_and_all_words_are_sqrt2_apart():
    v = Vocab(["cat", "dog", "bird"], specials=[])
    oh = v.one_hot(v.encode(["cat", "dog", "bird"]))
    assert oh.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    d = torch.cdist(oh, oh)
    assert torch.allclose(d[~torch.eye(3, dtype=torch.bool)], torch.full((6,), math.sqrt(2)))
    emb = torch.randn(3, 5)
    assert torch.allclose(oh @ emb, emb[v.encode(["cat", "dog", "bird"])])  # one_hot(i) E = lookup(i)
    with pytest.raises(ConfigError, match=r"\[0, 2\]"):
        one_hot(torch.tensor([3]), 3)


def test_bag_of_words_equals_sklearn_count_vectorizer():
    seqs = [word_tokenize(d) for d in DOCS]
    v = Vocab.build(seqs)
    ours = v.bag_of_words(seqs)
    cv = CountVectorizer(tokenizer=word_tokenize, lowercase=False, token_pattern=None)
    ref = torch.tensor(cv.fit_transform(DOCS).toarray(), dtype=torch.float32)
    cols = [v.stoi[t] for t in cv.get_feature_names_out()]
    assert torch.equal(ours[:, cols], ref)
    assert ours[:, :4].sum() == 0 and ours.sum() == sum(len(s) for s in seqs)


def test_bag_of_words_forgets_word_order():
    doc = torch.tensor([5, 3, 3, 7, 1])
    assert torch.equal(bag_of_words([doc], 8), bag_of_words([doc[torch.randperm(5)]], 8))
    assert bag_of_words([doc], 8)[0].tolist() == [0, 1, 0, 2, 0, 1, 0, 1]


def test_ngram_counts_equal_counter_of_shifted_zips():
    seqs = [word_tokenize(d) for d in DOCS]
    for n in (1, 2, 3):
        ref = Counter(g for s in seqs for g in zip(*[s[i:] for i in range(n)]))
        assert ngram_counts(seqs, n) == ref
    assert ngrams("abcd", 3) == [("a", "b", "c"), ("b", "c", "d")] and ngrams("ab", 3) == []


def test_bigram_probabilities_are_count_ratios_summing_to_one():
    sents = [["the", "cat", "sat"], ["the", "dog", "sat"], ["the", "cat", "ran"]]
    lm = NGramModel(sents, n=2)
    assert lm.prob("cat", ["the"]) == pytest.approx(2 / 3) and lm.prob("dog", ["the"]) == pytest.approx(1 / 3)
    assert lm.prob("the", []) == 1.0  # every sentence starts with 'the' after <SOS>
    words = {w for s in sents for w in s} | {EOS}
    for ctx in (["the"], ["cat"], ["sat"], []):
        assert sum(lm.prob(w, ctx) for w in words) == pytest.approx(1.0)
    # chain rule: P(<SOS> the cat sat <EOS>) = 1 * 2/3 * 1/2 * 1
    assert lm.sentence_prob(["the", "cat", "sat"]) == pytest.approx(1 / 3)
    assert lm.sentence_prob(["the", "dog", "ran"]) == 0.0  # unseen bigram, no smoothing


def test_padding_equals_torch_pad_sequence_with_lengths_and_mask():
    seqs = [torch.tensor([4, 5, 6]), torch.tensor([7]), torch.tensor([8, 9])]
    batch = pad_sequences(seqs, pad_id=0)
    ref = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=0)
    assert torch.equal(batch.ids, ref) and batch.lengths.tolist() == [3, 1, 2]
    assert batch.padding_mask.tolist() == [[False] * 3, [False, True, True], [False, False, True]]
    assert pad_sequences(seqs, max_len=5).ids.shape == (3, 5)
    with pytest.raises(ConfigError, match="max_len"):
        pad_sequences(seqs, max_len=2)


def test_bucketing_covers_every_index_once_and_wastes_less_padding():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 50, (1000,), generator=g)
    sampler = BucketBatchSampler(lengths, 32, seed=1, pool_batches=8)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000)) and len(batches) == len(sampler) == 32

    def padding(bs):
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in bs)

    random_batches = torch.randperm(1000, generator=g).split(32)
    assert padding(batches) < padding(random_batches) / 4
    assert list(sampler) == batches  # same (seed, epoch), same batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    in_order = list(BucketBatchSampler(lengths, 32, shuffle=False))
    assert [i for b in in_order for i in b] == torch.argsort(lengths, stable=True).tolist()
    dropped = BucketBatchSampler(lengths, 32, seed=1, pool_batches=8, drop_last=True)
    assert all(len(b) == 32 for b in dropped) and len(list(dropped)) == len(dropped)
