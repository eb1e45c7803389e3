"""FCN-8s on EfficientNet-Lite0 (Notes: 002 §5.1.3, 003 §3.3.2): the backbone's maps and the registered model."""

import torch
from torch import nn

from dlkit import create_model
from dlkit.models.segmentation.fcn_lite0 import Lite0Pyramid


def test_lite0_pyramid_gives_the_networks_own_maps_at_strides_8_16_32():
    lite0 = create_model("efficientnet_lite0").eval()
    backbone = Lite0Pyramid(lite0, frozen_bn=True).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        maps = backbone(x)
        h = lite0.stem(x)  # the reference: Lite0's own stages, one after the other
        outs = []
        for stage in lite0.stages:
            h = stage(h)
            outs.append(h)
        head = lite0.head(h)
    assert {k: tuple(v.shape[1:]) for k, v in maps.items()} == {"pool3": (40, 8, 12), "pool4": (112, 4, 6),
                                                                  "pool5": (1280, 2, 3)}
    torch.testing.assert_close(maps["pool3"], outs[2])
    torch.testing.assert_close(maps["pool4"], outs[4])
    torch.testing.assert_close(maps["pool5"], head)
    assert backbone.out_chans == {"pool3": 40, "pool4": 112, "pool5": 1280}


def test_lite0_pyramid_keeps_frozen_batch_norms_in_eval_mode():
    backbone = Lite0Pyramid(create_model("efficientnet_lite0"), frozen_bn=True).train()
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and backbone.stem.training  # BN frozen, the rest trains
    assert not any(m.training for m in Lite0Pyramid(create_model("efficientnet_lite0"), False).eval().modules())
    assert all(m.training for m in Lite0Pyramid(create_model("efficientnet_lite0"), False).train().modules())


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
