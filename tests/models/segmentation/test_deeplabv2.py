"""DeepLab v2 (Notes: 002 §5.1.5, §5.A.1): the hand-derived parameter count against torchvision's ResNet-101, the
ASPP-v2 score maps summed (checked against explicit atrous convolutions), output stride 8 and the output size."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.segmentation.deeplab import DeepLabV2


def test_resnet101_parameter_count_is_torchvision_backbone_plus_four_score_branches():
    with torch.device("meta"):
        resnet = torchvision.models.resnet101()
        model = create_model("deeplabv2_resnet101")
    backbone = sum(p.numel() for p in resnet.parameters()) - (2048 * 1000 + 1000)
    branches = 4 * (2048 * 21 * 3 * 3 + 21)  # four 3x3 atrous convs 2048 -> 21 classes, with bias
    assert backbone + branches == 44_048_532
    assert sum(p.numel() for p in model.parameters()) == 44_048_532
    assert [c.dilation for c in model.aspp.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]


def test_scores_are_the_sum_of_four_atrous_convolutions_and_upsampled_bilinearly():
    torch.manual_seed(0)
    model = create_model("deeplabv2_tiny").eval()
    for conv in model.aspp.branches:  # non-trivial biases, so that a mean or a concat would differ
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        maps = model.forward_maps(x)
        feat = maps["stage4"]
        assert feat.shape[-2:] == (12, 16)  # output stride 8
        explicit = sum(F.conv2d(feat, c.weight, c.bias, padding=r, dilation=r)
                       for c, r in zip(model.aspp.branches, (2, 4, 6, 8)))
        torch.testing.assert_close(maps["scores"], explicit)
        torch.testing.assert_close(maps["out"], F.interpolate(explicit, size=(96, 128), mode="bilinear"))
        torch.testing.assert_close(model(x), maps["out"])


def test_output_has_the_input_size_for_any_input():
    model = create_model("deeplabv2_tiny", num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 75, 101)).shape == (1, 5, 75, 101)


def test_concat_merge_and_bad_input():
    model = DeepLabV2(num_classes=3, backbone="resnet18", layers=(1, 1, 1, 1), widths=(8, 8, 8, 8), stem_width=8,
                      aspp_rates=(1, 2), merge="concat")
    assert model.aspp.project.in_channels == 6
    with pytest.raises(ConfigError, match="output_stride"):
        DeepLabV2(output_stride=4)
    with pytest.raises(ConfigError, match="in_chans"):
        model(torch.randn(1, 1, 32, 32))
