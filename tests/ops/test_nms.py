"""Vectorised NMS equals torchvision.ops.nms / batched_nms exactly, and the notes' examples (Notes: 002 §4.2.4,
000 §3.12.3, 003 §6)."""

import pytest
import torch
import torchvision.ops as tvo

from dlkit.errors import ConfigError
from dlkit.ops import batched_nms, nms


def scene(n, seed, dtype=torch.float32, integer=False, clustered=False, tied=False):
    """Random xyxy boxes and scores: optionally integer corners, boxes jittered around a few objects (long chains
    of overlaps, as a detector's raw output), tied scores, and some zero-width or zero-height boxes."""
    g = torch.Generator().manual_seed(seed)
    if clustered:
        centres = torch.rand(max(1, n // 20), 2, generator=g, dtype=torch.float64) * 200
        c = centres[torch.randint(len(centres), (n,), generator=g)] + torch.randn(n, 2, generator=g).double() * 4
        wh = 20 + torch.randn(n, 2, generator=g).double() * 4
        xy = c - wh / 2
    else:
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 200
        wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 60
    if integer:
        xy, wh = xy.round(), wh.round()
    wh = torch.where(torch.rand(n, 2, generator=g) < 0.05, torch.zeros_like(wh), wh.clamp(min=0))
    scores = torch.randint(0, 4, (n,), generator=g).double() if tied else torch.rand(n, generator=g).double()
    return torch.cat([xy, xy + wh], 1).to(dtype), scores.to(dtype)


def test_nms_notes_hand_example_keeps_two_of_three():
    # 002 §4.2.4: the best box A; B has IoU 0.7 with A (removed at 0.5), C has IoU 0.2 with A (kept)
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 7], [0, 0, 2, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]


def test_nms_of_two_boxes_keeps_the_better_one_only_when_they_overlap():
    # 003 §6: IoU 0.8 -> only the higher-scoring box stays; IoU 0.1 -> both stay (threshold 0.5)
    a, b, c = [0.0, 0, 10, 10], [0.0, 0, 10, 8], [0.0, 0, 10, 1]
    assert nms(torch.tensor([a, b]), torch.tensor([0.3, 0.9]), 0.5).tolist() == [1]
    assert nms(torch.tensor([a, c]), torch.tensor([0.3, 0.9]), 0.5).tolist() == [1, 0]


def test_nms_removes_iou_strictly_above_threshold():
    # 000 §3.12.3: a pair with IoU exactly t is kept (IoU([0,0,10,10], [0,0,10,5]) = 0.5 exactly)
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]])
    scores = torch.tensor([0.6, 0.9])
    assert nms(boxes, scores, 0.5).tolist() == [1, 0] == tvo.nms(boxes, scores, 0.5).tolist()
    assert nms(boxes, scores, 0.49).tolist() == [1]


def test_threshold_is_compared_in_float64_as_torchvision():
    # float32(1/10) = 0.10000000149 > 0.1: torchvision's kernel removes the box; a float32 comparison would not
    boxes, scores = torch.tensor([[0.0, 0, 10, 1], [0, 0, 1, 1]]), torch.tensor([1.0, 0.5])
    assert nms(boxes, scores, 0.1).tolist() == tvo.nms(boxes, scores, 0.1).tolist() == [0]
    assert nms(boxes.double(), scores.double(), 0.1).tolist() == tvo.nms(boxes.double(), scores.double(), 0.1).tolist()


def test_equal_scores_are_taken_in_input_order():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0.5, 0.5, 10.5, 10.5]])
    assert nms(boxes, torch.ones(3), 0.5).tolist() == tvo.nms(boxes, torch.ones(3), 0.5).tolist() == [0]
    assert nms(boxes.flip(0), torch.ones(3), 0.5).tolist() == [0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["uniform", "clustered", "integer-tied", "clustered-tied"])
def test_nms_equals_torchvision_on_random_scenes(kind, dtype):
    for seed in range(12):
        n = [0, 1, 2, 7, 40, 300][seed % 6] + seed
        boxes, scores = scene(n, seed, dtype, integer="integer" in kind, clustered="clustered" in kind,
                              tied="tied" in kind)
        for t in (0.0, 0.3, 0.5, 0.7, 1.0):
            want = tvo.nms(boxes, scores, t)
            for block in (5, 64, 512):  # many blocks, a few, one
                got = nms(boxes, scores, t, block=block)
                assert torch.equal(got, want), (kind, seed, t, block)


def test_nms_of_nothing_is_empty():
    keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).shape == (0,)


def test_batched_nms_boxes_of_different_classes_never_suppress_each_other():
    # 000 §3.12.3: 3 overlapping boxes of class 1 and one separate -> 2 kept; the same box in class 2 stays
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 1, 10, 11], [50, 50, 60, 60], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    idxs = torch.tensor([1, 1, 1, 1, 2])
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 3, 4]
    assert nms(boxes, scores, 0.5).tolist() == [0, 3]


@pytest.mark.parametrize("n", [60, 1200])  # torchvision: coordinate offsets below 4000 numbers, a loop above
@pytest.mark.parametrize("tied", [False, True])
def test_batched_nms_equals_torchvision(n, tied):
    for seed in range(4):
        # integer corners keep torchvision's coordinate-offset trick exact (shifted floats would round)
        boxes, scores = scene(n, seed, integer=True, clustered=seed % 2 == 1, tied=tied)
        idxs = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed))
        for t in (0.3, 0.5, 0.8):
            got, want = batched_nms(boxes, scores, idxs, t, block=128), tvo.batched_nms(boxes, scores, idxs, t)
            if tied:  # torchvision orders equal scores with an unstable sort: compare the set and the score order
                assert sorted(got.tolist()) == sorted(want.tolist())
                assert torch.equal(scores[got], scores[want])
                assert (scores[got].diff() <= 0).all()
            else:
                assert torch.equal(got, want)


@pytest.mark.parametrize("n,classes", [(3000, 20), (1500, 200)])  # class by class; masked (too many classes)
def test_batched_nms_with_many_classes_equals_torchvision(n, classes):
    for seed in range(2):
        boxes, scores = scene(n, seed, integer=True, clustered=seed == 1)
        idxs = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))
        for t in (0.3, 0.7):
            assert torch.equal(batched_nms(boxes, scores, idxs, t), tvo.batched_nms(boxes, scores, idxs, t))


def test_batched_nms_class_by_class_keeps_equal_scores_in_input_order():
    boxes, _ = scene(600, 0, integer=True)
    scores = torch.full((600,), 0.5)  # all tied: the kept boxes must come out in input order across classes
    idxs = torch.arange(600) % 3
    got = batched_nms(boxes, scores, idxs, 0.5, block=64)
    assert (got.diff() > 0).all()
    want = torch.cat([torch.nonzero(idxs == c).flatten()[tvo.nms(boxes[idxs == c], scores[idxs == c], 0.5)]
                      for c in range(3)])
    assert sorted(got.tolist()) == sorted(want.tolist())


def test_bad_inputs_are_refused_with_the_expected_shapes():
    with pytest.raises(ConfigError, match=r"scores must be a tensor \[N\] with N = 3"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ConfigError, match=r"\[N, 4\]"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ConfigError, match="idxs"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(4, dtype=torch.long), 0.5)
