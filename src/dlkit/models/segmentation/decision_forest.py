"""Randomised decision forest, the per-pixel body-part classifier of the Kinect pipeline (Notes: 002 §5.1.1).

A tree splits a node's samples by f_theta(x) < tau, choosing (theta, tau) among random candidates by information
gain (Shannon entropy of the labels, in bits); it grows to `max_depth` or until a node is pure or too small, and a
leaf stores the distribution of the labels that reached it. Each tree of the forest sees a bootstrap replica of the
samples (bagging) and, at every node, a random subset of the features (random splitting); the forest averages the
trees' leaf distributions. Here the features are precomputed columns (e.g. depth-comparison features, one per
offset pair theta); with `thresholds=None` every midpoint between consecutive values of a candidate feature is a
candidate tau (the exact search), else `thresholds` of them drawn at random per feature (the Kinect paper's
sampled thresholds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError


def entropy(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of the label distributions given by counts [..., C] (0 for an empty one)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(-1, keepdims=True)
    p = counts / np.maximum(n, 1e-300)
    return -(p * np.log2(np.where(p > 0, p, 1.0))).sum(-1)


def information_gain(parent: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Information gain of splitting a node with label counts parent [C] into left [..., C] and the rest:
    H(parent) - |L| / n H(L) - |R| / n H(R)."""
    parent, left = np.asarray(parent, dtype=np.float64), np.asarray(left, dtype=np.float64)
    n, nl = parent.sum(), left.sum(-1)
    return entropy(parent) - nl / n * entropy(left) - (n - nl) / n * entropy(parent - left)


def _xlogx(n: int) -> np.ndarray:
    """The table k log2 k for k = 0..n (0 log 0 = 0)."""
    k = np.arange(n + 1, dtype=np.float64)
    return k * np.log2(np.maximum(k, 1.0))


