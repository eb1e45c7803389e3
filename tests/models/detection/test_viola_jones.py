"""Viola-Jones (Notes: 002 §4.2): Haar features on a 24 x 24 window, decision stumps, AdaBoost, the cascade, the
multi-scale sliding window; OpenCV's trained cascade run by dlkit against cv2.CascadeClassifier."""

import itertools
import math

import numpy as np
import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.models.detection.viola_jones import (
    SortedFeatures,
    Stage,
    Stump,
    ViolaJones,
    adaboost_update,
    best_stump,
    haar_features,
    initial_weights,
    integral_images,
    patch_features,
    stage_threshold,
    train_cascade,
    window_features,
)
from dlkit.ops import HAAR_FEATURES


def test_the_five_haar_families_in_24x24_number_162336():
    features = haar_features()
    # per family: every width that is a multiple of its columns and height of its rows, at every position
    expected = sum((24 - w + 1) * (24 - h + 1) for cols, rows, _ in HAAR_FEATURES.values()
                   for w in range(cols, 25, cols) for h in range(rows, 25, rows))
    assert len(features) == expected == 162_336
    assert bool((features.cells[..., :2] + features.cells[..., 2:] <= 24).all())


def normalised(p):
    p = p.double()
    return (p - p.mean()) / p.std(unbiased=False)


def test_feature_values_equal_brute_force_pixel_sums_of_the_normalised_patch():
    g = torch.Generator().manual_seed(0)
    feats = haar_features()
    sub = feats.subset(torch.randperm(len(feats), generator=g)[:40])
    patches = torch.rand(3, 24, 24, generator=g) * 255
    got = patch_features(patches, sub)
    for n, j in itertools.product(range(3), range(40)):
        p = normalised(patches[n])
        want = sum(float(s) * float(p[y:y + h, x:x + w].sum())
                   for (y, x, h, w), s in zip(sub.cells[j].tolist(), sub.signs[j].tolist()) if s != 0)
        assert got[n, j].item() == pytest.approx(want, abs=1e-3)


def test_sliding_window_features_at_scale_1_equal_patch_features_and_scale_with_the_window():
    g = torch.Generator().manual_seed(1)
    feats = haar_features()
    sub = feats.subset(torch.randperm(len(feats), generator=g)[:200])
    img = torch.rand(40, 50, generator=g) * 255
    ii, ii2 = integral_images(img)
    ys, xs = torch.tensor([0, 5, 16]), torch.tensor([0, 9, 26])
    crops = torch.stack([img[y:y + 24, x:x + 24] for y, x in zip(ys.tolist(), xs.tolist())])
    torch.testing.assert_close(window_features(ii, ii2, sub, ys, xs, 1.0).float(), patch_features(crops, sub),
                               rtol=1e-4, atol=1e-3)
    # a feature scaled by 2 on the 2x-upsampled image (each pixel a 2 x 2 block) equals the feature at scale 1
    big = torch.from_numpy(np.kron(img.numpy(), np.ones((2, 2))))
    bii, bii2 = integral_images(big)
    torch.testing.assert_close(window_features(bii, bii2, sub, 2 * ys, 2 * xs, 2.0),
                               window_features(ii, ii2, sub, ys, xs, 1.0))


def brute_force_stump(x, y, w):
    """Least weighted error over every feature, midpoint threshold and polarity (the notes' WL definition)."""
    best = math.inf
    for j in range(x.shape[1]):
        v = np.unique(x[:, j])
        for t in np.concatenate([[v[0] - 1], (v[1:] + v[:-1]) / 2, [v[-1] + 1]]):
            for s in (1, -1):
                pred = s * x[:, j] >= s * t
                best = min(best, w[pred != y].sum())
    return best


def test_best_stump_equals_a_brute_force_search_over_thresholds_and_polarities():
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.integers(0, 6, size=(25, 4)).astype(np.float32)  # ties on purpose
        y = rng.random(25) < 0.4
        w = rng.random(25)
        w /= w.sum()
        stump = best_stump(SortedFeatures(torch.from_numpy(x)), torch.from_numpy(y).long(), torch.from_numpy(w))
        assert stump.error == pytest.approx(brute_force_stump(x, y, w), abs=1e-12)
        pred = stump.predict(torch.from_numpy(x[:, stump.feature]).double()).numpy() > 0
        assert w[pred != y].sum() == pytest.approx(stump.error, abs=1e-12)


def test_a_stump_separates_separable_data_and_reweighting_moves_its_threshold():
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    data = SortedFeatures(x)
    s = best_stump(data, y, torch.full((6,), 1 / 6, dtype=torch.float64))
    assert (s.error, s.threshold, s.polarity) == (0.0, 3.5, 1)
    y2 = torch.tensor([0, 0, 1, 0, 1, 1])  # 3 is a face, 4 is not: the split at 2.5 or 4.5 errs once
    heavy_on_4 = torch.tensor([0.1, 0.1, 0.1, 0.5, 0.1, 0.1], dtype=torch.float64)
    heavy_on_3 = torch.tensor([0.1, 0.1, 0.5, 0.1, 0.1, 0.1], dtype=torch.float64)
    assert best_stump(data, y2, heavy_on_4).threshold == 4.5
    assert best_stump(data, y2, heavy_on_3).threshold == 2.5


