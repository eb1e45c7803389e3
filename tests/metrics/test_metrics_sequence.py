"""Sequence metrics: exact match counts whole sequences only; the streaming forms equal the one-shot counts."""

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.metrics.sequence import ExactMatch, TokenAccuracy, exact_match


def test_exact_match_counts_whole_sequences_only():
    assert exact_match(["abc", "ab", "cba", "abcd"], ["abc", "abc", "cba", "abc"]) == pytest.approx(0.5)
    assert exact_match([[1, 2], [3]], [[1, 2], [3, 4]]) == pytest.approx(0.5)  # a sequence stopped too early
    assert exact_match([], []) == 0.0
    with pytest.raises(ConfigError, match="one guess per target"):
        exact_match(["a"], [])


def test_streaming_exact_match_over_batches_equals_the_one_shot_fraction():
    guesses = [[5, 6, 2], [5, 2], torch.tensor([7, 2]), "ab", [4]]
    truths = [[5, 6, 2], [5, 6, 2], [7, 2], "ab", [4, 2]]
    m = ExactMatch()
    m.update(guesses[:2], truths[:2])
    m.update(guesses[2:], truths[2:])
    assert m.compute() == pytest.approx(3 / 5)
    m.reset()
    with pytest.raises(ConfigError, match="before any update"):
        m.compute()
    with pytest.raises(ConfigError, match="one guess per target"):
        m.update([[1]], [])


def test_token_accuracy_by_hand_with_padding_and_short_outputs():
    PAD = 0
    target = torch.tensor([[5, 6, 7, 2], [8, 2, PAD, PAD]])  # 6 real tokens (<EOS> = 2 included)
    generated = torch.tensor([[5, 9, 7], [8, 2, 3]])  # row 0 is one token short: its <EOS> is missing
    m = TokenAccuracy(PAD)
    m.update(generated, target)
    assert m.compute() == pytest.approx(4 / 6)  # 5, 7, 8, 2 right; 9 wrong, missing <EOS> wrong
    m.update(torch.tensor([[4, 2, 6, 6, 6]]), torch.tensor([[4, 2]]))  # longer outputs: extra tokens ignored
    assert m.compute() == pytest.approx(6 / 8)
