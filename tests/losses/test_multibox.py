"""SSD's multibox loss and hard negative mining (Notes: 002 §4.3.4) against brute force and hand computations."""

import math

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.losses.multibox import hard_negative_mask, multibox_loss


def brute_force_hard_negatives(loss, labels, ratio):
    """Per image, sort the negatives by loss in Python and keep the first min(ratio * positives, negatives)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    for i in range(len(loss)):
        negatives = [j for j in range(loss.shape[1]) if labels[i, j] == 0]
        negatives.sort(key=lambda j: -float(loss[i, j]))
        k = min(int(ratio * int((labels[i] > 0).sum())), len(negatives))
        for j in negatives[:k]:
            mask[i, j] = True
    return mask


@pytest.mark.parametrize("ratio", [3.0, 1.0, 0.5, 10.0])
def test_hard_negatives_are_the_top_losses_of_each_image_as_a_brute_force_sort(ratio):
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(6, 50, generator=g)
    labels = torch.randint(-1, 4, (6, 50), generator=g)
    labels[labels > 0] *= (torch.rand(labels.shape, generator=g) < 0.15)[labels > 0]  # few positives
    labels[2] = 0  # an image without positives keeps no negative
    labels[3, :45] = 2  # more negatives asked for than the image has: all of them
    got = hard_negative_mask(loss, labels, ratio)
    assert torch.equal(got, brute_force_hard_negatives(loss, labels, ratio))
    assert not got[2].any()
    assert not (got & (labels != 0)).any()  # never a positive or an ignored box


def test_notes_variant_drops_negatives_that_overlap_a_harder_one():
    # one positive, three negatives, ratio 2: A (loss 3) and B (loss 2) overlap with IoU 0.6, C (loss 1) is apart
    loss = torch.tensor([[0.5, 3.0, 2.0, 1.0]])
    labels = torch.tensor([[1, 0, 0, 0]])
    boxes = torch.tensor([[[0.0, 0, 1, 1], [0, 0, 10, 10], [0, 0, 10, 6], [50, 50, 60, 60]]])
    assert hard_negative_mask(loss, labels, 2.0).tolist() == [[False, True, True, False]]
    assert hard_negative_mask(loss, labels, 2.0, boxes, nms_thresh=0.5).tolist() == [[False, True, False, True]]
    assert hard_negative_mask(loss, labels, 2.0, boxes, nms_thresh=0.7).tolist() == [[False, True, True, False]]


def _ce(logits, label):
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


def _smooth_l1(d):
    return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5


def test_multibox_loss_equals_a_hand_computation():
    # one image, 5 boxes, 2 classes + background: box 0 positive (class 2), box 4 ignored, boxes 1-3 negatives;
    # ratio 2 keeps the two hardest negatives (boxes 1 and 3)
    logits = [[0.1, 0.2, 0.3], [2.0, 1.0, 0.5], [3.0, 0.0, 0.0], [0.0, 1.5, 0.2], [0.0, 5.0, 5.0]]
    labels = torch.tensor([[2, 0, 0, 0, -1]])
    deltas = torch.tensor([[[0.5, -2.0, 0.0, 1.0]] + [[9.0, 9.0, 9.0, 9.0]] * 4])
    targets = torch.tensor([[[0.0, 0.0, 0.2, 1.5]] + [[0.0, 0.0, 0.0, 0.0]] * 4])
    neg = {j: _ce(logits[j], 0) for j in (1, 2, 3)}
    assert sorted(neg, key=neg.get)[-2:] == [1, 3]
    want_cls = _ce(logits[0], 2) + neg[1] + neg[3]
    want_box = _smooth_l1(0.5) + _smooth_l1(-2.0) + _smooth_l1(-0.2) + _smooth_l1(-0.5)  # 0.125 + 1.5 + 0.02 + 0.125
    got = multibox_loss(torch.tensor([logits]), deltas, labels, targets, neg_pos_ratio=2.0)
    assert got["loss_classifier"].item() == pytest.approx(want_cls, rel=1e-6)
    assert got["loss_box_reg"].item() == pytest.approx(want_box, rel=1e-6)


def test_multibox_loss_is_normalised_by_the_positives_of_the_batch_and_its_gradient_skips_easy_boxes():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 30, 4, generator=g, requires_grad=True)
    deltas = torch.randn(2, 30, 4, generator=g, requires_grad=True)
    targets = torch.randn(2, 30, 4, generator=g)
    labels = torch.zeros(2, 30, dtype=torch.int64)
    labels[0, :2], labels[1, 5] = torch.tensor([1, 3]), 2
    got = multibox_loss(logits, deltas, labels, targets)
    ce = torch.nn.functional.cross_entropy(logits.detach().reshape(-1, 4), labels.reshape(-1), reduction="none")
    hard = brute_force_hard_negatives(ce.view(2, 30), labels, 3.0)
    want = (ce.view(2, 30)[labels > 0].sum() + ce.view(2, 30)[hard].sum()) / 3
    torch.testing.assert_close(got["loss_classifier"], want)
    want_box = torch.nn.functional.smooth_l1_loss(deltas.detach()[labels > 0], targets[labels > 0], reduction="sum")
    torch.testing.assert_close(got["loss_box_reg"], want_box / 3)
    sum(got.values()).backward()
    used = (labels > 0) | hard
    assert (logits.grad[~used] == 0).all() and (logits.grad[used].abs().sum(-1) > 0).all()
    assert (deltas.grad[labels == 0] == 0).all()


def test_multibox_loss_without_objects_is_zero():
    got = multibox_loss(torch.randn(1, 8, 3), torch.randn(1, 8, 4), torch.zeros(1, 8, dtype=torch.int64),
                        torch.zeros(1, 8, 4))
    assert got["loss_classifier"].item() == 0 and got["loss_box_reg"].item() == 0


def test_bad_inputs_get_one_line_errors():
    with pytest.raises(ConfigError, match="loss \\[B, A\\]"):
        hard_negative_mask(torch.rand(3), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ConfigError, match="needs boxes"):
        hard_negative_mask(torch.rand(1, 3), torch.zeros(1, 3, dtype=torch.int64), nms_thresh=0.5)
    with pytest.raises(ConfigError, match="box_deltas \\[B, A, 4\\]"):
        multibox_loss(torch.rand(1, 3, 3), torch.rand(1, 3, 5), torch.zeros(1, 3, dtype=torch.int64),
                      torch.rand(1, 3, 4))
    with pytest.raises(ConfigError, match="labels must be < the 3 classes"):
        multibox_loss(torch.rand(1, 3, 3), torch.rand(1, 3, 4), torch.full((1, 3), 3), torch.rand(1, 3, 4))
