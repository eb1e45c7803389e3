"""FCN-8s on EfficientNet-Lite0 (Notes: 002 §5.1.3, 003 §3.3.2): the backbone's maps and the registered model."""

import torch
from torch import nn

from dlkit import create_model
from dlkit.models.segmentation.fcn_lite0 import lite0_pyramid


def test_lite0_pyramid_gives_the_networks_own_maps_at_strides_8_16_32():
    lite0 = create_model("efficientnet_lite0").eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        h = lite0.stem(x)  # the reference: Lite0's own stages, one after the other
        outs = []
        for stage in lite0.stages:
            h = stage(h)
            outs.append(h)
        head = lite0.head(h)
        backbone = lite0_pyramid(lite0, frozen_bn=True).eval()
        maps = backbone(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(40, 8, 12), (112, 4, 6), (1280, 2, 3)]
    assert torch.equal(maps[0], outs[2]) and torch.equal(maps[1], outs[4]) and torch.equal(maps[2], head)
    assert backbone.feature_info.channels() == [40, 112, 1280] and backbone.feature_info.reductions() == [8, 16, 32]
    assert backbone.feature_info.module_names() == ["stages.2", "stages.4", "head"]


def test_lite0_pyramid_keeps_frozen_batch_norms_in_eval_mode():
    backbone = lite0_pyramid(create_model("efficientnet_lite0"), frozen_bn=True).train()
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and backbone.stem.training  # BN frozen, the rest trains
    assert not any(m.training for m in lite0_pyramid(create_model("efficientnet_lite0"), False).eval().modules())
    assert all(m.training for m in lite0_pyramid(create_model("efficientnet_lite0"), False).train().modules())


def test_fcn8s_lite0_scores_every_pixel_and_trains_only_lite0_and_the_head():
    torch.manual_seed(0)
    model = create_model("fcn8s_lite0", num_classes=11).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 64, 96))
    assert y.shape == (2, 11, 64, 96)
    lite0 = sum(p.numel() for p in create_model("efficientnet_lite0").parameters())
    classifier = 1280 * 1000 + 1000  # Lite0's ImageNet classifier is not part of the FCN
    k = 11
    head = (1280 * k + k) + (112 * k + k) + (40 * k + k) + 2 * (k * k * 4 * 4)  # scorers, two learned x2 upsamplers
    learned = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert learned == lite0 - classifier + head


def test_fcn8s_lite0_loads_checkpoints_written_before_the_backbone_contract():
    """The encoder's modules were `to8` (stages 0-2), `to16` (3-4) and `to32` (5-6); those keys still load."""
    torch.manual_seed(0)
    trained = create_model("fcn8s_lite0", num_classes=3).eval()
    old = {}
    for key, value in trained.state_dict().items():
        if key.startswith("backbone.stages."):
            i = int(key.split(".")[2])
            key = key.replace("backbone.stages.", f"backbone.to{8 if i < 3 else 16 if i < 5 else 32}.", 1)
        old[key] = value
    assert "backbone.to16.3.0.project.0.weight" in old and not any(k.startswith("backbone.stages.") for k in old)
    model = create_model("fcn8s_lite0", num_classes=3).eval()
    model.load_state_dict(old)  # strict
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
