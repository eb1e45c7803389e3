"""RetinaNet (Notes: 002 §4.3.4) against torchvision's retinanet_resnet50_fpn and the notes' hand examples.

torchvision's detector owns a GeneralizedRCNNTransform that resizes every image (shorter side to min_size, longer
at most max_size), normalises it and zero-pads the batch to a multiple of 32. Ours takes images already at their
size and only normalises and pads. The comparisons therefore build torchvision's model with min_size = max_size =
the image's longer side: its resize scale min(min_size / short, max_size / long) is then exactly 1, the bilinear
resize returns the image unchanged and its boxes are scaled by 1 on the way back, so both models see the same
normalised, padded tensor and everything after it (backbone, FPN, heads, anchors, matching, losses, per-level top-k,
decoding, clipping, NMS) is compared end to end. torchvision's head scores label l on channel l (channel 0 is a
never-trained background); ours scores label l on channel l - 1, so our labels are torchvision's plus one.
"""

import math

import pytest
import torch
import torchvision
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.retinanet import RetinaNet_ResNet50_FPN_Weights, _default_anchorgen
from torchvision.ops import sigmoid_focal_loss as tv_focal
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.detection.retinanet import RetinaNet, prior_bias, retinanet_anchor_sizes
from dlkit.models.torchvision_weights import load_torchvision_state_dict
from dlkit.ops import BoxCoder
from tests.model_checks import detector_losses

H, W = 256, 200  # W is not a multiple of 32: both pad it to 224


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def tv_retinanet(frozen: bool, size: int = H):
    """torchvision's retinanet_resnet50_fpn layout with random weights. The frozen one is what the builder makes
    around a pretrained backbone (resnet50 with FrozenBatchNorm2d, FPN on layer2-4, P6/P7 from P5); it is assembled
    here from the same parts because the builder freezes only when it loads weights."""
    size = dict(min_size=size, max_size=size)  # resize scale 1 for images with longer side `size`: see the top
    if not frozen:
        return torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, **size)
    body = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    return torchvision.models.detection.RetinaNet(backbone, 91, **size)


def test_parameter_counts_equal_torchvision():
    assert RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["num_params"] == 34_014_999  # torchvision's published count
    for frozen, published in ((True, 34_014_999), (False, 34_068_119)):
        with torch.device("meta"):
            ours = create_model("retinanet_resnet50_fpn", frozen_bn=frozen)
        assert n_params(ours) == n_params(tv_retinanet(frozen)) == published


def test_anchor_sizes_are_torchvisions_and_the_prior_bias_is_the_notes_value():
    assert retinanet_anchor_sizes((8, 16, 32, 64, 128)) == _default_anchorgen().sizes  # (32, 40, 50) ... 812
    assert prior_bias(0.01) == pytest.approx(-4.59512, abs=1e-5)
    b = torch.tensor(prior_bias(0.01), dtype=torch.float64)
    assert torch.sigmoid(b).item() == pytest.approx(0.01, rel=1e-12)
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        prior_bias(1.0)


@pytest.fixture(scope="module")
def frozen_pair():
    torch.manual_seed(0)
    tv = tv_retinanet(frozen=True).eval()
    with torch.no_grad():  # random but non-trivial statistics and heads: many candidates above 0.05, varied boxes
        for m in tv.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_(0, 0.1)
                m.weight.uniform_(0.2, 0.5)
        tv.head.classification_head.cls_logits.bias.fill_(-1.0)
        tv.head.regression_head.bbox_reg.weight.normal_(0, 0.05)
    ours = create_model("retinanet_resnet50_fpn").eval()
    load_torchvision_state_dict(ours, tv.state_dict())
    return tv, ours


def canonical(det):
    """Detections sorted by score, then box: random weights give some anchors exactly equal scores, which the two
    sorts may list in either order (the kept set is the same)."""
    order = torch.arange(len(det["scores"]))
    for key in [*(det["boxes"][:, i] for i in range(3, -1, -1)), det["scores"]]:  # stable sorts, last key first
        order = order[torch.sort(key[order], descending=True, stable=True).indices]
    return {k: v[order] for k, v in det.items()}


def test_detections_equal_torchvision_with_copied_weights(frozen_pair):
    tv, ours = frozen_pair
    images = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tv(list(images))
        got = ours(images)
    for e, g in zip(expected, got):
        assert 50 < len(e["scores"]) <= 300  # post-processing really runs: many candidates, NMS, the 300 cap
        e, g = canonical(e), canonical(g)
        torch.testing.assert_close(g["scores"], e["scores"])
        torch.testing.assert_close(g["boxes"], e["boxes"], rtol=1e-5, atol=1e-3)
        assert torch.equal(g["labels"], e["labels"] + 1)


def test_head_outputs_per_level_have_the_notes_shapes(frozen_pair):
    _, ours = frozen_pair
    with torch.no_grad():
        logits, deltas, anchors, per_level = ours.head_outputs(torch.rand(1, 3, 256, 256))
    # P3-P7 at strides 8 ... 128 on a 256 x 256 image, A = 9 anchors per location
    assert per_level == [32 * 32 * 9, 16 * 16 * 9, 8 * 8 * 9, 4 * 4 * 9, 2 * 2 * 9]
    assert logits.shape == (1, sum(per_level), 91) and deltas.shape == (1, sum(per_level), 4)
    assert anchors.shape == (sum(per_level), 4)


