"""Faster R-CNN's region proposal network (Notes: 002 §4.3.2) against torchvision's RegionProposalNetwork with the
same head weights: proposals in evaluation and training, and the training losses with the same random sampling."""

from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRPN
from torchvision.models.detection.rpn import RPNHead as TVRPNHead

from dlkit.errors import ConfigError
from dlkit.models.detection.rpn import RegionProposalNetwork, RPNHead, balanced_sample
from dlkit.ops.anchors import AnchorGenerator

SIZES, RATIOS = ((24, 32), (48, 64)), ((0.5, 1.0, 2.0),) * 2
TOP = dict(pre_nms_top_n=dict(training=300, testing=150), post_nms_top_n=dict(training=120, testing=60))


def pair(seed: int = 0):
    torch.manual_seed(seed)
    tv = TVRPN(TVAnchorGenerator(SIZES, RATIOS), TVRPNHead(16, 6), 0.7, 0.3, 64, 0.5, TOP["pre_nms_top_n"],
               TOP["post_nms_top_n"], 0.7)
    with torch.no_grad():  # random, not the 0.01 initialisation: spread objectness so that NMS has work to do
        for p in tv.head.parameters():
            p.normal_(0, 0.3)
    ours = RegionProposalNetwork(AnchorGenerator(SIZES, RATIOS), RPNHead(16, 6), 0.7, 0.3, 64, 0.5, **TOP)
    state = tv.head.state_dict()
    ours.head.load_state_dict({k.replace("conv.0.0.", "conv."): v for k, v in state.items()})
    return tv, ours


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 3, 128, 160, generator=g)
    features = OrderedDict(p3=torch.randn(2, 16, 16, 20, generator=g), p4=torch.randn(2, 16, 8, 10, generator=g))
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0], [90.0, 30.0, 150.0, 70.0]])},
               {"boxes": torch.tensor([[40.0, 40.0, 80.0, 64.0]])}]
    return images, features, targets


@pytest.mark.parametrize("training", [False, True])
def test_proposals_and_losses_equal_torchvision(training):
    tv, ours = pair()
    images, features, targets = inputs()
    tv.train(training)
    ours.train(training)
    torch.manual_seed(5)  # the samplers draw their anchors with torch.randperm in the same order
    want, want_losses = tv(ImageList(images, [(128, 160)] * 2), features, targets if training else None)
    torch.manual_seed(5)
    got, got_losses = ours(images, list(features.values()), targets if training else None)
    assert [len(p) for p in got] == [len(p) for p in want] and len(want[0]) > 10
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert set(got_losses) == set(want_losses)
    for k in want_losses:
        torch.testing.assert_close(got_losses[k], want_losses[k])


def test_sampling_takes_at_most_half_positives_and_fills_with_negatives():
    labels = torch.tensor([1.0] * 10 + [0.0] * 300 + [-1.0] * 50)
    pos, neg = balanced_sample(labels, 256, 0.5)
    assert len(pos) == 10 and len(neg) == 246 and (labels[pos] == 1).all() and (labels[neg] == 0).all()
    pos, neg = balanced_sample(torch.tensor([1.0] * 200 + [0.0] * 300), 256, 0.5)
    assert len(pos) == 128 and len(neg) == 128 and len(set(pos.tolist())) == 128


def test_the_rescue_rule_makes_a_small_box_positive_and_bad_options_are_refused():
    _, ours = pair()
    images, features, _ = inputs()
    tiny = [{"boxes": torch.tensor([[5.0, 5.0, 9.0, 9.0]])}] * 2  # IoU < 0.3 with every anchor, yet one positive
    losses = ours.train()(images, list(features.values()), tiny)[1]
    assert losses["loss_rpn_box_reg"] > 0
    with pytest.raises(ConfigError, match="needs targets"):
        ours(images, list(features.values()))
    with pytest.raises(ConfigError, match="bg_iou_thresh <= fg_iou_thresh"):
        RegionProposalNetwork(AnchorGenerator(SIZES, RATIOS), RPNHead(16, 6), 0.3, 0.7)


def test_the_papers_single_map_rpn_with_nine_anchors_equals_torchvision():
    """Faster R-CNN as the notes draw it: one feature map, k = 9 anchors per location (scales 128, 256, 512 x
    ratios 1:2, 1:1, 2:1), a 3x3 conv and two 1x1 heads: k objectness logits (the paper's 2k two-way softmax
    scores in their equivalent sigmoid form) and 4k corrections."""
    sizes, ratios = ((128, 256, 512),), ((0.5, 1.0, 2.0),)
    torch.manual_seed(0)
    tv = TVRPN(TVAnchorGenerator(sizes, ratios), TVRPNHead(16, 9), 0.7, 0.3, 256, 0.5, TOP["pre_nms_top_n"],
               TOP["post_nms_top_n"], 0.7)
    with torch.no_grad():
        for p in tv.head.parameters():
            p.normal_(0, 0.3)
    anchors = AnchorGenerator(sizes, ratios)
    assert anchors.num_anchors_per_location() == [9]
    ours = RegionProposalNetwork(anchors, RPNHead(16, 9), 0.7, 0.3, 256, 0.5, **TOP)
    ours.head.load_state_dict({k.replace("conv.0.0.", "conv."): v for k, v in tv.head.state_dict().items()})
    assert ours.head.cls_logits.out_channels == 9 and ours.head.bbox_pred.out_channels == 36
    g = torch.Generator().manual_seed(3)
    images, feature = torch.rand(1, 3, 608, 800, generator=g), torch.randn(1, 16, 38, 50, generator=g)
    targets = [{"boxes": torch.tensor([[100.0, 120.0, 400.0, 380.0]])}]
    for training in (False, True):
        tv.train(training)
        ours.train(training)
        torch.manual_seed(5)
        want, want_losses = tv(ImageList(images, [(608, 800)]), OrderedDict(p=feature),
                               targets if training else None)
        torch.manual_seed(5)
        got, got_losses = ours(images, [feature], targets if training else None)
        torch.testing.assert_close(got[0], want[0])
        for k in want_losses:
            torch.testing.assert_close(got_losses[k], want_losses[k])
