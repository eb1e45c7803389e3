"""Mask R-CNN (Notes: 002 §5.2.1) against torchvision's maskrcnn_resnet50_fpn: the published parameter count, the
same detections and pasted masks and the same training losses (loss_mask included) with its weights copied in; the
mask loss by hand (only the ground-truth class's channel counts) and the mask targets' checks."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection import maskrcnn_resnet50_fpn as tv_maskrcnn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.segmentation.mask_rcnn import mask_loss
from dlkit.models.torchvision_weights import load_torchvision_state_dict
from dlkit.registry import MODELS


def tv_frozen(**kw):
    """torchvision's maskrcnn_resnet50_fpn layout around a pretrained backbone (FrozenBatchNorm2d), assembled from
    its parts: the builder freezes only when it loads weights."""
    body = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    return torchvision.models.detection.MaskRCNN(_resnet_fpn_extractor(body, 5), **kw)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_equals_torchvision():
    with torch.device("meta"):
        ours, trainable = create_model("maskrcnn_resnet50_fpn"), create_model("maskrcnn_resnet50_fpn", frozen_bn=False)
        tv, tv_trainable = tv_frozen(num_classes=91), tv_maskrcnn(weights=None, weights_backbone=None)
    assert n_params(ours) == n_params(tv) == 44_401_393 == MODELS.get("maskrcnn_resnet50_fpn").meta["num_params"]
    assert n_params(trainable) == n_params(tv_trainable) == 44_454_513


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    tv = tv_frozen(num_classes=5, min_size=256, max_size=320, rpn_pre_nms_top_n_test=300,
                   rpn_post_nms_top_n_test=100, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
                   box_batch_size_per_image=64, box_detections_per_img=30).double()
    with torch.no_grad():  # spread the heads' outputs: random detections and masks instead of near-uniform ones
        for p in [*tv.rpn.head.parameters(), *tv.roi_heads.box_head.parameters(),
                  *tv.roi_heads.box_predictor.parameters()]:
            p.normal_(0, 0.05)
        for p in [*tv.roi_heads.mask_head.parameters(), *tv.roi_heads.mask_predictor.parameters()]:
            p.normal_(0, 0.02)
        for m in tv.backbone.body.modules():  # FrozenBatchNorm2d with running statistics of a trained network
            if hasattr(m, "running_var"):
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.2, 0.6)
    ours = create_model("maskrcnn_resnet50_fpn", num_classes=4, rpn_pre_nms_top_n=dict(training=300, testing=300),
                        rpn_post_nms_top_n=dict(training=100, testing=100), box_batch_size_per_image=64,
                        box_detections_per_img=30).double()
    load_torchvision_state_dict(ours, tv.state_dict())
    return tv, ours


def test_detections_and_masks_equal_torchvision_with_copied_weights(pair):
    tv, ours = pair
    images = torch.rand(2, 3, 256, 320, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        want, got = tv.eval()(list(images)), ours.eval()(images)
    for a, b in zip(got, want):
        assert len(b["boxes"]) > 5 and b["masks"].shape == (len(b["boxes"]), 1, 256, 320)
        assert (b["masks"] > 0.5).any() and (b["masks"] < 0.5).any()
        # one corner of one box differs by 2e-7 pixels in double precision (cause not traced); the rest is exact
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-6, atol=1e-6)
        for k in ("scores", "labels", "masks"):
            torch.testing.assert_close(a[k], b[k], msg=k)


def _targets():
    boxes = [torch.tensor([[20.0, 30.0, 120.0, 160.0], [150.0, 40.0, 300.0, 200.0]], dtype=torch.float64),
             torch.tensor([[60.0, 60.0, 100.0, 90.0]], dtype=torch.float64)]
    g = torch.Generator().manual_seed(5)
    targets = []
    for bx, labels in zip(boxes, (torch.tensor([1, 3]), torch.tensor([4]))):
        masks = torch.zeros(len(bx), 256, 320, dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, bx.long().tolist()):  # a blob inside each box, ragged edges
            m[y1:y2, x1:x2] = (torch.rand(y2 - y1, x2 - x1, generator=g) < 0.8).to(torch.uint8)
            m[y1:(y1 + y2) // 2, x1:(x1 + x2) // 2] = 0
        targets.append({"boxes": bx, "labels": labels, "masks": masks})
    return targets


def test_training_losses_equal_torchvision(pair):
    tv, ours = pair
    images = torch.rand(2, 3, 256, 320, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    targets = _targets()
    torch.manual_seed(3)
    want = tv.train()(list(images), targets)
    torch.manual_seed(3)
    torch.empty(2).uniform_()  # torchvision's transform draws one number per image (its choice of training size)
    got = ours.train()(images, targets)
    assert set(got) == set(want) and "loss_mask" in got
    for k in want:
        torch.testing.assert_close(got[k], want[k].to(got[k].dtype), msg=k)  # one of its losses is float32


def test_bad_mask_targets_are_refused(pair):
    _, ours = pair
    images = torch.rand(2, 3, 256, 320, dtype=torch.float64)
    targets = _targets()
    ours.train()
    with pytest.raises(ConfigError, match="needs masks"):
        ours(images, [{k: v for k, v in targets[0].items() if k != "masks"}, targets[1]])
    with pytest.raises(ConfigError, match=r"uint8/bool \[1, 256, 320\].*got torch.uint8 \[2, 256, 320\]"):
        ours(images, [targets[0], {**targets[1], "masks": targets[0]["masks"]}])
    with pytest.raises(ConfigError, match="got torch.float64"):
        ours(images, [targets[0], {**targets[1], "masks": targets[1]["masks"].double()}])


def test_mask_loss_reads_only_the_ground_truth_class_channel():
    # 2 regions, 3 classes, 2 x 2 masks: region 0 of class 2, region 1 of class 1
    logits = torch.tensor([[[[0.0, 1.0], [2.0, -1.0]], [[5.0, 5.0], [5.0, 5.0]], [[0.0, 0.0], [3.0, -2.0]]],
                           [[[9.0, 9.0], [9.0, 9.0]], [[1.0, -1.0], [0.0, 0.5]], [[-7.0, 7.0], [7.0, -7.0]]]])
    labels, goals = torch.tensor([2, 1]), torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])

    def bce(z, y):  # -log sigmoid(z) for y = 1, -log(1 - sigmoid(z)) for y = 0
        return -torch.log(torch.sigmoid(torch.tensor(z if y else -z)))

    by_hand = sum(bce(z, y) for z, y in [(0.0, 1), (0.0, 0), (3.0, 1), (-2.0, 0),
                                          (1.0, 0), (-1.0, 1), (0.0, 1), (0.5, 1)]) / 8
    torch.testing.assert_close(mask_loss(logits, labels, goals), by_hand)
    others = logits.clone()
    others[0, :2], others[1, [0, 2]] = torch.randn(2, 2, 2), torch.randn(2, 2, 2)
    torch.testing.assert_close(mask_loss(others, labels, goals), by_hand)
    # a softmax over the classes (competition between them) would have changed with the other channels
    assert not torch.isclose(F.cross_entropy(others, torch.zeros(2, 2, 2, dtype=torch.long)),
                             F.cross_entropy(logits, torch.zeros(2, 2, 2, dtype=torch.long)))


def test_maskrcnn_tiny_overfits_one_scene():
    # a red disc (class 1) and a blue rectangle (class 2) on grey: after 60 Adam steps on this one image both are
    # detected and their pasted masks (thresholded at 0.5) overlap the true masks with IoU > 0.7
    torch.manual_seed(0)
    model = create_model("maskrcnn_tiny", num_classes=2)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    masks = torch.stack([(yy - 20) ** 2 + (xx - 20) ** 2 <= 144, (yy >= 36) & (yy < 58) & (xx >= 30) & (xx < 60)])
    image = torch.full((1, 3, 64, 64), 0.2)
    image[0, 0][masks[0]], image[0, 2][masks[1]] = 0.9, 0.9
    target = {"boxes": torch.tensor([[8.0, 8.0, 33.0, 33.0], [30.0, 36.0, 60.0, 58.0]]), "labels": torch.tensor([1, 2]),
              "masks": masks.to(torch.uint8)}
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(60):
        opt.zero_grad()
        sum(model.train()(image, [target]).values()).backward()
        opt.step()
    with torch.no_grad():
        found = model.eval()(image)[0]
    assert found["masks"].shape == (len(found["boxes"]), 1, 64, 64)
    for label in (1, 2):
        k = int(torch.nonzero(found["labels"] == label)[0, 0])  # the best detection of the class
        pred, true = found["masks"][k, 0] > 0.5, masks[label - 1]
        assert found["scores"][k] > 0.5 and (pred & true).sum() / (pred | true).sum() > 0.7
