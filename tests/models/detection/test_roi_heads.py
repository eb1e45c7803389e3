"""Fast/Faster R-CNN's second stage (Notes: 002 §4.3.2-4.3.3): the pyramid RoI align and the RoI heads against
torchvision's MultiScaleRoIAlign and RoIHeads with the same weights (detections, sampled losses)."""

from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor as TVPredictor
from torchvision.models.detection.faster_rcnn import TwoMLPHead as TVTwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads as TVRoIHeads
from torchvision.ops import MultiScaleRoIAlign as TVMultiScaleRoIAlign

from dlkit.errors import ConfigError
from dlkit.models.detection.roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead
from dlkit.ops.multiscale_roi_align import MultiScaleRoIAlign, fpn_levels

IMAGE = (512, 640)


def pyramid(seed: int = 0, channels: int = 8):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict((f"p{k}", torch.randn(2, channels, IMAGE[0] >> k, IMAGE[1] >> k, generator=g))
                       for k in (2, 3, 4, 5))


def regions(seed: int, n: int):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([500.0, 400.0])
    wh = torch.exp(torch.rand(n, 2, generator=g) * 5) + 4  # 5 to 150 pixels, then some large ones
    wh[: n // 5] *= 3
    return torch.cat([xy, xy + wh], dim=1)


def test_fpn_levels_by_hand_and_the_floor():
    boxes = torch.tensor([[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 300, 300], [0, 0, 447, 447], [0, 0, 8, 8]])
    assert fpn_levels(boxes.float(), 2, 5).tolist() == [4, 3, 4, 4, 2]  # 300: floor(4.42); 8 px: clamped to 2


def test_multiscale_roi_align_equals_torchvision():
    features = pyramid()
    boxes = [regions(1, 40), regions(2, 30)]
    want = TVMultiScaleRoIAlign(list(features), 7, 2)(features, boxes, [IMAGE, IMAGE])
    got = MultiScaleRoIAlign(7, 2)(list(features.values()), boxes, IMAGE)
    torch.testing.assert_close(got, want)
    with pytest.raises(ConfigError, match="power of two"):
        MultiScaleRoIAlign()([torch.zeros(1, 1, 32, 64)], [torch.zeros(1, 4)], (128, 128))


def heads(seed: int = 0, classes: int = 4):
    torch.manual_seed(seed)
    tv = TVRoIHeads(TVMultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2), TVTwoMLPHead(8 * 49, 32),
                    TVPredictor(32, classes), 0.5, 0.5, 64, 0.25, None, 0.05, 0.5, 100)
    ours = RoIHeads(MultiScaleRoIAlign(7, 2), TwoMLPHead(8 * 49, 32), FastRCNNPredictor(32, classes),
                    batch_size_per_image=64)
    with torch.no_grad():  # spread the predictions so that many pairs pass the 0.05 score threshold
        for p in tv.parameters():
            p.normal_(0, 0.05)
    ours.load_state_dict(tv.state_dict())
    return tv, ours


@pytest.mark.parametrize("training", [False, True])
def test_roi_heads_equal_torchvision(training):
    tv, ours = heads()
    features, proposals = pyramid(3), [regions(4, 60), regions(5, 45)]
    targets = [{"boxes": proposals[0][:3] + 2.0, "labels": torch.tensor([1, 2, 3])},
               {"boxes": proposals[1][:1] - 1.0, "labels": torch.tensor([2])}]
    tv.train(training)
    ours.train(training)
    torch.manual_seed(7)
    want, want_losses = tv(features, proposals, [IMAGE, IMAGE], targets if training else None)
    torch.manual_seed(7)
    got, got_losses = ours(list(features.values()), proposals, [IMAGE, IMAGE], targets if training else None)
    assert set(got_losses) == set(want_losses) and len(got) == len(want)
    for k in want_losses:
        torch.testing.assert_close(got_losses[k], want_losses[k])
    for a, b in zip(got, want):
        assert len(b["boxes"]) > 5
        for k in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[k], b[k])
