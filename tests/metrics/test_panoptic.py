"""Panoptic quality (Notes: 002 §5.3) against hand-worked examples and a brute-force pixel-loop reference."""

from collections import defaultdict
from fractions import Fraction

import numpy as np
import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.metrics.panoptic import PanopticQuality, panoptic_statistics

# categories of the hand examples: 0 = sky (stuff), 1 = car (thing), 2 = person (thing)
THINGS = (1, 2)


def _pair(rows, cats, crowd=()):
    return torch.tensor(rows), [{"id": i, "category": c, "iscrowd": int(i in crowd)} for i, c in cats.items()]


# Image A (4 x 4). GT: sky id 1 (rows 0-1, 8 px), car id 2 (rows 2-3, cols 0-1, 4 px), person id 3 (cols 2-3, 4 px).
GT_A = _pair([[1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]], {1: 0, 2: 1, 3: 2})
# Pred: sky id 10 = GT sky exactly (IoU 1, TP); car id 11 (col 0, 2 px): inter 2, union 4 + 2 - 2 = 4, IoU exactly
# 0.5, which must NOT match -> car 11 FP and GT car FN; id 12 labelled car over the GT person: wrong category -> car
# FP and GT person FN. Col 1 of rows 2-3 is predicted void.
PRED_A = _pair([[10, 10, 10, 10], [10, 10, 10, 10], [11, 0, 12, 12], [11, 0, 12, 12]], {10: 0, 11: 1, 12: 1})
# Image B (4 x 4). GT: sky id 1 everywhere but car id 2 (rows 0-1, cols 0-1, 4 px). Pred: car id 6 on 3 of those 4
# px (IoU 3/4, TP), sky id 5 on the other 13 px (inter 12, union 13, IoU 12/13, TP).
GT_B = _pair([[2, 2, 1, 1], [2, 2, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], {1: 0, 2: 1})
PRED_B = _pair([[6, 6, 5, 5], [6, 5, 5, 5], [5, 5, 5, 5], [5, 5, 5, 5]], {5: 0, 6: 1})


def test_hand_example_perfect_match_fp_fn_and_iou_exactly_half():
    s = panoptic_statistics(PRED_A, GT_A, 3)
    assert s["tp"].tolist() == [1, 0, 0] and s["fp"].tolist() == [0, 2, 0] and s["fn"].tolist() == [0, 1, 1]
    assert s["iou"].tolist() == [1.0, 0.0, 0.0]
    m = PanopticQuality(3, THINGS)
    m.update(PRED_A, GT_A)
    r = m.compute()
    # PQ_sky = 1 / 1 = 1; PQ_car = 0 / (0 + 2/2 + 1/2) = 0; PQ_person = 0 / (0 + 0 + 1/2) = 0
    assert r["pq_per_class"] == [1.0, 0.0, 0.0] and r["rq_per_class"] == [1.0, 0.0, 0.0]
    assert r["pq"] == pytest.approx(1 / 3) and r["pq_things"] == 0.0 and r["pq_stuff"] == 1.0
    assert (r["n"], r["n_things"], r["n_stuff"]) == (3, 2, 1)


def test_hand_example_two_images_streamed():
    m = PanopticQuality(3, THINGS)
    m.update([PRED_A, PRED_B], [GT_A, GT_B])
    r = m.compute()
    # sky: TP 2, IoU 1 + 12/13 -> PQ = SQ = 25/26, RQ 1.  car: TP 1 (IoU 3/4), FP 2, FN 1 -> denominator
    # 1 + 1 + 0.5 = 2.5, PQ = 0.3, SQ = 0.75, RQ = 0.4.  person: FN 1 -> 0, 0, 0.
    np.testing.assert_allclose(r["pq_per_class"], [25 / 26, 0.3, 0.0])
    np.testing.assert_allclose(r["sq_per_class"], [25 / 26, 0.75, 0.0])
    np.testing.assert_allclose(r["rq_per_class"], [1.0, 0.4, 0.0])
    assert r["pq"] == pytest.approx((25 / 26 + 0.3) / 3) and r["pq_things"] == pytest.approx(0.15)
    assert r["sq_things"] == pytest.approx(0.375) and r["rq_things"] == pytest.approx(0.2)
    assert r["pq_stuff"] == pytest.approx(25 / 26)
    m.reset()
    m.update(PRED_B, GT_B)
    assert m.compute()["pq_per_class"][2] != m.compute()["pq_per_class"][2]  # person never appears: NaN
    assert m.compute()["n_things"] == 1


def test_void_pixels_leave_the_iou_and_mostly_void_predictions_are_not_fp():
    # GT: car id 1 on cols 2-3, void (0) elsewhere. Pred car 7 covers all 8 px: inter 4, union 4 + 8 - 4 - 4 void
    # = 4 -> IoU 1 (it would be 0.5, no match, if void counted).
    s = panoptic_statistics(_pair([[7] * 4] * 2, {7: 1}), _pair([[0, 0, 1, 1]] * 2, {1: 1}), 3)
    assert s["tp"].tolist() == [0, 1, 0] and s["iou"][1] == 1.0 and s["fp"].sum() == 0
    # GT: car id 1 on col 3 only. Pred car 7 on cols 0-1 lies wholly on void -> unmatched but not a FP; pred car 8 on
    # cols 2-3 (half void): inter 2, union 2 + 4 - 2 - 2 = 2 -> IoU 1, TP.
    s = panoptic_statistics(_pair([[7, 7, 8, 8]] * 2, {7: 1, 8: 1}), _pair([[0, 0, 0, 1]] * 2, {1: 1}), 3)
    assert s["tp"].tolist() == [0, 1, 0] and s["fp"].sum() == 0 and s["fn"].sum() == 0
    # GT: sky id 1, void at row 0 cols 0-1. Pred car 9 on row 0 is exactly half void (2 of 4): that is not > 1/2, so
    # it is a FP; pred sky 10 on row 1: inter 4, union 6 + 4 - 4 = 6, IoU 2/3, TP.
    s = panoptic_statistics(_pair([[9, 9, 9, 9], [10] * 4], {9: 1, 10: 0}),
                            _pair([[0, 0, 1, 1], [1] * 4], {1: 0}), 3)
    assert s["tp"].tolist() == [1, 0, 0] and s["fp"].tolist() == [0, 1, 0] and s["fn"].sum() == 0
    assert s["iou"][0].item() == pytest.approx(2 / 3)


def test_crowd_regions_are_neither_matched_nor_fn_and_cover_same_category_predictions():
    gt = _pair([[1, 1, 1, 2]] * 2, {1: 1, 2: 1}, crowd={1})  # car crowd (6 px), car id 2 (2 px)
    # pred car 5 = the crowd region exactly: not matched (crowd), wholly in a car crowd -> not a FP; car 6 = GT 2.
    s = panoptic_statistics(_pair([[5, 5, 5, 6]] * 2, {5: 1, 6: 1}), gt, 3)
    assert s["tp"].tolist() == [0, 1, 0] and s["fp"].sum() == 0 and s["fn"].sum() == 0
    # the same region labelled person: a crowd of cars does not excuse it -> person FP.
    s = panoptic_statistics(_pair([[5, 5, 5, 6]] * 2, {5: 2, 6: 1}), gt, 3)
    assert s["tp"].tolist() == [0, 1, 0] and s["fp"].tolist() == [0, 0, 1] and s["fn"].sum() == 0


def test_empty_listed_segments_are_ignored_and_coco_category_id_is_accepted():
    pred = (torch.ones(2, 2, dtype=torch.long), [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 1}])
    gt = (torch.ones(2, 2, dtype=torch.long), [{"id": 1, "category": 0}, {"id": 9, "category": 2}])
    s = panoptic_statistics(pred, gt, 3)
    assert s["tp"].tolist() == [1, 0, 0] and s["fp"].sum() == 0 and s["fn"].sum() == 0


