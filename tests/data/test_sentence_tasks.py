"""Sentence-level data for BERT (Notes: 004 BERT): speech lines, next-sentence pairs, word-order examples."""

from collections import Counter

import pytest
import torch

from dlkit.data.sentence_tasks import (
    encode_single_sentences,
    sentence_pairs,
    shuffle_words,
    speech_lines,
    word_order_examples,
)
from dlkit.errors import ConfigError

SCRIPT = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?
Hear me:
let it be done.
"""


def test_speech_lines_drop_headings_and_blank_lines_only():
    assert speech_lines(SCRIPT) == ["Before we proceed any further, hear me speak.", "Speak, speak.",
                                    "You are all resolved rather to die than to famish?", "Hear me:",
                                    "let it be done."]


def test_shuffle_words_moves_words_keeps_punctuation_and_the_multiset():
    g = torch.Generator().manual_seed(0)
    toks = ["before", "we", "proceed", ",", "hear", "me", "speak", "."]
    for _ in range(20):
        out = shuffle_words(toks, g)
        assert out != toks and Counter(out) == Counter(toks)
        assert out[3] == "," and out[7] == "."
    assert shuffle_words(["a", "b"], g) == ["b", "a"]
    with pytest.raises(ConfigError, match="two different words"):
        shuffle_words(["so", ",", "so"], g)


def test_word_order_examples_are_balanced_distinct_and_seeded():
    lines = [f"w{i} and more words here number {i}" for i in range(100)] + ["too short"]
    ex = word_order_examples(lines, 40, min_words=5, seed=1)
    assert len(ex.tokens) == 40 and int(ex.labels.sum()) == 20
    real = {" ".join(t) for t in (x.split() for x in lines)}
    for toks, y in zip(ex.tokens, ex.labels.tolist()):
        assert (" ".join(toks) in real) == bool(y)  # shuffled lines are never a real line here
    numbers = [next(t for t in toks if t[0] == "w" and t[1:].isdigit()) for toks in ex.tokens]
    assert len(set(numbers)) == 40  # every line once
    again = word_order_examples(lines, 40, min_words=5, seed=1)
    assert again.tokens == ex.tokens and torch.equal(again.labels, ex.labels)
    with pytest.raises(ConfigError, match="only 100 lines"):
        word_order_examples(lines, 101)


def test_encode_single_sentences_layout_and_truncation():
    out = encode_single_sentences([torch.tensor([7, 8]), torch.tensor([5, 6, 7, 8, 9])], 5, cls_id=2, sep_id=3)
    assert out.tolist() == [[2, 7, 8, 3, 0], [2, 5, 6, 7, 3]]
    with pytest.raises(ConfigError, match="max_len"):
        encode_single_sentences([torch.tensor([1])], 2, 2, 3)


def test_sentence_pairs_next_segments_follow_and_random_ones_come_from_the_stream():
    ids = torch.arange(10, 1010)  # token = position + 10, so a segment's start is readable
    g = torch.Generator().manual_seed(0)
    x, types, is_next = sentence_pairs(ids, 500, 4, 3, cls_id=1, sep_id=2, generator=g)
    assert x.shape == types.shape == (500, 10)
    assert torch.all(x[:, 0] == 1) and torch.all(x[:, 5] == 2) and torch.all(x[:, 9] == 2)
    assert types[0].tolist() == [0] * 6 + [1] * 4
    a, b = x[:, 1:5], x[:, 6:9]
    assert torch.all(a[:, 1:] - a[:, :-1] == 1) and torch.all(b[:, 1:] - b[:, :-1] == 1)  # contiguous text
    follows = b[:, 0] == a[:, -1] + 1
    assert torch.all(follows[is_next == 1])
    assert follows[is_next == 0].float().mean() < 0.05
    assert 0.4 < is_next.float().mean() < 0.6
    with pytest.raises(ConfigError, match="longer than"):
        sentence_pairs(torch.arange(7), 1, 4, 3, 1, 2)