def test_adaboost_reproduces_the_notes_spam_example():
    """002 §4.2.1: eps/beta = (1/4, 3), (1/6, 5), (1/4, 3); weights 1/12, 3/12 then 1/20, 3/20, 5/20."""
    w = initial_weights(torch.zeros(8), balanced=False)
    assert torch.allclose(w, torch.full((8,), 1 / 8, dtype=torch.float64))
    wrong = torch.zeros(8, dtype=torch.bool)
    eps, beta, w = adaboost_update(w, wrong.index_fill(0, torch.tensor([0, 1]), True))  # WL1 x1 > 3
    assert (eps, beta) == pytest.approx((0.25, 3.0))
    torch.testing.assert_close(w, torch.tensor([3, 3, 1, 1, 1, 1, 1, 1], dtype=torch.float64) / 12)
    eps, beta, w = adaboost_update(w, wrong.index_fill(0, torch.tensor([2, 3]), True))  # WL2 x1 > 10
    assert (eps, beta) == pytest.approx((1 / 6, 5.0))
    torch.testing.assert_close(w, torch.tensor([3, 3, 5, 5, 1, 1, 1, 1], dtype=torch.float64) / 20)
    eps, beta, w = adaboost_update(w, wrong.index_fill(0, torch.tensor([4, 5, 0]), True))  # WL3 x2 > 20
    assert (eps, beta) == pytest.approx((0.25, 3.0))


def test_viola_jones_initial_weights_are_class_balanced():
    w = initial_weights(torch.tensor([1, 1, 0, 0, 0, 0]))
    torch.testing.assert_close(w, torch.tensor([1 / 4, 1 / 4, 1 / 8, 1 / 8, 1 / 8, 1 / 8], dtype=torch.float64))
    with pytest.raises(ConfigError, match="faces and non-faces"):
        initial_weights(torch.ones(3))


def test_stage_threshold_is_the_highest_that_keeps_the_detection_target():
    g = torch.Generator().manual_seed(0)
    for d in (0.9, 0.95, 0.99):
        scores = torch.randn(200, generator=g, dtype=torch.float64) + 1
        t = stage_threshold(scores, d)
        assert t <= 0 and float((scores >= t).double().mean()) >= d
        higher = scores[scores > t]
        if t < 0 and len(higher):  # the next score up would lose the target
            assert float((scores >= higher.min()).double().mean()) < d


def test_a_window_passes_the_cascade_only_if_every_stage_accepts():
    feats = haar_features().subset(torch.arange(3))
    stages = [Stage([Stump(0, 0.0, 1, alpha=1.0)], 0.0), Stage([Stump(1, 0.0, -1, alpha=1.0)], 0.0)]
    cascade = ViolaJones(feats, stages)
    g = torch.Generator().manual_seed(0)
    patches = torch.rand(50, 24, 24, generator=g) * 255
    v = patch_features(patches, feats)
    passed = cascade.passed_stages(patches)
    first, second = v[:, 0] >= 0, v[:, 1] <= 0
    torch.testing.assert_close(passed, first.long() + (first & second).long())


def square_patches(n, face, g):
    """Synthetic 24 x 24 patches: noise with a bright 12 x 12 square in the middle ('faces'), or noise with the
    square shifted by 6 to 12 pixels or absent (non-faces)."""
    p = torch.rand(n, 24, 24, generator=g) * 100
    if face:
        p[:, 6:18, 6:18] += 20
        return p
    for i in range(n):
        if i % 2:
            dy, dx = torch.randint(-12, 13, (2,), generator=g).tolist()
            if max(abs(dy), abs(dx)) >= 6:
                p[i, max(0, 6 + dy):max(0, 18 + dy), max(0, 6 + dx):max(0, 18 + dx)] += 20
    return p


def test_cascade_trained_on_bright_squares_meets_its_targets_and_finds_the_square():
    """002 §4.2: the stages keep their detection target on validation, the false-positive rate falls stage by
    stage, and the sliding window + NMS finds the square in a scene (high recall, few false detections)."""
    g = torch.Generator().manual_seed(0)
    pos, pos_val = square_patches(150, True, g), square_patches(100, True, g)

    def negatives(cascade, n, gen):
        cand = square_patches(6 * n, False, gen)
        if cascade.stages:
            cand = cand[cascade.passed_stages(cand) == len(cascade.stages)]
        return cand[:n]

    cascade, history = train_cascade(haar_features(), pos, pos_val, negatives, 300, 150, d=0.98, f=0.3,
                                     target_fpr=1e-3, max_stages=4, max_weak=(3, 5, 8, 12), features_per_stage=2000)
    assert all(row["val_detection_rate"] >= 0.98 for row in history)
    rates = [row["val_overall_false_positive_rate"] for row in history]
    assert len(history) >= 2 and rates == sorted(rates, reverse=True) and rates[-1] <= 0.3 ** 2
    scene = torch.rand(80, 80, generator=g) * 100
    scene[36:48, 46:58] += 20  # the square of a window at (y, x) = (30, 40)
    boxes, _ = cascade.detect(scene, scale_factor=1.25, step=1.0)
    from dlkit.ops import box_iou
    iou = box_iou(boxes.float(), torch.tensor([[40.0, 30.0, 64.0, 54.0]]))[:, 0]
    assert iou.max().item() > 0.5 and (iou > 0).sum() >= len(boxes) - 1


