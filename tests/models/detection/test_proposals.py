"""External proposals for R-CNN and Fast R-CNN (Notes: 002 §4.3.2): the proposer runs once per image (a bounded
cache keyed by the image's bytes), its boxes are clipped and cut to max_proposals, and selective search is the
default."""

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.models.detection.proposals import ExternalProposals
from dlkit.ops.boxes import box_iou
from dlkit.ops.selective_search import SelectiveSearch


class Counting:
    def __init__(self, boxes):
        self.boxes, self.calls = boxes, 0

    def __call__(self, image):
        self.calls += 1
        return self.boxes


def images(n: int, seed: int = 0):
    return torch.rand(n, 3, 20, 30, generator=torch.Generator().manual_seed(seed))


def test_boxes_are_clipped_cut_to_max_proposals_and_never_empty():
    proposer = Counting(torch.tensor([[-5.0, 2.0, 40.0, 10.0], [3.0, 3.0, 3.0, 9.0], [1.0, 1.0, 5.0, 5.0],
                                      [2.0, 2.0, 6.0, 6.0]]))
    boxes = ExternalProposals(proposer, max_proposals=2)(images(1))[0]
    assert boxes.tolist() == [[0.0, 2.0, 30.0, 10.0], [1.0, 1.0, 5.0, 5.0]]  # the empty box is dropped
    empty = ExternalProposals(Counting(torch.zeros(0, 4)))(images(1))[0]
    assert empty.tolist() == [[0.0, 0.0, 30.0, 20.0]]  # no proposal: the whole image


def test_each_image_runs_the_proposer_once_and_the_cache_is_bounded():
    proposer = Counting(torch.tensor([[1.0, 1.0, 5.0, 5.0]]))
    proposals = ExternalProposals(proposer, cache_size=3)
    batch = images(3)
    proposals(batch)
    proposals(batch)
    proposals(batch.clone())  # equal bytes: the same key
    assert proposer.calls == 3
    proposals(images(1, seed=1))  # a fourth image evicts the least recently used one (image 0)
    proposals(batch[1:])
    assert proposer.calls == 4
    proposals(batch[:1])
    assert proposer.calls == 5
    changed = batch[:1].clone()
    changed[0, 0, 0, 0] += 1e-3
    proposals(changed)
    assert proposer.calls == 6


def test_selective_search_is_the_default():
    proposals = ExternalProposals(max_proposals=5, options={"min_size": 10})
    image = torch.zeros(3, 32, 32)
    image[:, 8:24, 8:24] = 1.0
    boxes = proposals(image[None])[0]
    assert isinstance(proposals.proposer, SelectiveSearch)
    assert proposals.proposer.max_proposals == 5 and proposals.proposer.min_size == 10
    assert len(boxes) == 5 and box_iou(torch.tensor([[8.0, 8.0, 24.0, 24.0]]), boxes).max() >= 0.7


def test_bad_proposers_and_images_are_refused():
    with pytest.raises(ConfigError, match="callable"):
        ExternalProposals("selective search")
    with pytest.raises(ConfigError, match="default selective search"):
        ExternalProposals(Counting(torch.zeros(0, 4)), options={"min_size": 10})
    with pytest.raises(ConfigError, match=r"\[K, 4\]"):
        ExternalProposals(Counting(torch.zeros(3)))(images(1))
    with pytest.raises(RuntimeError, match="meta"):
        ExternalProposals(Counting(torch.zeros(0, 4)))(torch.zeros(1, 3, 8, 8, device="meta"))
