"""SSD (Notes: 002 §4.3.3-4.3.4): default boxes from the scale rule, matching, torchvision's SSD300 with copied
weights, other backbones, and overfitting a few scenes."""

import math

import pytest
import torch
from torchvision.models.detection import ssd300_vgg16 as tv_ssd300_vgg16
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection._utils import SSDMatcher
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou as tv_box_iou

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.detection.ssd import SSD, DefaultBoxes, ssd_scales
from dlkit.models.torchvision_weights import load_torchvision_state_dict
from dlkit.registry import MODELS
from tests.model_checks import detector_losses


def test_scales_follow_the_ssd_rule():
    # s_k = s_min + (s_max - s_min)(k - 1)/(m - 1): the paper's 0.2, 0.34, 0.48, 0.62, 0.76, 0.9 for m = 6
    assert ssd_scales(6) == pytest.approx([0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.0])
    assert ssd_scales(4, 0.1, 0.55) == pytest.approx([0.1, 0.25, 0.4, 0.55, 1.0])
    assert ssd_scales(1, 0.3, 0.6) == pytest.approx([0.3, 0.6])
    with pytest.raises(ConfigError, match="s_min <= s_max"):
        ssd_scales(3, 0.9, 0.2)


def test_default_boxes_of_one_map_by_hand():
    # a 100 x 200 image (H x W), one map of 1 x 2 cells, scales (0.5, 0.8), ratio 2: four boxes per cell
    boxes = DefaultBoxes([[2]], scales=[0.5, 0.8])((100, 200), [(1, 2)])
    r, s1 = math.sqrt(2), math.sqrt(0.5 * 0.8)
    for cell, cx in enumerate((50.0, 150.0)):  # centres (j + 0.5) / 2 of the width, 0.5 of the height
        want = [(0.5 * 200, 0.5 * 100), (s1 * 200, s1 * 100), (0.5 * r * 200, 0.5 / r * 100),
                (0.5 / r * 200, 0.5 * r * 100)]
        want = torch.tensor([[cx - w / 2, 50 - h / 2, cx + w / 2, 50 + h / 2] for w, h in want])
        torch.testing.assert_close(boxes[4 * cell:4 * cell + 4], want)


@pytest.mark.parametrize("kw", [dict(min_ratio=0.15, max_ratio=0.9),
                                dict(scales=[0.07, 0.15, 0.33, 0.51, 1.05], steps=[8, 16, 32, 64])])
def test_default_boxes_equal_torchvision_default_box_generator(kw):
    ratios = [[2], [2, 3], [2, 3], [2]]
    grids, image = [(19, 23), (10, 12), (5, 6), (3, 3)], (150, 180)
    tv = DefaultBoxGenerator(ratios, **kw)
    want = tv(ImageList(torch.zeros(1, 3, *image), [image]), [torch.zeros(1, 1, *g) for g in grids])[0]
    ours = DefaultBoxes(ratios, kw.get("min_ratio", 0.2), kw.get("max_ratio", 0.9), kw.get("scales"), kw.get("steps"))
    if "scales" not in kw:
        assert ours.scales[:-1] == pytest.approx(tv.scales[:-1]) and ours.scales[-1] == tv.scales[-1] == 1.0
    assert ours.num_per_location() == tv.num_anchors_per_location()
    torch.testing.assert_close(ours(image, grids), want)


def test_heads_predict_c_plus_1_scores_and_4_corrections_per_default_box_of_every_map():
    model = create_model("ssd_tiny", num_classes=3)
    x = torch.rand(2, 3, 96, 96)
    maps = model.features(x)
    assert [m.shape[-1] for m in maps] == [24, 12, 6, 3, 2]  # strides 4, 8, 16, 32 and one extra block
    per_loc = model.default_boxes.num_per_location()
    assert per_loc == [4, 4, 4, 4, 4]
    for head, box, a, m in zip(model.cls_heads, model.box_heads, per_loc, maps):
        assert head(m).shape[1] == a * 4 and box(m).shape[1] == a * 4  # A (C + 1) with C + 1 = 4, and A x 4
    logits, deltas = model.head_outputs(maps)
    n = sum(a * m.shape[-2] * m.shape[-1] for a, m in zip(per_loc, maps))
    assert logits.shape == (2, n, 4) and deltas.shape == (2, n, 4)
    assert len(model.default_boxes((96, 96), [m.shape[-2:] for m in maps])) == n


def test_matching_equals_torchvision_ssd_matcher_and_box_coder():
    g = torch.Generator().manual_seed(0)
    model = create_model("ssd_tiny", num_classes=4)
    anchors = model.default_boxes((96, 96), [(24, 24), (12, 12), (6, 6), (3, 3), (2, 2)])
    xy = torch.rand(6, 2, generator=g) * 70
    gt = torch.cat([xy, xy + 6 + torch.rand(6, 2, generator=g) * 30], dim=1)
    gt[5] = torch.tensor([40.0, 40.0, 42.0, 43.0])  # tiny: no default box reaches IoU 0.5, it keeps its best one
    gt_labels = torch.tensor([1, 2, 3, 4, 1, 2])
    labels, box_targets = model.match(anchors, [{"boxes": gt, "labels": gt_labels},
                                                {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0).long()}])
    matched = SSDMatcher(0.5)(tv_box_iou(gt, anchors))
    pos = matched >= 0
    assert torch.equal(labels[0], torch.where(pos, gt_labels[matched.clamp(min=0)], 0))
    assert labels[0][tv_box_iou(gt[5:], anchors)[0].argmax()] == 2 and tv_box_iou(gt[5:], anchors).max() < 0.5
    want = TVBoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(gt[matched[pos]], anchors[pos])
    torch.testing.assert_close(box_targets[0][pos], want)
    assert (labels[1] == 0).all()


