"""YOLOv3 (Notes: 000 §3.12.1-3.12.2, 002 §4.3.4): the published size derived layer by layer from yolov3.cfg, the
three scales, the box decoding and the responsible-anchor assignment against hand values, the notes' loss against a
cell-by-cell evaluation of its formula, inference, and a small model overfitting a handful of scenes."""

import math
import time

import pytest
import torch
import torch.nn.functional as F

from dlkit import create_model
from dlkit.data.detection_scenes import shapes_scenes
from dlkit.errors import ConfigError
from dlkit.losses.yolov3 import yolo_assign, yolo_decode, yolov3_loss
from dlkit.metrics.detection import COCOMeanAP
from dlkit.models.detection.yolov3 import COCO_ANCHORS, YOLOv3
from dlkit.registry import model_metadata
from tests.model_checks import detector_losses


def conv_bn(k: int, c_in: int, c_out: int) -> int:
    """A darknet convolutional layer: k x k kernel without bias, batch norm (scale and shift per channel)."""
    return k * k * c_in * c_out + 2 * c_out


def output_conv(c_in: int, classes: int = 80, anchors: int = 3) -> int:
    """The linear 1x1 output convolution with bias: B (5 + C) = 255 channels for 80 classes."""
    return c_in * anchors * (5 + classes) + anchors * (5 + classes)


