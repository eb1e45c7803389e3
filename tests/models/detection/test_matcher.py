"""Matcher against torchvision's detection Matcher, on random IoU matrices with ties, and hand examples."""

import pytest
import torch
from torchvision.models.detection._utils import Matcher as TorchvisionMatcher

from dlkit.errors import ConfigError
from dlkit.models.detection.matcher import Matcher


@pytest.mark.parametrize("low_quality", [False, True])
@pytest.mark.parametrize("thresholds", [(0.5, 0.4), (0.7, 0.3), (0.5, 0.5)])
def test_matcher_equals_torchvision(thresholds, low_quality):
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        boxes, anchors = int(torch.randint(1, 6, (), generator=g)), int(torch.randint(1, 40, (), generator=g))
        iou = (torch.rand(boxes, anchors, generator=g) * 10).floor() / 10  # many ties, also at the thresholds
        ours = Matcher(*thresholds, allow_low_quality_matches=low_quality)(iou)
        theirs = TorchvisionMatcher(*thresholds, allow_low_quality_matches=low_quality)(iou)
        assert torch.equal(ours, theirs), trial


def test_matcher_hand_example():
    iou = torch.tensor([[0.9, 0.45, 0.1, 0.2],
                        [0.1, 0.30, 0.6, 0.35]])
    assert Matcher(0.5, 0.4)(iou).tolist() == [0, Matcher.BETWEEN, 1, Matcher.BELOW_LOW]
    # box 1's best anchor is 2 (0.6); with high = 0.7 only low-quality matching keeps it
    assert Matcher(0.7, 0.3)(iou).tolist() == [0, -2, -2, -2]
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou).tolist() == [0, -2, 1, -2]


def test_matcher_without_ground_truth_and_bad_input():
    assert Matcher(0.5, 0.4)(torch.zeros(0, 5)).tolist() == [-1] * 5
    with pytest.raises(ConfigError, match="low <= high"):
        Matcher(0.3, 0.5)
    with pytest.raises(ConfigError, match=r"\[ground-truth boxes, anchors\]"):
        Matcher(0.5, 0.4)(torch.zeros(3))
