"""Proposal recall vs the number of proposals (Notes: 002 §4.3.2): against a brute-force computation and a hand
example."""

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.metrics.detection.proposal_recall import proposal_recall


def iou_one(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def brute_force(proposals, gts, counts, t):
    out = {}
    total = sum(len(g) for g in gts)
    for c in counts:
        hit = 0
        for props, gt in zip(proposals, gts):
            for g in gt.tolist():
                if any(iou_one(g, p) >= t for p in props[:c].tolist()):
                    hit += 1
        out[c] = hit / total
    return out


def random_boxes(n, g):
    xy = torch.rand(n, 2, generator=g) * 80
    wh = torch.rand(n, 2, generator=g) * 40 + 1
    return torch.cat([xy, xy + wh], 1)


def test_hand_example():
    gt = [torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), torch.tensor([[0.0, 0, 4, 4]])]
    props = [torch.tensor([[0.0, 0, 10, 5],     # IoU 0.5 with gt 0
                           [20, 20, 30, 30],    # IoU 1 with gt 1
                           [0, 0, 10, 10]]),    # IoU 1 with gt 0
             torch.zeros(0, 4)]                 # no proposal: the third box is never recalled
    assert proposal_recall(props, gt, counts=(1, 2, 3, 10), iou=0.5) == {1: 1 / 3, 2: 2 / 3, 3: 2 / 3, 10: 2 / 3}
    assert proposal_recall(props, gt, counts=(1, 2, 3), iou=0.7) == {1: 0.0, 2: 1 / 3, 3: 2 / 3}


def test_equals_brute_force_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    props = [random_boxes(int(n), g) for n in torch.randint(0, 60, (8,), generator=g)]
    gts = [random_boxes(int(n), g) for n in torch.randint(0, 5, (8,), generator=g)]
    counts = (1, 5, 10, 50, 100)
    for t in (0.3, 0.5, 0.7):
        ours = proposal_recall(props, gts, counts, t)
        ref = brute_force(props, gts, counts, t)
        assert ours.keys() == ref.keys()
        for c in counts:
            assert ours[c] == pytest.approx(ref[c], abs=1e-12)


def test_refuses_mismatched_lists_and_bad_counts():
    with pytest.raises(ConfigError, match="one proposal set per image"):
        proposal_recall([torch.zeros(0, 4)], [])
    with pytest.raises(ConfigError, match="counts"):
        proposal_recall([torch.zeros(0, 4)], [torch.zeros(0, 4)], counts=(0,))
    assert proposal_recall([torch.zeros(0, 4)], [torch.zeros(0, 4)]) == dict.fromkeys((10, 50, 100, 200, 500, 1000,
                                                                                        2000), 0.0)