def candidate_thresholds(x: np.ndarray, thresholds: int | None, rng: np.random.Generator | None = None,
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Candidate thresholds T [k, t] (ascending per column, NaN padding) for the columns of x [n, k], and bins
    [n, k]: x[i, j] < T[j, b] exactly when bins[i, j] <= b. thresholds=None: every midpoint between consecutive
    distinct values; else `thresholds` values of each column drawn at random (with replacement) from its samples."""
    n, k = x.shape
    if thresholds is None:
        values = [np.unique(x[:, j], return_inverse=True) for j in range(k)]
        t = max(len(u) for u, _ in values) - 1
        cand = np.full((k, max(t, 0)), np.nan)
        for j, (u, _) in enumerate(values):
            u = u.astype(np.float64)
            cand[j, :len(u) - 1] = (u[:-1] + u[1:]) / 2
        return cand, np.stack([inv.reshape(-1) for _, inv in values], 1)
    rng = rng or np.random.default_rng()
    cand = np.sort(x[rng.integers(0, n, size=(thresholds, k)), np.arange(k)].T.astype(np.float64), 1)
    bins, exact = np.zeros((n, k), np.int64), cand.astype(x.dtype)  # sampled values: exact in x's dtype
    for b in range(thresholds):  # bins = how many thresholds are <= x
        bins += x >= exact[:, b]
    return cand, bins


def best_split(x: np.ndarray, y: np.ndarray, num_classes: int, thresholds: int | None = None,
               min_samples_leaf: int = 1, rng: np.random.Generator | None = None) -> tuple[int, float, float]:
    """The best split x[:, j] < tau of samples x [n, k] with labels y [n] (0..C-1) among the candidate thresholds
    of `candidate_thresholds`: (j, tau, gain), or (-1, nan, -inf) when no candidate leaves min_samples_leaf
    samples on each side. The label counts left of every candidate come from one histogram of (column, bin, label)."""
    n, k = x.shape
    cand, bins = candidate_thresholds(x, thresholds, rng)
    t = cand.shape[1]
    if t == 0:
        return -1, float("nan"), -np.inf
    c = num_classes
    hist = np.bincount(((np.arange(k) * (t + 1) + bins) * c + y[:, None]).reshape(-1), minlength=k * (t + 1) * c)
    left = hist.reshape(k, t + 1, c).cumsum(1)[:, :t]                 # [k, t, C]: the samples with x < T[j, b]
    parent = np.bincount(y, minlength=c)
    table = _xlogx(n)
    nl = left.sum(-1)
    weighted = (table[nl] - table[left].sum(-1) + table[n - nl] - table[parent - left].sum(-1)) / n
    gain = (table[n] - table[parent].sum()) / n - weighted
    gain = np.where(np.isfinite(cand) & (nl >= min_samples_leaf) & (n - nl >= min_samples_leaf), gain, -np.inf)
    j, b = np.unravel_index(np.argmax(gain), gain.shape)
    if not np.isfinite(gain[j, b]):
        return -1, float("nan"), -np.inf
    return int(j), float(cand[j, b]), float(gain[j, b])


@dataclass
class DecisionTree:
    """A grown tree as arrays over its nodes: feature (-1 at a leaf), threshold, left and right children, and the
    label distribution [nodes, C] of the training samples that reached each node."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """The leaf reached by every sample of x [M, F] (all samples descend one level per step)."""
        node = np.zeros(len(x), np.int64)
        rows = np.arange(len(x))
        while True:
            f = self.feature[node]
            inner = f >= 0
            if not inner.any():
                return node
            go_left = x[rows[inner], f[inner]] < self.threshold[node[inner]]
            node[inner] = np.where(go_left, self.left[node[inner]], self.right[node[inner]])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.value[self.leaves(np.asarray(x))]

    @property
    def depth(self) -> int:
        depth = np.zeros(len(self.feature), np.int64)
        for i in range(len(self.feature)):  # children are numbered after their parent
            if self.feature[i] >= 0:
                depth[self.left[i]] = depth[self.right[i]] = depth[i] + 1
        return int(depth.max())


def _varying_features(columns: np.ndarray, idx: np.ndarray, k: int, rng: np.random.Generator):
    """k random features (ascending) that vary over the node's samples idx, and their values [k', |idx|]: the
    features are drawn in a random order and constant ones skipped, until k are found or none are left."""
    order = rng.permutation(len(columns)) if k < len(columns) else np.arange(len(columns))
    keep, values, start = [], [], 0
    while start < len(order) and sum(map(len, keep)) < k:
        batch = order[start:start + k - sum(map(len, keep))]
        start += len(batch)
        v = columns[batch[:, None], idx[None]]
        varying = v.min(1) < v.max(1)
        keep.append(batch[varying])
        values.append(v[varying])
    cand, values = np.concatenate(keep), np.concatenate(values)
    order = np.argsort(cand)
    return cand[order], values[order]


def grow_tree(x: np.ndarray, y: np.ndarray, num_classes: int, max_depth: int = 20, features_per_node: int | None = None,
              thresholds: int | None = None, min_samples_split: int = 2, min_samples_leaf: int = 1,
              rng: np.random.Generator | None = None) -> DecisionTree:
    """Grow one tree on x [n, F], y [n] (0..C-1), breadth first: a node becomes a leaf at max_depth, when pure,
    with fewer than min_samples_split samples, or when none of its `features_per_node` random features (all when
    None; constant features skipped, as scikit-learn does) can split it."""
    rng = rng or np.random.default_rng(0)
    n_features = x.shape[1]
    columns = np.ascontiguousarray(x.T)  # [F, n]: a node gathers its samples within each candidate column
    k = n_features if features_per_node is None else min(features_per_node, n_features)
    feature, threshold, left, right, value = [], [], [], [], []
    queue = [(np.arange(len(x)), 0)]
    head = 0
    while head < len(queue):
        idx, depth = queue[head]
        node = head
        head += 1
        counts = np.bincount(y[idx], minlength=num_classes)
        value.append(counts / len(idx))
        feature.append(-1)
        threshold.append(np.nan)
        left.append(-1)
        right.append(-1)
        if depth >= max_depth or len(idx) < min_samples_split or (counts > 0).sum() <= 1:
            continue
        cand, values = _varying_features(columns, idx, k, rng)
        if len(cand) == 0:  # every feature is constant over the node
            continue
        j, tau, _ = best_split(values.T, y[idx], num_classes, thresholds, min_samples_leaf, rng)
        if j < 0:
            continue
        go_left = columns[cand[j], idx] < tau
        feature[node], threshold[node] = int(cand[j]), tau
        left[node], right[node] = len(queue), len(queue) + 1
        queue += [(idx[go_left], depth + 1), (idx[~go_left], depth + 1)]
    return DecisionTree(np.array(feature, np.int64), np.array(threshold, np.float64), np.array(left, np.int64),
                        np.array(right, np.int64), np.array(value, np.float64).reshape(-1, num_classes))


def bootstrap_indices(n: int, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """A bootstrap replica: `size` (default n) indices of 0..n-1 drawn with replacement."""
    return rng.integers(0, n, size=n if size is None else size)


class DecisionForest:
    """A randomised decision forest (bagging + random splitting); `predict_proba` averages the trees' leaf
    distributions. `max_samples`: the size of each tree's bootstrap replica (default: all n samples);
    `bootstrap=False` gives every tree all samples."""

    def __init__(self, trees: int = 3, max_depth: int = 20, features_per_node: int | None = None,
                 thresholds: int | None = None, min_samples_split: int = 2, min_samples_leaf: int = 1,
                 bootstrap: bool = True, max_samples: int | None = None, seed: int = 0):
        if trees < 1 or max_depth < 0 or min_samples_split < 2 or min_samples_leaf < 1 or \
                any(v is not None and v < 1 for v in (features_per_node, thresholds)):
            raise ConfigError(f"DecisionForest expects trees >= 1, max_depth >= 0, min_samples_split >= 2, "
                              f"min_samples_leaf >= 1, features_per_node and thresholds >= 1 or None; got "
                              f"trees={trees}, max_depth={max_depth}, min_samples_split={min_samples_split}, "
                              f"min_samples_leaf={min_samples_leaf}, features_per_node={features_per_node}, "
                              f"thresholds={thresholds}")
        self.trees, self.max_depth, self.features_per_node = trees, max_depth, features_per_node
        self.thresholds, self.min_samples_split, self.min_samples_leaf = thresholds, min_samples_split, min_samples_leaf
        self.bootstrap, self.max_samples, self.seed = bootstrap, max_samples, seed
        self.estimators: list[DecisionTree] = []
        self.num_classes = 0

    def fit(self, x: np.ndarray, y: np.ndarray, num_classes: int | None = None) -> DecisionForest:
        """Grow the trees on features x [n, F] and integer labels y [n] in 0..num_classes-1."""
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
        if x.ndim != 2 or y.shape != x.shape[:1] or len(y) == 0 or not np.issubdtype(y.dtype, np.integer) or \
                y.min() < 0:
            raise ConfigError(f"DecisionForest.fit expects x [n, F] and integer labels y [n] >= 0 with n >= 1; got "
                              f"x {x.shape}, y {y.shape} of {y.dtype}")
        self.num_classes = int(num_classes if num_classes is not None else y.max() + 1)
        if y.max() >= self.num_classes:
            raise ConfigError(f"labels must be below num_classes={self.num_classes}; got {int(y.max())}")
        rng = np.random.default_rng(self.seed)
        self.estimators = []
        for _ in range(self.trees):
            idx = bootstrap_indices(len(x), self.max_samples, rng) if self.bootstrap else np.arange(len(x))
            self.estimators.append(grow_tree(x[idx], y[idx], self.num_classes, self.max_depth, self.features_per_node,
                                             self.thresholds, self.min_samples_split, self.min_samples_leaf, rng))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The average of the trees' leaf distributions, [M, C]."""
        if not self.estimators:
            raise ConfigError("DecisionForest.predict_proba: call fit() first")
        x = np.asarray(x, dtype=np.float32)
        return sum(t.predict_proba(x) for t in self.estimators) / len(self.estimators)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(1)
