"""DETR's Hungarian matching (Notes: 002 §4.3.6): brute force over every assignment, a hand example, and the cost
matrix against the notes' terms written out pair by pair (GIoU from torchvision)."""

import itertools

import pytest
import torch
import torchvision.ops as tvops

from dlkit.errors import ConfigError
from dlkit.models.detection.hungarian_matcher import HungarianMatcher


def random_image(g, n: int, m: int, classes: int = 4):
    logits = torch.randn(n, classes + 1, generator=g, dtype=torch.float64)
    centre = torch.rand(n + m, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2
    size = torch.rand(n + m, 2, generator=g, dtype=torch.float64) * 0.3 + 0.05
    boxes = torch.cat([centre, size], dim=1)
    return logits, boxes[:n], boxes[n:], torch.randint(0, classes, (m,), generator=g)


def hand_cost(logits, pred, labels, target):
    """The notes' L_match of every pair, written out element by element (DETR's weights 1, 5, 2)."""
    prob = logits.softmax(-1)
    corners = tvops.box_convert
    giou = tvops.generalized_box_iou(corners(pred, "cxcywh", "xyxy"), corners(target, "cxcywh", "xyxy"))
    cost = torch.empty(len(pred), len(target), dtype=torch.float64)
    for q in range(len(pred)):
        for o in range(len(target)):
            cost[q, o] = -prob[q, labels[o]] + 5 * (pred[q] - target[o]).abs().sum() + 2 * (1 - giou[q, o])
    return cost


@pytest.mark.parametrize("n,m", [(1, 1), (3, 2), (4, 4), (6, 3), (6, 1)])
def test_matching_equals_brute_force_over_every_assignment(n, m):
    g = torch.Generator().manual_seed(n * 10 + m)
    matcher = HungarianMatcher()
    for _ in range(10):
        logits, pred, target, labels = random_image(g, n, m)
        cost = hand_cost(logits, pred, labels, target)
        torch.testing.assert_close(matcher.cost_matrix(logits, pred, labels, target), cost)
        ((rows, cols),) = matcher(logits[None], pred[None], [{"labels": labels, "boxes": target}])
        # p[o]: the query of object o, over every injective map of the m objects into the n queries
        best = min(itertools.permutations(range(n), m), key=lambda p: sum(cost[p[o], o].item() for o in range(m)))
        assert sorted(zip(cols.tolist(), rows.tolist())) == sorted(zip(range(m), best))


def test_a_hand_example_two_queries_two_objects():
    # query 0 sits on object 1 and predicts its class; query 1 on object 0: the crossed matching wins
    logits = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])
    pred = torch.tensor([[0.7, 0.7, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]])
    target = {"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])}
    ((rows, cols),) = HungarianMatcher()(logits[None], pred[None], [target])
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


def test_images_without_objects_and_bad_inputs():
    matcher = HungarianMatcher()
    logits, boxes = torch.randn(2, 3, 5), torch.rand(2, 3, 4) * 0.5 + 0.1
    empty = {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    one = {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    (r0, c0), (r1, c1) = matcher(logits, boxes, [empty, one])
    assert r0.numel() == c0.numel() == 0 and len(r1) == len(c1) == 1
    with pytest.raises(ConfigError, match=r"labels must be in 0\.\.3"):
        matcher(logits, boxes, [one, {"labels": torch.tensor([4]), "boxes": torch.rand(1, 4)}])
    with pytest.raises(ConfigError, match="more object queries"):
        matcher(logits, boxes, [one, {"labels": torch.zeros(4, dtype=torch.long), "boxes": torch.rand(4, 4)}])
    with pytest.raises(ConfigError, match="not all 0"):
        HungarianMatcher(0, 0, 0)
