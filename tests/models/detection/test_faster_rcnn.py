"""Faster R-CNN with FPN (Notes: 002 §4.3.2-4.3.3) against torchvision's fasterrcnn_resnet50_fpn: the published
parameter count, and the same detections and losses with its weights copied in."""

import pytest
import torch
import torchvision
from torchvision.models.detection import fasterrcnn_resnet50_fpn as tv_fasterrcnn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.torchvision_weights import load_torchvision_state_dict
from dlkit.registry import MODELS


def tv_frozen(**kw):
    """torchvision's fasterrcnn_resnet50_fpn layout around a pretrained backbone (FrozenBatchNorm2d, FPN on
    layer1-4 with the max-pool level), assembled from its parts: the builder freezes only when it loads weights."""
    body = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    return torchvision.models.detection.FasterRCNN(_resnet_fpn_extractor(body, 5), **kw)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_equals_torchvision():
    with torch.device("meta"):
        ours, trainable = create_model("fasterrcnn_resnet50_fpn"), create_model("fasterrcnn_resnet50_fpn",
                                                                                frozen_bn=False)
        tv, tv_trainable = tv_frozen(num_classes=91), tv_fasterrcnn(weights=None, weights_backbone=None)
    assert n_params(ours) == n_params(tv) == 41_755_286 == MODELS.get("fasterrcnn_resnet50_fpn").meta["num_params"]
    # trainable batch norms add a weight and a bias per channel: the 53 norms of ResNet-50 hold 26,560 channels
    assert n_params(trainable) == n_params(tv_trainable) == 41_808_406 == n_params(ours) + 2 * 26_560


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    tv = tv_frozen(num_classes=5, min_size=256, max_size=320, rpn_pre_nms_top_n_test=300,
                   rpn_post_nms_top_n_test=100, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
                   box_batch_size_per_image=64).double()
    with torch.no_grad():  # spread the heads' outputs: random detections instead of the near-uniform initial ones
        for p in [*tv.rpn.head.parameters(), *tv.roi_heads.parameters()]:
            p.normal_(0, 0.05)
        for m in tv.backbone.body.modules():  # FrozenBatchNorm2d with running statistics of a trained network
            if hasattr(m, "running_var"):
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.2, 0.6)
    ours = create_model("fasterrcnn_resnet50_fpn", num_classes=4, rpn_pre_nms_top_n=dict(training=300, testing=300),
                        rpn_post_nms_top_n=dict(training=100, testing=100), box_batch_size_per_image=64).double()
    load_torchvision_state_dict(ours, tv.state_dict())
    return tv, ours


def test_detections_equal_torchvision_with_copied_weights(pair):
    tv, ours = pair
    images = torch.rand(2, 3, 256, 320, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        want, got = tv.eval()(list(images)), ours.eval()(images)
    for a, b in zip(got, want):
        assert len(b["boxes"]) > 5
        for k in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[k], b[k])


def test_training_losses_equal_torchvision(pair):
    tv, ours = pair
    images = torch.rand(2, 3, 256, 320, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 120.0, 160.0], [150.0, 40.0, 300.0, 200.0]], dtype=torch.float64),
                "labels": torch.tensor([1, 3])},
               {"boxes": torch.tensor([[60.0, 60.0, 100.0, 90.0]], dtype=torch.float64), "labels": torch.tensor([4])}]
    torch.manual_seed(3)
    want = tv.train()(list(images), targets)
    torch.manual_seed(3)
    torch.empty(2).uniform_()  # torchvision's transform draws one number per image (its choice of training size)
    got = ours.train()(images, targets)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k].to(got[k].dtype), msg=k)  # one of its losses is float32
    with pytest.raises(ConfigError, match="computes its losses"):
        ours(images)
    with pytest.raises(ConfigError, match=r"labels must be in 1\.\.4"):
        ours(images, [targets[0], {"boxes": targets[1]["boxes"], "labels": torch.tensor([5])}])
    with pytest.raises(ConfigError, match="one target dict per image"):
        ours(images, targets[:1])


def test_proposals_are_the_rpn_boxes_of_evaluation(pair):
    tv, ours = pair
    images = torch.rand(1, 3, 256, 320, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        tv.eval()
        tv_images, _ = tv.transform(list(images))
        want, _ = tv.rpn(tv_images, tv.backbone(tv_images.tensors))
        got = ours.train().proposals(images)
    assert ours.training  # the mode is restored
    torch.testing.assert_close(got[0], want[0])