def test_ssd300_vgg16_has_torchvision_parameter_count():
    with torch.device("meta"):  # shapes only: no random initialisation of 35M weights
        model, tv = create_model("ssd300_vgg16"), tv_ssd300_vgg16(weights=None, weights_backbone=None)
    n = sum(p.numel() for p in model.parameters())
    assert n == 35_641_826 == MODELS.get("ssd300_vgg16").meta["num_params"]
    assert n == sum(p.numel() for p in tv.parameters())
    # the derivation of the module docstring: VGG convs + L2 scale + fc6 + fc7 + extras + heads
    heads = sum((c * 9 + 1) * a * (91 + 4) for c, a in zip((512, 1024, 512, 256, 256, 256), (4, 6, 6, 6, 4, 4)))
    assert heads == 12_697_890
    assert 14_714_688 + 512 + 4_719_616 + 1_049_600 + 2_459_520 + heads == n


def test_ssd300_vgg16_equals_torchvision_with_copied_weights():
    torch.manual_seed(0)
    tv = tv_ssd300_vgg16(weights=None, weights_backbone=None)
    with torch.device("meta"):
        ours = create_model("ssd300_vgg16")
    ours = load_torchvision_state_dict(ours, tv.state_dict(), assign=True)
    # a low-contrast image keeps the random network's softmax away from 1.0, where equal scores make the order of
    # the detections arbitrary
    x = 0.45 + 0.1 * torch.rand(1, 3, 300, 300)
    tv.eval(), ours.eval()
    with torch.no_grad():
        want, got = tv(list(x))[0], ours(x)[0]
    assert len(got["boxes"]) == len(want["boxes"]) == 200 and len(want["scores"].unique()) == 200
    torch.testing.assert_close(got["boxes"], want["boxes"], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(got["scores"], want["scores"])
    assert torch.equal(got["labels"], want["labels"])
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 120.0, 200.0], [150.0, 10.0, 290.0, 90.0], [5, 5, 40, 30]]),
                "labels": torch.tensor([3, 17, 90])}]
    tv.train(), ours.train()
    want, got = tv(list(x), targets), ours(x, targets)
    torch.testing.assert_close(got["loss_classifier"], want["classification"])
    torch.testing.assert_close(got["loss_box_reg"], want["bbox_regression"])
    with pytest.raises(ConfigError, match="VGG-16 trunk"):
        load_torchvision_state_dict(create_model("ssd_tiny"), tv.state_dict())


def test_ssd_takes_any_backbone_with_feature_info():
    model = SSD(num_classes=2, backbone="mobilenet_v2_tiny_fashion", in_chans=1, stages=(4, 6),
                extra_layers=((16, 32, 2, 1),), aspect_ratios=((2.0,),), s_min=0.15, s_max=0.6)
    assert model.backbone.feature_info.reductions() == [8, 16]
    x = torch.rand(2, 1, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 28.0]]), "labels": torch.tensor([2])}] * 2
    losses = model(x, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg"} and all(v.isfinite() for v in losses.values())
    model.eval()
    out = model(x)
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4 and set(out[0]["labels"].tolist()) <= {1, 2}


def test_bad_inputs_get_one_line_errors():
    model = create_model("ssd_tiny")
    with pytest.raises(ConfigError, match="expects images \\[B, 3, H, W\\]"):
        model(torch.rand(1, 1, 64, 64))
    with pytest.raises(ConfigError, match="needs one target dict per image"):
        model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ConfigError, match="labels must be in 1..5"):
        model(torch.rand(2, 3, 64, 64), 2 * [{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([0])}])
    with pytest.raises(ConfigError, match="one list per map"):
        create_model("ssd_tiny", aspect_ratios=((2.0,), (2.0,)))
    with pytest.raises(ConfigError, match="object classes"):
        create_model("ssd_tiny", num_classes=0)


def test_small_ssd_overfits_a_handful_of_scenes():
    from dlkit.data.detection_scenes import shapes_scenes
    from dlkit.metrics.detection import COCOMeanAP

    torch.manual_seed(0)
    data = shapes_scenes(4, seed=3, height=96, width=96, objects=(1, 3), sizes=(16, 40))
    images = torch.stack([data[i][0] for i in range(4)])
    targets = [{k: data[i][1][k] for k in ("boxes", "labels")} for i in range(4)]
    model = create_model("ssd_tiny")
    losses = detector_losses(model, images, targets, 120)
    assert losses[-1] < 0.2 * losses[0]
    metric = COCOMeanAP()
    with torch.no_grad():
        metric.update(model(images), [data[i][1] for i in range(4)])
    assert metric.compute()["map_50"] > 0.9