# ---- brute-force reference: pixel loops, all pairs, exact fractions ----

def _ref_stats(pred, gt, num_categories, void=0):
    (pm, ps), (gm, gs) = pred, gt
    pcat = {s["id"]: s["category"] for s in ps}
    gcat = {s["id"]: s["category"] for s in gs}
    gcrowd = {s["id"]: bool(s.get("iscrowd", 0)) for s in gs}
    area_p, area_g, inter = defaultdict(int), defaultdict(int), defaultdict(int)
    for grow, prow in zip(gm.tolist(), pm.tolist()):
        for g, p in zip(grow, prow):
            area_g[g] += 1
            area_p[p] += 1
            inter[g, p] += 1
    tp, fp, fn, iou = [0] * num_categories, [0] * num_categories, [0] * num_categories, [0.0] * num_categories
    matched_g, matched_p = set(), set()
    for g in gcat:
        for p in pcat:
            if gcrowd[g] or gcat[g] != pcat[p] or area_g[g] == 0 or area_p[p] == 0:
                continue
            union = area_g[g] + area_p[p] - inter[g, p] - inter[void, p]
            if Fraction(inter[g, p], union) > Fraction(1, 2):
                assert g not in matched_g and p not in matched_p  # uniqueness of matches
                matched_g.add(g)
                matched_p.add(p)
                tp[gcat[g]] += 1
                iou[gcat[g]] += inter[g, p] / union
    for g in gcat:
        if area_g[g] and g not in matched_g and not gcrowd[g]:
            fn[gcat[g]] += 1
    for p in pcat:
        if area_p[p] == 0 or p in matched_p:
            continue
        ignored = inter[void, p] + sum(inter[g, p] for g in gcat if gcrowd[g] and gcat[g] == pcat[p])
        if Fraction(ignored, area_p[p]) <= Fraction(1, 2):
            fp[pcat[p]] += 1
    return tp, fp, fn, iou


