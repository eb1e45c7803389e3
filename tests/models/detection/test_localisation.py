"""The CNN localiser (Notes: 002 §4.3.1, 003 §5): the multi-task loss by hand, the box parametrisation against
torchvision's box_convert, the detection contract, bad targets, any backbone, and a small overfit."""

import math

import numpy as np
import pytest
import torch
import torchvision
from torchvision.ops import box_convert as tv_box_convert

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.detection.localisation import Localiser
from dlkit.registry import model_metadata
from dlkit.tasks.detection import check_detections

H, W = 40, 48  # not square: the box is normalised by width and height separately


def small(**kw) -> Localiser:
    return Localiser(**{"num_classes": 3, "in_chans": 1, "backbone": "lenet5", "pool_size": 2, "hidden": (8,),
                        **kw})


def targets_of(boxes, labels):
    return [{"boxes": torch.tensor([b], dtype=torch.float32), "labels": torch.tensor([lab])}
            for b, lab in zip(boxes, labels)]


BOXES = [[4.0, 6.0, 20.0, 30.0], [10.0, 2.0, 46.0, 38.0]]  # xyxy pixels
LABELS = [2, 3]


def test_loss_equals_the_notes_multitask_loss_computed_by_hand():
    torch.manual_seed(0)
    images = torch.rand(2, 1, H, W)
    for box_loss in ("mse", "l2", "smooth_l1"):
        model = small(box_weight=2.5, box_loss=box_loss).train()
        logits, boxes = model.forward_heads(images)
        losses = model(images, targets_of(BOXES, LABELS))
        # CE(softmax(scores), 1[c]) = -log(e^{s_c} / sum_j e^{s_j}), averaged over the images; c = label - 1
        ce = sum(-(logits[i, c - 1] - logits[i].exp().sum().log()) for i, c in enumerate(LABELS)) / 2
        # BB = (cx / W, cy / H, w / W, h / H)
        true = torch.tensor([[(x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H]
                             for x1, y1, x2, y2 in BOXES])
        d = boxes - true
        if box_loss == "mse":  # 002 §4.3.1: the mean of the squared differences
            reg = d.square().sum() / 8
        elif box_loss == "l2":  # 003 §5: ||BB' - BB||_2 per image
            reg = (d.square().sum(1).sqrt()).sum() / 2
        else:  # 0.5 d^2 / beta below beta, |d| - beta / 2 above, beta = 1/9
            beta = 1 / 9
            reg = torch.where(d.abs() < beta, 0.5 * d.square() / beta, d.abs() - beta / 2).sum() / 8
        assert set(losses) == {"loss_classifier", "loss_box_reg"}
        torch.testing.assert_close(losses["loss_classifier"], ce)
        torch.testing.assert_close(losses["loss_box_reg"], 2.5 * reg)


def test_a_predicted_box_equal_to_the_target_gives_a_zero_regression_term_and_gradients_reach_both_heads():
    model = small().train()
    target = torch.tensor([0.3, 0.6, 0.25, 0.5])  # cx/W, cy/H, w/W, h/H
    with torch.no_grad():  # the box head ignores its input and outputs logit(target): sigmoid gives the target
        model.box_head.weight.zero_()
        model.box_head.bias.copy_(torch.logit(target))
    x1, y1 = (target[0] - target[2] / 2) * W, (target[1] - target[3] / 2) * H
    box = [x1.item(), y1.item(), x1.item() + target[2].item() * W, y1.item() + target[3].item() * H]
    losses = model(torch.rand(2, 1, H, W), targets_of([box, box], [1, 2]))
    assert losses["loss_box_reg"].item() == pytest.approx(0.0, abs=1e-10)
    sum(losses.values()).backward()
    assert model.cls_head.weight.grad.abs().sum() > 0 and model.box_head.bias.grad is not None
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    # the regression term alone reaches the backbone too (the shared features learn where the object is)
    model.zero_grad()
    with torch.no_grad():
        model.box_head.weight.normal_()
    model(torch.rand(2, 1, H, W), targets_of([box, box], [1, 2]))["loss_box_reg"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert model.cls_head.weight.grad is None or not model.cls_head.weight.grad.any()


def test_eval_gives_one_detection_per_image_in_the_contract():
    torch.manual_seed(0)
    model = small().eval()
    images = torch.rand(3, 1, H, W)
    with torch.no_grad():
        logits, boxes = model.forward_heads(images)
        out = model(images)
    check_detections(out, 3)
    probs = torch.softmax(logits, 1)
    expected = tv_box_convert(boxes * torch.tensor([W, H, W, H]), "cxcywh", "xyxy")
    expected[:, 0::2] = expected[:, 0::2].clamp(0, W)
    expected[:, 1::2] = expected[:, 1::2].clamp(0, H)
    for i, det in enumerate(out):
        assert det["boxes"].shape == (1, 4) and det["scores"].shape == (1,) and det["labels"].shape == (1,)
        torch.testing.assert_close(det["boxes"][0], expected[i])
        assert det["labels"].item() == probs[i].argmax().item() + 1  # labels 1..C
        assert det["scores"].item() == pytest.approx(probs[i].max().item())
    # a list of equally sized images is the same batch
    with torch.no_grad():
        listed = model(list(images))
    torch.testing.assert_close(torch.cat([d["boxes"] for d in listed]), torch.cat([d["boxes"] for d in out]))


def test_images_are_normalised_by_image_mean_and_std():
    torch.manual_seed(0)
    a = small(image_mean=0.2, image_std=0.5).eval()
    b = small(image_mean=0.0, image_std=1.0).eval()
    b.load_state_dict(a.state_dict())  # the statistics are not in the state dict: only the weights are copied
    x = torch.rand(2, 1, H, W)
    with torch.no_grad():
        torch.testing.assert_close(a.forward_heads(x), b.forward_heads((x - 0.2) / 0.5))
    grey, rgb = small(), small(in_chans=3)
    torch.testing.assert_close(grey.image_mean.flatten(), torch.tensor([(0.485 + 0.456 + 0.406) / 3]))
    torch.testing.assert_close(rgb.image_std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    with pytest.raises(ConfigError, match="one value per image channel"):
        small(in_chans=3, image_mean=[0.5, 0.5])


def test_targets_without_exactly_one_object_are_refused_naming_the_image():
    model = small().train()
    images = torch.rand(3, 1, H, W)
    two = {"boxes": torch.tensor([BOXES[0], BOXES[1]]), "labels": torch.tensor([1, 2])}
    none = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    one = targets_of([BOXES[0]], [1])[0]
    with pytest.raises(ConfigError, match="exactly one object per image; image 1 of the batch has 2 boxes"):
        model(images, [one, two, one])
    with pytest.raises(ConfigError, match="image 2 of the batch has 0 boxes"):
        model(images, [one, one, none])
    with pytest.raises(ConfigError, match=r"target 0: labels must be in 1\.\.3 \(0 is the background\); got 0\.\.0"):
        model(images, targets_of([BOXES[0]] * 3, [0, 1, 1]))
    with pytest.raises(ConfigError, match=r"a list of one target dict per image \(3\); got 1"):
        model(images, [one])
    with pytest.raises(ConfigError, match="needs targets"):
        model(images)
    with pytest.raises(ConfigError, match=r"images \[B, 1, H, W\]"):
        model(torch.rand(3, 3, H, W), [one] * 3)
    with pytest.raises(ConfigError, match="one size"):
        model([torch.rand(1, H, W), torch.rand(1, H, H)], [one] * 2)
    for bad, match in ((dict(box_loss="l1"), "box_loss must be one of"), (dict(num_classes=0), "num_classes >= 1"),
                       (dict(backbone=torch.nn.Conv2d(1, 2, 3)), "feature extractor with feature_info")):
        with pytest.raises(ConfigError, match=match):
            small(**bad)


def test_any_registered_backbone_serves_through_the_feature_contract():
    images = torch.rand(2, 1, 32, 32)
    for backbone in ("resnet_cifar20", "regnet_tiny_fashion",
                     create_model("vgg_tiny_fashion", features_only=True, out_indices=(1,))):
        model = small(backbone=backbone).eval()
        out = model(images)
        check_detections(out, 2)
        last = model.backbone.feature_info.channels()[-1]
        assert model.neck[2].in_features == last * 2 * 2  # the last map pooled to 2 x 2


def test_registered_localisers_have_their_metadata_and_alexnet_count():
    meta = model_metadata("localiser_tiny")
    assert (meta["family"], meta["task"], meta["section"]) == ("localisation", "detection", "002 §4.3.1")
    assert meta["input_size"] == (1, 64, 64)
    # Fig. 4.6: AlexNet (its 6x6 pool, fc6 and fc7 shared) with a 1000-way class head and a 4-number box head:
    # torchvision's AlexNet plus the box head's 4096 x 4 weights and 4 biases
    with torch.device("meta"):
        model = create_model("localiser_alexnet")
        reference = torchvision.models.alexnet()
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(p.numel() for p in reference.parameters()) + 4096 * 4 + 4 == 61_117_228
    assert model_metadata("localiser_alexnet")["num_params"] == n


def _digit_scenes(n: int, size: int):
    """`n` canvases with one scikit-learn digit each (no download), in the detection contract."""
    from sklearn.datasets import load_digits

    from dlkit.data.detection_scenes import mnist_scenes

    digits = load_digits()
    glyphs = np.kron(digits.images, np.ones((3, 3))) * 16  # 8x8 0..16 -> 24x24 0..255
    return mnist_scenes(n, 0, size, size, digits=glyphs.clip(0, 255).astype(np.uint8),
                        digit_labels=digits.target[:len(glyphs)], objects=(1, 1), sizes=(12, 28))


def test_a_small_localiser_overfits_a_small_batch():
    from dlkit.data.loader import collate_detection
    from dlkit.ops import box_iou

    torch.manual_seed(0)
    images, targets = collate_detection([s for s in _digit_scenes(16, 40)])
    assert all(len(t["boxes"]) == 1 for t in targets)
    model = Localiser(num_classes=10, in_chans=1, backbone="vgg_tiny_fashion", pool_size=4, hidden=(128,),
                      box_weight=10.0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for _ in range(100):  # measured: accuracy 1 from step 30, mean IoU 0.87 at 50, 0.99 at 100
        loss = sum(model.train()(images, targets).values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model.eval()(images)
    accuracy = np.mean([d["labels"].item() == t["labels"].item() for d, t in zip(out, targets)])
    iou = torch.stack([box_iou(d["boxes"], t["boxes"])[0, 0] for d, t in zip(out, targets)])
    assert loss.item() < first / 20 and accuracy == 1.0 and iou.mean() > 0.8, (first, loss.item(), iou)
    assert math.isfinite(loss.item())
