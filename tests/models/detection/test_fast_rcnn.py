"""Fast R-CNN (Notes: 002 §4.3.2, 003 §6): per-RoI features equal torchvision's roi_pool on the shared feature map,
the heads' shapes, one backbone pass per image, training, and the AlexNet variant's map, pooling and count."""

import pytest
import torch
import torchvision
from model_checks import detector_losses

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.detection.fast_rcnn import FastRCNN

GT = torch.tensor([[10.0, 12.0, 40.0, 44.0], [50.0, 20.0, 80.0, 60.0]])


def tiny(**kw) -> FastRCNN:
    torch.manual_seed(0)
    kw.setdefault("proposer", lambda image: GT + 1.0)
    return create_model("fast_rcnn_tiny", num_classes=3, **kw)


def test_per_roi_features_equal_torchvision_roi_pool_on_the_shared_map_and_heads_have_their_shapes():
    """[4-24]: a toy image with 2 proposals; heads (n, C + 1) and (n, 4 (C + 1))."""
    model = tiny().eval()
    seen = {}
    model.roi_heads.box_roi_pool.register_forward_hook(lambda m, args, out: seen.update(pooled=out))
    model.roi_heads.box_predictor.register_forward_hook(lambda m, args, out: seen.update(heads=out))
    image = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    proposals = torch.tensor([[4.0, 6.0, 50.0, 70.0], [30.5, 10.2, 90.0, 41.7]])
    with torch.no_grad():
        model(image, proposals=[proposals])
        fmap = model.features(image)
    assert fmap.shape == (1, 64, 12, 12)  # stride 8
    expected = torchvision.ops.roi_pool(fmap, [proposals], (4, 4), spatial_scale=1 / 8)
    assert torch.equal(seen["pooled"], expected)
    scores, deltas = seen["heads"]
    assert scores.shape == (2, 4) and deltas.shape == (2, 16)


def test_the_backbone_runs_once_per_image_batch_and_the_proposer_once_per_image():
    calls = []
    model = tiny()
    model.backbone.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    targets = [{"boxes": GT, "labels": torch.tensor([1, 3])}] * 2
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg"} and calls == [2]
    assert model.proposer.calls == 2
    model(images, targets)
    assert model.proposer.calls == 2  # cached


def test_training_on_one_scene_lowers_the_loss_and_detects_the_objects():
    images = torch.zeros(1, 3, 96, 96)
    images[:, 0, 12:44, 10:40] = 1.0
    images[:, 2, 20:60, 50:80] = 1.0
    model = tiny(proposer=lambda image: torch.cat([GT + 2.0, GT - 1.0, torch.tensor([[0.0, 0.0, 30.0, 30.0]])]))
    target = {"boxes": GT, "labels": torch.tensor([1, 3])}
    losses = detector_losses(model, images, [target], steps=40)
    assert losses[-1] < 0.3 * losses[0]
    with torch.no_grad():
        out = model(images)[0]
    top = out["scores"].argsort(descending=True)[:2]
    assert sorted(out["labels"][top].tolist()) == [1, 3]


def test_fast_rcnn_alexnet_pools_conv5_at_stride_16_into_6x6_like_pool5():
    """AlexNet's conv1-conv5 (before pool5) once per image, RoI pooling 6 x 6 in place of pool5, so fc6 reads
    256 x 6 x 6 = 9,216 values as AlexNet's; the parameters are R-CNN's (the same CNN and heads)."""
    with torch.device("meta"):
        model = create_model("fast_rcnn_alexnet")
        fmap = model.features(torch.zeros(1, 3, 600, 600, device="meta"))
        rcnn = create_model("rcnn_alexnet")
    assert model.stride == 16 and model.backbone.feature_info.module_names() == ["features.11"]
    assert fmap.shape == (1, 256, 36, 36)  # 600 -> conv1 149 -> pool 74 -> pool 36
    assert model.roi_heads.box_head.fc6.in_features == 9216 and model.roi_heads.box_roi_pool.output_size == 6
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in rcnn.parameters()) == 58_711_529


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="num_classes"):
        FastRCNN(0, "vgg_tiny_fashion", stride=8)
    with pytest.raises(ConfigError, match="stride"):
        FastRCNN(2, "vgg_tiny_fashion", stride=16)  # the tiny VGG's maps have strides 2, 4 and 8
    with pytest.raises(ConfigError, match="targets"):
        tiny()(torch.rand(1, 3, 96, 96))