def test_training_losses_equal_torchvision():
    torch.manual_seed(2)
    tv = tv_retinanet(frozen=False, size=160).train()
    ours = create_model("retinanet_resnet50_fpn", frozen_bn=False).train()
    load_torchvision_state_dict(ours, tv.state_dict())
    images = torch.rand(2, 3, 160, 120, generator=torch.Generator().manual_seed(3))
    boxes = [torch.tensor([[10.0, 20.0, 90.0, 120.0], [60.0, 30.0, 118.0, 150.0], [40.0, 40.0, 70.0, 60.0]]),
             torch.zeros(0, 4)]  # an image without objects: every anchor is background
    labels = [torch.tensor([1, 17, 90]), torch.zeros(0, dtype=torch.int64)]
    tv_targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    our_targets = [{"boxes": b, "labels": lab + 1} for b, lab in zip(boxes, labels)]
    expected = tv(list(images), tv_targets)
    got = ours(images, our_targets)
    assert set(got) == set(expected) == {"classification", "bbox_regression"}
    for k in got:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-6)


def test_loss_hand_example_one_positive_one_negative_one_ignored_anchor():
    """Three anchors against one box of label 2: IoU 1 (positive), 0 (background), 4/9 (in [0.4, 0.5): ignored).
    Class loss: focal over the positive's and the negative's C outputs, / 1 positive; box loss: L1 of the positive's
    corrections against the encoded box (Notes: 002 §4.3.4)."""
    model = RetinaNet(3, backbone="resnet18", in_chans=1, frozen_bn=False, fpn_channels=8, extra="none",
                      backbone_kwargs={"layers": (1, 1, 1, 1), "widths": (8, 8, 8, 8), "stem_width": 8})
    anchors = torch.tensor([[0.0, 0.0, 30.0, 30.0], [60.0, 60.0, 90.0, 90.0], [0.0, 0.0, 20.0, 20.0]])
    box = torch.tensor([[0.0, 0.0, 30.0, 30.0]])
    g = torch.Generator().manual_seed(4)
    logits, deltas = torch.randn(1, 3, 3, generator=g), torch.randn(1, 3, 4, generator=g)
    out = model.loss(logits, deltas, anchors, [{"boxes": box, "labels": torch.tensor([2])}])
    p = torch.sigmoid(logits[0, :2])
    y = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    p_t = torch.where(y == 1, p, 1 - p)
    alpha_t = torch.where(y == 1, 0.25, 0.75)
    focal = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).sum()
    torch.testing.assert_close(out["classification"], focal)
    torch.testing.assert_close(out["classification"], tv_focal(logits[0, :2], y, reduction="sum"))
    # the target corrections of the positive anchor against its own box are 0: the L1 loss is |t_hat|
    torch.testing.assert_close(BoxCoder((1, 1, 1, 1)).encode(box, anchors[:1]), torch.zeros(1, 4))
    torch.testing.assert_close(out["bbox_regression"], deltas[0, 0].abs().sum())


def test_initial_class_scores_are_the_prior():
    torch.manual_seed(0)
    model = create_model("retinanet_tiny").eval()
    with torch.no_grad():
        logits, *_ = model.head_outputs(torch.rand(2, 1, 64, 64))
    assert torch.sigmoid(logits).mean().item() == pytest.approx(0.01, rel=0.05)


def test_rejects_bad_inputs_and_targets():
    model = create_model("retinanet_tiny")
    with pytest.raises(ConfigError, match=r"images \[B, 1, H, W\]"):
        model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ConfigError, match="model.eval"):
        model.train()(torch.rand(1, 1, 64, 64))
    with pytest.raises(ConfigError, match=r"labels must be in 1\.\.10"):
        model(torch.rand(1, 1, 64, 64), [{"boxes": torch.tensor([[1.0, 1, 20, 20]]), "labels": torch.tensor([0])}])
    with pytest.raises(ConfigError, match="feature_info"):
        RetinaNet(2, backbone=torch.nn.Conv2d(3, 8, 3))


def test_a_tiny_retinanet_overfits_two_scenes():
    """The learning test: bright squares and crosses on a dark canvas; after 250 Adam steps every object is found
    (IoU > 0.7 with its class) as the top-scoring detection of its class."""
    torch.manual_seed(0)
    images = torch.zeros(2, 1, 64, 64)
    boxes = [torch.tensor([[8.0, 8.0, 28.0, 28.0], [36.0, 30.0, 60.0, 56.0]]), torch.tensor([[20.0, 16.0, 44.0, 44.0]])]
    labels = [torch.tensor([1, 2]), torch.tensor([2])]
    for img, bs, ls in zip(images, boxes, labels):
        for (x0, y0, x1, y1), lab in zip(bs.int().tolist(), ls.tolist()):
            if lab == 1:
                img[0, y0:y1, x0:x1] = 1.0
            else:  # a cross
                img[0, (y0 + y1) // 2 - 2:(y0 + y1) // 2 + 2, x0:x1] = 1.0
                img[0, y0:y1, (x0 + x1) // 2 - 2:(x0 + x1) // 2 + 2] = 1.0
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    model = create_model("retinanet_tiny", num_classes=2, anchor_scale=2.0).train()  # anchors 16-101 px
    losses = detector_losses(model, images, targets, 250)
    assert losses[-1] < losses[0] / 10
    with torch.no_grad():
        dets = model(images)
    for det, bs, ls in zip(dets, boxes, labels):
        for b, lab in zip(bs, ls):
            mine = det["labels"] == lab
            assert mine.any()
            best = det["boxes"][mine][0]  # detections come sorted by score
            assert torchvision.ops.box_iou(best[None], b[None]).item() > 0.7
            assert det["scores"][mine][0].item() > 0.2  # from the prior 0.01 (focal loss keeps scores modest)
    assert all(math.isfinite(v) for v in losses)