def test_yolov3_has_the_published_size_derived_layer_by_layer_from_yolov3_cfg():
    # Darknet-53 without its classifier (tests/models/classification/test_darknet.py derives it): 40,584,928.
    darknet = conv_bn(3, 3, 32)
    for c_in, width, blocks in ((32, 64, 1), (64, 128, 2), (128, 256, 8), (256, 512, 8), (512, 1024, 4)):
        darknet += conv_bn(3, c_in, width) + blocks * (conv_bn(1, width, width // 2) + conv_bn(3, width // 2, width))
    # scale 1 (13 x 13): five convolutions 1x1 512, 3x3 1024, 1x1 512, 3x3 1024, 1x1 512 on the 1024-channel map,
    # then 3x3 1024 and the output 1x1 255
    scale1 = (conv_bn(1, 1024, 512) + conv_bn(3, 512, 1024) + conv_bn(1, 1024, 512) + conv_bn(3, 512, 1024)
              + conv_bn(1, 1024, 512) + conv_bn(3, 512, 1024) + output_conv(1024))
    lateral1 = conv_bn(1, 512, 256)  # then x2 up-sampling and concatenation with the 512-channel map: 768
    scale2 = (conv_bn(1, 768, 256) + conv_bn(3, 256, 512) + conv_bn(1, 512, 256) + conv_bn(3, 256, 512)
              + conv_bn(1, 512, 256) + conv_bn(3, 256, 512) + output_conv(512))
    lateral2 = conv_bn(1, 256, 128)  # concatenated with the 256-channel map: 384
    scale3 = (conv_bn(1, 384, 128) + conv_bn(3, 128, 256) + conv_bn(1, 256, 128) + conv_bn(3, 128, 256)
              + conv_bn(1, 256, 128) + conv_bn(3, 128, 256) + output_conv(256))
    assert darknet == 40_584_928
    assert (scale1, lateral1, scale2, lateral2, scale3) == (15_999_231, 131_584, 4_133_119, 33_024, 1_067_263)
    total = darknet + scale1 + lateral1 + scale2 + lateral2 + scale3
    assert total == 61_949_149  # the count of the common PyTorch ports of yolov3.cfg
    with torch.device("meta"):
        model = create_model("yolov3", num_classes=80)
    assert sum(p.numel() for p in model.parameters()) == total == model_metadata("yolov3")["num_params"]
    assert sum(p.numel() for p in model.backbone.parameters()) == darknet
    meta = model_metadata("yolov3")
    assert (meta["task"], meta["family"], meta["input_size"]) == ("detection", "yolov3", (3, 416, 416))


@pytest.mark.parametrize("side, grids", [(416, (52, 26, 13)), (608, (76, 38, 19))])
def test_three_scales_at_strides_8_16_32_with_255_channels_per_cell(side, grids):
    with torch.device("meta"):
        model = create_model("yolov3", num_classes=80)
        outs = model.head_outputs(torch.empty(1, 3, side, side))
    assert model.strides == [8, 16, 32]
    assert [tuple(o.shape) for o in outs] == [(1, 3, g, g, 85) for g in grids]  # 3 x 85 = 255 channels
    assert model.outputs[0][-1].out_channels == 255
    voc = create_model("yolov3", num_classes=20, backbone=create_model("darknet_small", features_only=True,
                                                                        out_indices=(2, 3, 4)))
    assert voc.outputs[0][-1].out_channels == 75  # 3 x (5 + 20)
    # the finest scale gets the three smallest COCO anchors
    assert voc.anchors.tolist() == [list(map(list, COCO_ANCHORS[i:i + 3])) for i in (0, 3, 6)]


def test_decode_is_b_equals_c_plus_sigmoid_t_and_p_e_to_the_t():
    anchors, stride = torch.tensor([[10.0, 13.0], [30.0, 20.0]]), 8
    t = torch.zeros(1, 2, 2, 3, 4)
    t[0, 1, 1, 2] = torch.tensor([math.log(3), -math.log(3), math.log(2), 0.0])  # sigmoid: 0.75, 0.25; e^t: 2, 1
    boxes = yolo_decode(t, anchors, stride)
    for a in range(2):
        for row in range(2):
            for col in range(3):
                expected = [(col + 0.5) * 8, (row + 0.5) * 8, *anchors[a].tolist()]  # t = 0: the cell centre
                if (a, row, col) == (1, 1, 2):
                    expected = [(2 + 0.75) * 8, (1 + 0.25) * 8, 30 * 2, 20 * 1]  # c_x is the column
                torch.testing.assert_close(boxes[0, a, row, col], torch.tensor(expected))


def test_assignment_takes_the_cell_of_the_centre_and_the_anchor_of_best_shape_iou():
    anchors = torch.tensor(COCO_ANCHORS, dtype=torch.float32).view(3, 3, 2)
    # box 1: centre (5.3, 7.8) cells of the 13 x 13 grid (x 32 pixels), 100 x 80: IoU with (116, 90) is
    # 8000 / 10440 = 0.766, with (62, 45) 2790 / 8000 = 0.349, with (156, 198) 8000 / 30888 = 0.259: anchor 6 of 9
    # (stride 32, its first); box 2: 12 x 14 centred at (20.5, 41): (10, 13) 130 / 168 = 0.774 beats (16, 30)
    # 168 / 480 = 0.35: anchor 0, stride 8, cell (41 // 8, 20 // 8) = (5, 2)
    cx, cy = 5.3 * 32, 7.8 * 32
    boxes = torch.tensor([[cx - 50, cy - 40, cx + 50, cy + 40], [14.5, 34.0, 26.5, 48.0]])
    got = yolo_assign(boxes, anchors, (8, 16, 32), ((52, 52), (26, 26), (13, 13)))
    assert got["level"].tolist() == [2, 0] and got["anchor"].tolist() == [0, 0]
    assert got["row"].tolist() == [7, 5] and got["col"].tolist() == [5, 2]
    # an empty box at the far corner: every IoU is 0, anchor 0 (stride 8) on ties, cell 416 // 8 = 52 kept at 51
    edge = yolo_assign(torch.tensor([[416.0, 416.0, 416.0, 416.0]]), anchors, (8, 16, 32), ((52, 52), (26, 26),
                                                                                             (13, 13)))
    assert (edge["level"].item(), edge["row"].item(), edge["col"].item()) == (0, 51, 51)
    with pytest.raises(ConfigError, match="x2 >= x1"):
        yolo_assign(torch.tensor([[10.0, 0, 5, 5]]), anchors, (8, 16, 32), ((52, 52), (26, 26), (13, 13)))


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def notes_loss_by_hand(p, responsible, offsets, sizes, anchor_wh, image_wh, label, classes):
    """L_loc + L_cls of 000 §3.12.1 for one image and one box, evaluated cell by cell with Python floats."""
    loc = obj = cls = 0.0
    n_anchor, rows, cols, _ = p.shape
    for a in range(n_anchor):
        for r in range(rows):
            for c in range(cols):
                v = p[a, r, c].tolist()
                conf = sig(v[4])
                if (a, r, c) != responsible:
                    obj += 0.5 * conf**2  # lambda_noobj (C - 0)^2
                    continue
                w = anchor_wh[0] * math.exp(v[2]) / image_wh[0]
                h = anchor_wh[1] * math.exp(v[3]) / image_wh[1]
                loc += 5 * ((sig(v[0]) - offsets[0]) ** 2 + (sig(v[1]) - offsets[1]) ** 2
                            + (math.sqrt(w) - math.sqrt(sizes[0] / image_wh[0])) ** 2
                            + (math.sqrt(h) - math.sqrt(sizes[1] / image_wh[1])) ** 2)
                obj += (conf - 1) ** 2
                cls += sum((sig(v[5 + k]) - (1.0 if k + 1 == label else 0.0)) ** 2 for k in range(classes))
    return loc, obj, cls


def test_loss_equals_the_notes_formula_evaluated_cell_by_cell():
    torch.manual_seed(0)
    anchors = torch.tensor([[[8.0, 8.0], [20.0, 12.0]]])  # one scale of stride 16 on a 32 x 32 image: 2 x 2 cells
    pred = torch.randn(2, 2, 2, 2, 7)  # B=2 anchors, C=2 classes
    # box centre (20, 10), 18 x 12: cell (row 0, col 1), offsets (20/16 - 1, 10/16) = (0.25, 0.625); anchor 1
    # (IoU 216 / 240 = 0.9 against 64 / 216 for anchor 0)
    targets = [{"boxes": torch.tensor([[11.0, 4.0, 29.0, 16.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    got = yolov3_loss([pred], targets, anchors, (16,), (32, 32), num_classes=2)
    loc, obj, cls = notes_loss_by_hand(pred[0], (1, 0, 1), (0.25, 0.625), (18, 12), (20, 12), (32, 32), 2, 2)
    obj_empty = sum(0.5 * sig(v) ** 2 for v in pred[1, ..., 4].flatten().tolist())
    assert got["loss_box"].item() == pytest.approx(loc / 2, rel=1e-5)
    assert got["loss_objectness"].item() == pytest.approx((obj + obj_empty) / 2, rel=1e-5)
    assert got["loss_classifier"].item() == pytest.approx(cls / 2, rel=1e-5)
    # the BCE variant replaces the squared errors of objectness and classes by torch's binary cross-entropy
    bce = yolov3_loss([pred], targets, anchors, (16,), (32, 32), num_classes=2, kind="bce")
    pos = torch.zeros(2, 2, 2, 2, dtype=torch.bool)
    pos[0, 1, 0, 1] = True
    logits = pred[..., 4]
    expected_obj = (F.binary_cross_entropy_with_logits(logits[pos], torch.ones(1), reduction="sum")
                    + 0.5 * F.binary_cross_entropy_with_logits(logits[~pos], torch.zeros(15), reduction="sum")) / 2
    expected_cls = F.binary_cross_entropy_with_logits(pred[0, 1, 0, 1, 5:], torch.tensor([0.0, 1.0]),
                                                      reduction="sum") / 2
    torch.testing.assert_close(bce["loss_objectness"], expected_obj)
    torch.testing.assert_close(bce["loss_classifier"], expected_cls)
    torch.testing.assert_close(bce["loss_box"], got["loss_box"])


def test_loss_of_a_perfect_prediction_vanishes_and_of_empty_images_is_the_no_object_term_only():
    anchors = torch.tensor([[[8.0, 8.0], [20.0, 12.0]]])
    targets = [{"boxes": torch.tensor([[11.0, 4.0, 29.0, 16.0]]), "labels": torch.tensor([2])}]
    perfect = torch.full((1, 2, 2, 2, 7), -30.0)
    perfect[0, 1, 0, 1] = torch.tensor([math.log(0.25 / 0.75), math.log(0.625 / 0.375), math.log(18 / 20), 0.0,
                                        30.0, -30.0, 30.0])
    losses = yolov3_loss([perfect], targets, anchors, (16,), (32, 32), num_classes=2)
    assert all(v.item() < 1e-10 for v in losses.values())
    pred = torch.randn(3, 2, 2, 2, 7, requires_grad=True)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 3
    losses = yolov3_loss([pred], empty, anchors, (16,), (32, 32), num_classes=2)
    assert losses["loss_box"].item() == 0 and losses["loss_classifier"].item() == 0
    expected = 0.5 * torch.sigmoid(pred[..., 4].detach()).square().sum() / 3
    torch.testing.assert_close(losses["loss_objectness"], expected)
    assert losses["loss_objectness"].item() > 0
    sum(losses.values()).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[..., 4].abs().min() > 0
    assert pred.grad[..., :4].abs().max() == 0 and pred.grad[..., 5:].abs().max() == 0


def test_ignore_thresh_leaves_good_unassigned_boxes_out_of_the_no_object_term():
    anchors = torch.tensor([[[8.0, 8.0], [20.0, 12.0]]])
    targets = [{"boxes": torch.tensor([[11.0, 4.0, 29.0, 16.0]]), "labels": torch.tensor([1])}]
    pred = torch.zeros(1, 2, 2, 2, 6)  # anchor 0 of the same cell decodes to a box of IoU 64 / 216 = 0.30
    full = yolov3_loss([pred], targets, anchors, (16,), (32, 32), num_classes=1)["loss_objectness"]
    kept = yolov3_loss([pred], targets, anchors, (16,), (32, 32), num_classes=1,
                       ignore_thresh=0.25)["loss_objectness"]
    assert full.item() == pytest.approx(0.25 + 7 * 0.5 * 0.25)  # (0.5 - 1)^2 + 7 lambda_noobj 0.5^2
    assert kept.item() == pytest.approx(0.25 + 6 * 0.5 * 0.25)


def small_model(**kw) -> YOLOv3:
    return create_model("yolov3_small", num_classes=3, image_size=64, **kw)


def test_forward_backward_on_a_small_input_reaches_every_parameter():
    torch.manual_seed(0)
    model = small_model().train()
    images = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [40.0, 40.0, 50.0, 52.0]]),
                "labels": torch.tensor([1, 3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = model(images, targets)
    assert set(losses) == {"loss_box", "loss_objectness", "loss_classifier"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing
    with pytest.raises(ConfigError, match="multiples of 32"):
        model(torch.rand(1, 3, 60, 64), targets[:1])
    with pytest.raises(ConfigError, match="training mode computes its loss"):
        model(images)
    with pytest.raises(ConfigError, match=r"expects images \[B, 3, H, W\]"):
        model(torch.rand(2, 1, 64, 64), targets)
    with pytest.raises(ConfigError, match=r"labels must be in 1\.\.3"):
        model(images, [{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([4])}] * 2)
    with pytest.raises(ConfigError, match="multiple of 3"):
        small_model(anchors=[(10, 10)] * 4)


def test_inference_scores_objectness_times_class_and_decodes_the_box():
    model = small_model(score_thresh=0.05).eval()
    preds = [torch.full((1, 3, g, g, 8), -12.0) for g in (8, 4, 2)]
    preds[1][0, 2, 1, 3] = torch.tensor([0.0, 0.0, math.log(2), 0.0, 3.0, -12.0, 2.0, -12.0])
    anchor = model.anchors[1, 2]
    out = model.detect(preds, (64, 64))[0]
    assert out["labels"].tolist() == [2]
    assert out["scores"].item() == pytest.approx(sig(3) * sig(2), rel=1e-6)
    cx, cy, w, h = (3 + 0.5) * 16, (1 + 0.5) * 16, 2 * anchor[0].item(), anchor[1].item()
    expected = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]).clamp(0, 64)
    torch.testing.assert_close(out["boxes"][0], expected)


def test_small_model_overfits_a_handful_of_scenes():
    torch.manual_seed(0)
    scenes = shapes_scenes(4, seed=3, height=64, width=64, objects=(1, 3), sizes=(12, 40))
    images = torch.stack([scenes[i][0] for i in range(4)])
    targets = [scenes[i][1] for i in range(4)]
    model = create_model("yolov3_small", num_classes=5, image_size=64)  # the COCO anchors scaled to 64 pixels
    start = time.process_time()  # CPU time: the test's own cost, whatever else runs on the machine
    detector_losses(model, images, targets, 40)
    metric = COCOMeanAP()
    with torch.no_grad():
        metric.update(model(images), targets)
    assert metric.compute()["map_50"] > 0.9
    assert time.process_time() - start < 20


def test_any_backbone_with_feature_info_at_doubling_strides():
    # a ResNet through the feature contract instead of Darknet: its last three stages are at strides 8, 16, 32
    model = small_model(backbone="resnet18", backbone_kwargs={"widths": (8, 8, 16, 16), "stem_width": 8})
    assert list(model.strides) == [8, 16, 32]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2])}] * 2
    sum(model.train()(torch.rand(2, 3, 64, 64), targets).values()).backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    dets = model.eval()(torch.rand(2, 3, 64, 64))
    assert len(dets) == 2 and set(dets[0]) == {"boxes", "scores", "labels"}
