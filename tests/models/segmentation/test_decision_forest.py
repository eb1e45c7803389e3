"""The randomised decision forest of the Kinect pipeline (Notes: 002 §5.1.1), against hand values, brute force and
scikit-learn's trees and forests."""

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from dlkit.data.depth_figures import BACKGROUND, PARTS, render_figures
from dlkit.errors import ConfigError
from dlkit.models.segmentation.decision_forest import (
    DecisionForest,
    best_split,
    bootstrap_indices,
    entropy,
    grow_tree,
    information_gain,
)
from dlkit.ops.depth_features import depth_features, random_offsets
from dlkit.recipes.kinect import body_pixels


def _toy(n, rng):
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + 0.3 * rng.normal(size=n) > 0.5).astype(int) + 2 * (x[:, 2] > 0)
    return x, y


def test_information_gain_by_hand():
    # parent 4 / 4 (1 bit); children 3 / 1 and 1 / 3: H = -(3/4 log2 3/4 + 1/4 log2 1/4) = 0.811278 bits each
    assert entropy(np.array([4, 4])) == pytest.approx(1.0)
    assert entropy(np.array([3, 1])) == pytest.approx(0.8112781245)
    assert information_gain(np.array([4, 4]), np.array([3, 1])) == pytest.approx(1 - 0.8112781245)
    # a pure split of 2 / 2 / 4 into (2, 2, 0) and (0, 0, 4): H(parent) = 1.5, gain = 1.5 - 1/2 * 1 - 0
    assert information_gain(np.array([2, 2, 4]), np.array([2, 2, 0])) == pytest.approx(1.0)
    assert information_gain(np.array([2, 2]), np.array([1, 1])) == pytest.approx(0.0)


def test_best_split_and_a_depth_one_tree_pick_the_brute_force_best_threshold():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = ((x[:, 1] > 0.3) ^ (rng.uniform(size=40) < 0.2)).astype(int) + (x[:, 2] > 1)
    parent = np.bincount(y, minlength=3)
    best = (-np.inf, None, None)
    for j in range(3):
        u = np.unique(x[:, j]).astype(np.float64)
        for tau in (u[:-1] + u[1:]) / 2:
            g = information_gain(parent, np.bincount(y[x[:, j] < tau], minlength=3))
            if g > best[0] + 1e-12:
                best = (g, j, tau)
    j, tau, gain = best_split(x, y, 3)
    assert (j, gain) == (best[1], pytest.approx(best[0])) and tau == pytest.approx(best[2])
    stump = grow_tree(x, y, 3, max_depth=1)
    assert stump.feature[0] == best[1] and stump.threshold[0] == pytest.approx(best[2]) and stump.depth == 1
    np.testing.assert_allclose(stump.value[1], np.bincount(y[x[:, j] < tau], minlength=3) / (x[:, j] < tau).sum())
    # sampled thresholds are values of the column, and the split is the best of them
    j2, tau2, gain2 = best_split(x, y, 3, thresholds=5, rng=np.random.default_rng(1))
    assert np.float32(tau2) in x[:, j2] and gain2 <= best[0] + 1e-12


def test_a_tree_grown_on_every_feature_equals_sklearns_entropy_tree():
    rng = np.random.default_rng(0)
    x, y = _toy(3000, rng)
    x_test, _ = _toy(3000, rng)
    ours = grow_tree(x, y, 4, max_depth=4)
    ref = DecisionTreeClassifier(criterion="entropy", max_depth=4, random_state=0).fit(x, y)
    assert len(ours.feature) == ref.tree_.node_count
    np.testing.assert_allclose(ours.predict_proba(x_test), ref.predict_proba(x_test), atol=1e-12)
    # separable data: a full-depth tree fits the training set exactly
    assert (grow_tree(x, y, 4, max_depth=30).predict_proba(x).argmax(1) == y).all()


def test_forest_posterior_and_bootstrap_replica():
    rng = np.random.default_rng(0)
    idx = bootstrap_indices(500, None, rng)
    assert len(idx) == 500 and len(np.unique(idx)) < 500                      # the size of the data, duplicates
    x, y = _toy(600, rng)
    forest = DecisionForest(trees=4, max_depth=6, features_per_node=2, thresholds=8, seed=0).fit(x, y)
    p = forest.predict_proba(x[:50])
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(p, np.mean([t.predict_proba(x[:50]) for t in forest.estimators], 0))
    assert len({len(t.feature) for t in forest.estimators}) > 1                 # different replicas, trees
    # like scikit-learn, a node skips constant features: one random feature per node still finds the informative one
    flat = np.concatenate([np.zeros((600, 9), np.float32), x[:, 2:3]], 1)
    single = DecisionForest(trees=1, max_depth=1, features_per_node=1, bootstrap=False).fit(flat, (x[:, 2] > 0) * 1)
    assert single.estimators[0].feature[0] == 9 and (single.predict(flat) == (x[:, 2] > 0)).all()
    stuck = DecisionForest(1, features_per_node=3, bootstrap=False).fit(flat[:, :9], y)  # nothing varies: a leaf
    np.testing.assert_allclose(stuck.predict_proba(flat[:2]), np.tile(np.bincount(y) / len(y), (2, 1)))
    with pytest.raises(ConfigError, match="trees"):
        DecisionForest(trees=0)
    with pytest.raises(ConfigError, match="labels"):
        DecisionForest().fit(x, y.astype(float))


def test_forest_accuracy_on_depth_features_is_close_to_sklearns_forest():
    rng = np.random.default_rng(0)
    train, test = render_figures(60, seed=1), render_figures(8, seed=2)
    offsets = random_offsets(60, 80.0, rng)
    p_train, p_test = body_pixels(train.labels, 150, rng), body_pixels(test.labels, None, rng)
    x_train, x_test = (depth_features(f.depth, p, offsets, BACKGROUND) for f, p in ((train, p_train), (test, p_test)))
    y_train, y_test = (f.labels[p[:, 0], p[:, 1], p[:, 2]] for f, p in ((train, p_train), (test, p_test)))
    # the same split search as scikit-learn (every threshold of 15 random non-constant features), 5 trees; on
    # all the samples, as bootstrap replicas of 9000 pixels move either forest's accuracy by a few points from
    # seed to seed (the replicas are tested above)
    ours = DecisionForest(trees=5, max_depth=15, features_per_node=15, min_samples_split=10, bootstrap=False,
                          seed=0).fit(x_train, y_train, len(PARTS))
    ref = RandomForestClassifier(5, criterion="entropy", max_depth=15, max_features=15, min_samples_split=10,
                                 bootstrap=False, random_state=0).fit(x_train, y_train)
    acc, ref_acc = (ours.predict(x_test) == y_test).mean(), (ref.predict(x_test) == y_test).mean()
    print(f"pixel accuracy: ours {acc:.3f}, sklearn {ref_acc:.3f}")
    assert acc > 0.65 and abs(acc - ref_acc) < 0.03
