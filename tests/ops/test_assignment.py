"""The Hungarian method (Notes: 002 §4.3.6) against brute force over all assignments and scipy."""

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment as scipy_lsa

from dlkit.errors import ConfigError
from dlkit.ops.assignment import linear_sum_assignment


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (4, 4), (2, 5), (5, 2), (3, 6), (6, 6)])
def test_equals_brute_force_over_every_assignment(shape):
    n, m = shape
    for seed in range(20):
        cost = np.random.default_rng(seed).normal(size=shape)
        rows, cols = linear_sum_assignment(torch.tensor(cost))
        k = min(n, m)
        if n <= m:
            best = min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), k))
        else:
            best = min(sum(cost[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), k))
        assert len(rows) == k and len(set(rows.tolist())) == k and len(set(cols.tolist())) == k
        assert cost[rows.numpy(), cols.numpy()].sum() == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("shape", [(10, 10), (30, 100), (100, 30), (64, 64), (1, 50)])
def test_equals_scipy_on_random_and_integer_costs(shape):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        for cost in (rng.random(shape), rng.integers(0, 5, shape).astype(float)):  # integers: many ties
            rows, cols = linear_sum_assignment(cost)
            want_rows, want_cols = scipy_lsa(cost)
            assert cost[rows.numpy(), cols.numpy()].sum() == pytest.approx(cost[want_rows, want_cols].sum(), abs=1e-9)
            assert rows.tolist() == sorted(rows.tolist()) and len(set(cols.tolist())) == min(shape)
            if cost.dtype == float and len(np.unique(cost)) == cost.size:  # a unique optimum: the same pairs
                assert rows.tolist() == want_rows.tolist() and cols.tolist() == want_cols.tolist()


def test_a_detr_style_hand_example_and_bad_input():
    # 3 queries, 2 objects: query 2 fits object 0 best, query 0 fits object 1; query 1 stays unmatched
    cost = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.2, 0.6]])
    rows, cols = linear_sum_assignment(cost)
    assert rows.tolist() == [0, 2] and cols.tolist() == [1, 0]
    assert linear_sum_assignment(torch.zeros(0, 3))[0].numel() == 0
    with pytest.raises(ConfigError, match="NaN or infinite"):
        linear_sum_assignment(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ConfigError, match="2-D"):
        linear_sum_assignment(torch.zeros(3))