# ---- OpenCV's trained cascade (haarcascade_frontalface_default.xml) ----

@pytest.fixture(scope="module")
def astronaut():
    cv2 = pytest.importorskip("cv2")
    skimage_data = pytest.importorskip("skimage.data")
    from dlkit.models.detection.opencv_cascade import frontal_face_cascade

    img = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2GRAY)
    ref = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    return img, frontal_face_cascade(), ref


def as_set(rects):
    return sorted(map(tuple, np.asarray(rects).reshape(-1, 4).tolist()))


def test_opencv_cascade_is_read_with_its_stages_and_stumps(astronaut):
    _, cascade, _ = astronaut
    assert cascade.window == (24, 24) and cascade.num_stages == 25
    assert len(cascade.feature) == 2913 and cascade.stage_ends[-1] == 2913
    assert cascade.feature.max() < len(cascade.rects)


def test_bit_exact_bilinear_resize_equals_cv2(astronaut):
    import cv2

    from dlkit.models.detection.opencv_cascade import resize_linear_u8
    img = astronaut[0]
    for w, h in ((465, 465), (300, 217), (101, 99), (24, 30)):
        np.testing.assert_array_equal(resize_linear_u8(img, (w, h)),
                                      cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR_EXACT))


def test_group_rectangles_equals_cv2_group_rectangles():
    cv2 = pytest.importorskip("cv2")
    from dlkit.models.detection.opencv_cascade import group_rectangles
    rng = np.random.default_rng(0)
    centres = rng.integers(20, 200, size=(6, 2))
    rects = []
    for cx, cy in centres:
        for _ in range(rng.integers(1, 8)):
            s = int(rng.integers(30, 40))
            rects.append([int(cx + rng.integers(-3, 4)), int(cy + rng.integers(-3, 4)), s, s])
    rects = np.array(rects)
    for threshold in (1, 2, 3):
        got, counts = group_rectangles(rects, threshold)
        want, want_counts = cv2.groupRectangles(rects.tolist(), threshold, 0.2)
        assert as_set(got) == as_set(want)
        assert sorted(counts.tolist()) == sorted(np.asarray(want_counts).reshape(-1).tolist())


@pytest.mark.parametrize("scale_factor", [1.3, 1.15])
def test_opencv_cascade_on_astronaut_equals_cv2_detect_multi_scale(astronaut, scale_factor):
    from dlkit.models.detection.opencv_cascade import clip_rectangles, detect_raw, group_rectangles
    from dlkit.ops import box_iou
    img, cascade, ref = astronaut
    raw = detect_raw(cascade, img, scale_factor)  # every accepted window, as detectMultiScale with minNeighbors=0
    assert len(raw) > 10
    assert as_set(raw) == as_set(ref.detectMultiScale(img, scaleFactor=scale_factor, minNeighbors=0))
    for neighbours in (3, 5):
        got = clip_rectangles(group_rectangles(raw, neighbours)[0], img.shape[::-1])
        assert as_set(got) == as_set(ref.detectMultiScale(img, scaleFactor=scale_factor, minNeighbors=neighbours))
    # the one face: dlkit's detection covers the astronaut's face (about x 170-275, y 60-165)
    (x, y, w, h), = got
    xyxy = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)
    assert box_iou(xyxy, torch.tensor([[170.0, 60.0, 275.0, 165.0]])).item() > 0.5


def test_detect_multi_scale_applies_min_and_max_size_as_cv2(astronaut):
    from dlkit.models.detection.opencv_cascade import detect_multi_scale
    img, cascade, ref = astronaut
    got = detect_multi_scale(cascade, img, 1.25, 2, min_size=(60, 60), max_size=(200, 200))
    assert as_set(got) == as_set(ref.detectMultiScale(img, scaleFactor=1.25, minNeighbors=2, minSize=(60, 60),
                                                      maxSize=(200, 200)))
    assert len(got) >= 1


def test_opencv_cascade_refuses_what_it_cannot_run(tmp_path, astronaut):
    from dlkit.errors import DataError
    from dlkit.models.detection.opencv_cascade import detect_raw, read_opencv_cascade
    img, cascade, _ = astronaut
    with pytest.raises(ConfigError, match="uint8"):
        detect_raw(cascade, img.astype(np.float32))
    bad = tmp_path / "old.xml"
    bad.write_text("<?xml version='1.0'?><opencv_storage><haar_old/></opencv_storage>")
    with pytest.raises(DataError, match="<cascade>"):
        read_opencv_cascade(bad)