def _random_pair_and_gt(rng, num_categories, h=12, w=12):
    coarse = rng.integers(1, 7, size=(3, 4))
    gm = np.kron(coarse, np.ones((h // 3, w // 4), dtype=np.int64))
    gm[rng.random((h, w)) < 0.1] = 0  # void
    ids = sorted(set(np.unique(gm).tolist()) - {0})
    gcat = {i: int(rng.integers(num_categories)) for i in ids}
    gs = [{"id": i, "category": c, "iscrowd": int(rng.random() < 0.15)} for i, c in gcat.items()]
    if rng.random() < 0.3:
        gs.append({"id": 50, "category": 0})  # listed but absent
    relabel = {i: 100 + int(rng.integers(0, 8)) for i in ids}  # some GT segments merged in the prediction
    pm = np.vectorize(lambda v: relabel.get(v, 0))(gm)
    noise = rng.random((h, w)) < rng.uniform(0.0, 0.4)
    pm[noise] = rng.choice([0, 100, 101, 102, 110], size=int(noise.sum()))
    first_gt = {}
    for g, p in zip(gm.ravel().tolist(), pm.ravel().tolist()):
        first_gt.setdefault(p, g)
    ps = [{"id": p, "category": gcat.get(first_gt[p], 0) if rng.random() < 0.8 else int(rng.integers(num_categories))}
          for p in sorted(set(pm.ravel().tolist()) - {0})]
    return (torch.from_numpy(pm), ps), (torch.from_numpy(gm), gs)


def test_statistics_equal_brute_force_reference_on_random_images():
    rng = np.random.default_rng(0)
    total_tp = 0
    for _ in range(60):
        pred, gt = _random_pair_and_gt(rng, 4)
        s = panoptic_statistics(pred, gt, 4)
        tp, fp, fn, iou = _ref_stats(pred, gt, 4)
        assert s["tp"].tolist() == tp and s["fp"].tolist() == fp and s["fn"].tolist() == fn
        np.testing.assert_allclose(s["iou"].numpy(), iou, rtol=1e-12)
        total_tp += sum(tp)
    assert total_tp > 30  # the random cases do exercise matches


def test_streamed_pq_equals_reference_formula_with_things_and_stuff():
    rng = np.random.default_rng(1)
    things = (1, 3)
    m = PanopticQuality(4, things)
    sums = np.zeros((4, 4))  # tp, fp, fn, iou per category
    for _ in range(3):
        batch = [_random_pair_and_gt(rng, 4) for _ in range(4)]
        m.update([p for p, _ in batch], [g for _, g in batch])
        for p, g in batch:
            sums += np.array(_ref_stats(p, g, 4), dtype=float)
    r = m.compute()
    per = {}
    for c in range(4):
        tp, fp, fn, iou = sums[:, c]
        if tp + fp + fn:
            per[c] = (iou / (tp + fp / 2 + fn / 2), iou / tp if tp else 0.0, tp / (tp + fp / 2 + fn / 2))
    for suffix, cats in (("", range(4)), ("_things", things), ("_stuff", (0, 2))):
        present = [per[c] for c in cats if c in per]
        for k, key in enumerate(("pq", "sq", "rq")):
            assert r[key + suffix] == pytest.approx(sum(v[k] for v in present) / len(present))
        assert r["n" + suffix] == len(present)
    for c, (pq, sq, rq) in per.items():
        assert r["pq_per_class"][c] == pytest.approx(pq) and pq == pytest.approx(sq * rq)


def test_bad_inputs_raise_config_error():
    with pytest.raises(ConfigError, match="not in the segment list"):
        panoptic_statistics(_pair([[1, 2]], {1: 0}), _pair([[1, 1]], {1: 0}), 3)
    with pytest.raises(ConfigError, match="0..2"):
        panoptic_statistics(_pair([[1, 1]], {1: 5}), _pair([[1, 1]], {1: 0}), 3)
    with pytest.raises(ConfigError, match="one shape"):
        panoptic_statistics(_pair([[1, 1]], {1: 0}), _pair([[1], [1]], {1: 0}), 3)
    with pytest.raises(ConfigError, match="integer map"):
        panoptic_statistics((torch.ones(2, 2), []), _pair([[1, 1]], {1: 0}), 3)
    with pytest.raises(ConfigError, match="thing_categories"):
        PanopticQuality(3, (3,))
    with pytest.raises(ConfigError, match="before any update"):
        PanopticQuality(3, THINGS).compute()
