"""Sequence metrics: exact match counts whole sequences only."""

import pytest

from dlkit.errors import ConfigError
from dlkit.metrics.sequence import exact_match


def test_exact_match_counts_whole_sequences_only():
    assert exact_match(["abc", "ab", "cba", "abcd"], ["abc", "abc", "cba", "abc"]) == pytest.approx(0.5)
    assert exact_match([[1, 2], [3]], [[1, 2], [3, 4]]) == pytest.approx(0.5)  # a sequence stopped too early
    assert exact_match([], []) == 0.0
    with pytest.raises(ConfigError, match="one guess per target"):
        exact_match(["a"], [])
