"""TP/FP matching, precision-recall curves and VOC average precision (Notes: 002 §4.1), by hand and vs sklearn."""

import numpy as np
import pytest

from dlkit.errors import ConfigError
from dlkit.metrics.detection import average_precision, match_detections, precision_recall_curve, voc_average_precision

SCORES = [0.6, 0.9, 0.5, 0.8, 0.7]  # in rank order: 0.9 TP, 0.8 FP, 0.7 TP, 0.6 TP, 0.5 FP
FLAGS = [1, 1, 0, 0, 1]


def test_pr_curve_hand_example():
    """Five detections ranked TP FP TP TP FP with 4 gt boxes: P = 1, 1/2, 2/3, 3/4, 3/5; R = 1/4, 1/4, 2/4, 3/4, 3/4."""
    p, r, thr = precision_recall_curve(SCORES, FLAGS, n_gt=4)
    np.testing.assert_allclose(p, [1, 1 / 2, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(r, [.25, .25, .5, .75, .75])
    np.testing.assert_allclose(thr, [.9, .8, .7, .6, .5])
    assert (np.diff(r) >= 0).all()  # recall never decreases as the threshold goes down


def test_ap_hand_values():
    p, r, _ = precision_recall_curve(SCORES, FLAGS, n_gt=4)
    # all points: envelope 1, 3/4, 3/4 at recalls 1/4, 2/4, 3/4 -> 1/4 (1 + 3/4 + 3/4)
    assert average_precision(p, r, "all") == pytest.approx(0.625)
    # 11 points: r = 0, .1, .2 -> 1; .3 ... .7 -> 3/4; .8, .9, 1 never reached -> 0
    assert average_precision(p, r, "11point") == pytest.approx((3 * 1 + 5 * 0.75) / 11)
    # 101 points: r = 0 .. .25 (26 levels) -> 1; .26 .. .75 (50 levels) -> 3/4
    assert average_precision(p, r, "101point") == pytest.approx((26 + 50 * 0.75) / 101)
    p, r, _ = precision_recall_curve([0.9, 0.8], [1, 1], n_gt=2)  # a perfect detector
    assert average_precision(p, r, "all") == average_precision(p, r, "11point") == 1.0
    with pytest.raises(ConfigError, match="method"):
        average_precision(p, r, "voc")


def test_all_point_ap_against_sklearn():
    """sklearn's AP = sum (R_n - R_{n-1}) P_n has no envelope: equal to "all" when every gt is detected and the
    precision at each TP is already its envelope; otherwise "all" is larger."""
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    equal = 0
    for _ in range(200):
        n = int(rng.integers(2, 30))
        scores = rng.permutation(n) / n + 0.01  # no ties (sklearn groups tied scores into one threshold)
        flags = rng.random(n) < rng.uniform(0.2, 0.9)
        if not flags.any():
            continue
        p, r, _ = precision_recall_curve(scores, flags, int(flags.sum()))
        ours, ref = average_precision(p, r, "all"), sk.average_precision_score(flags, scores)
        env = np.maximum.accumulate(p[::-1])[::-1]
        order = np.argsort(-scores)
        if np.allclose(env[flags[order]], p[flags[order]]):
            assert ours == pytest.approx(ref, abs=1e-12)
            equal += 1
        else:
            assert ours > ref
    assert equal > 20


def test_match_detections_hand_scenario():
    """3 gt boxes, 5 detections: a duplicate of a matched gt is a FP, a poor overlap is a FP, IoU must be > 0.5."""
    gt = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]
    boxes = [[0, 0, 10, 10],      # TP on gt 0
             [1, 0, 11, 10],      # duplicate of gt 0 (IoU 9/11): FP
             [20, 20, 30, 30],    # TP on gt 1
             [40, 40, 50, 45],    # IoU exactly 0.5 with gt 2: not > 0.5, FP
             [60, 60, 70, 70]]    # nothing there: FP
    scores = [0.9, 0.95, 0.8, 0.7, 0.6]
    np.testing.assert_array_equal(match_detections(boxes, scores, gt), [0, 1, 1, 0, 0])  # 0.95 takes gt 0 first
    np.testing.assert_array_equal(match_detections(boxes, scores, gt, iou_threshold=0.4), [0, 1, 1, 1, 0])
    flags = match_detections(boxes, scores, gt, difficult=[False, True, False])  # gt 1 difficult: ignored
    np.testing.assert_array_equal(flags, [0, 1, -1, 0, 0])


def test_voc_average_precision_over_images():
    dets = [{"boxes": [[0, 0, 10, 10], [50, 50, 60, 60]], "scores": [0.9, 0.8]},
            {"boxes": [[5, 5, 15, 15]], "scores": [0.7]}]
    gts = [{"boxes": [[0, 0, 10, 10]]}, {"boxes": [[5, 5, 15, 15], [30, 30, 40, 40]]}]
    # ranked TP (0.9), FP (0.8), TP (0.7); 3 gt: P = 1, 1/2, 2/3, R = 1/3, 1/3, 2/3 -> 1/3 + 1/3 * 2/3
    assert voc_average_precision(dets, gts) == pytest.approx(1 / 3 + 2 / 9)
    with pytest.raises(ConfigError, match="one detection dict"):
        voc_average_precision(dets, gts[:1])
