"""DeepLab v3 / v3+ and the dilated ResNet (Notes: 002 §5.1.5, §5.A.2): exact parameter counts (torchvision's
published 42,004,074 and 60,996,202 with the auxiliary head), output stride 8 / 16 by feature size with the
parameters of the undilated ResNet, the OS 16 -> 8 curriculum in place, the v3+ decoder on stride-4 features,
output H x W for any input, gradients and a learning test."""

import pytest
import torch
import torch.nn.functional as F
from model_checks import training_losses
from torch import nn

from dlkit import create_model, list_models
from dlkit.errors import ConfigError
from dlkit.models.classification.resnet import ResNet
from dlkit.models.segmentation.deeplab import DeepLabV3, DeepLabV3Plus, dilated_resnet
from dlkit.nn.residual import BasicBlock, Bottleneck


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


conv = lambda cin, cout, k=1, bias=False: cin * cout * k * k + (cout if bias else 0)
bn = lambda c: 2 * c


def aspp_params(cin: int, c: int = 256, n_rates: int = 3) -> int:
    branch1 = conv(cin, c) + bn(c)
    atrous = n_rates * (conv(cin, c, 3) + bn(c))
    return 2 * branch1 + atrous + conv((n_rates + 2) * c, c) + bn(c)  # 1x1, atrous, pooling, projection


def v3_head(c: int = 256, k: int = 21) -> int:
    return conv(c, c, 3) + bn(c) + conv(c, k, bias=True)


def aux_head(cin: int = 1024, k: int = 21) -> int:
    return conv(cin, cin // 4, 3) + bn(cin // 4) + conv(cin // 4, k, bias=True)


RESNET50_NO_FC = 25_557_032 - conv(2048, 1000, bias=True)
RESNET101_NO_FC = 44_549_160 - conv(2048, 1000, bias=True)


def test_deeplabv3_resnet50_parameter_count_and_torchvision_with_aux():
    assert set(list_models("deeplabv3*")) == {"deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_tiny",
                                            "deeplabv3plus_resnet50", "deeplabv3plus_tiny"}
    assert RESNET50_NO_FC == 23_508_032 and aspp_params(2048) == 15_535_104
    assert v3_head() == 590_336 + 5_397 and aux_head() == 2_365_205
    with torch.device("meta"):
        model, with_aux = create_model("deeplabv3_resnet50"), create_model("deeplabv3_resnet50", aux=True)
    assert n_params(model.backbone) == RESNET50_NO_FC
    assert n_params(model) == RESNET50_NO_FC + aspp_params(2048) + v3_head() == 39_638_869
    assert n_params(with_aux) == n_params(model) + aux_head() == 42_004_074  # torchvision's published count


def test_deeplabv3_resnet101_and_v3plus_resnet50_parameter_counts():
    with torch.device("meta"):
        r101 = create_model("deeplabv3_resnet101", aux=True)
        plus = create_model("deeplabv3plus_resnet50")
    assert n_params(r101) == RESNET101_NO_FC + aspp_params(2048) + v3_head() + aux_head() == 60_996_202
    reduce, fuse = conv(256, 48) + bn(48), conv(256 + 48, 256, 3) + bn(256)  # 1x1 256 -> 48, 3x3 304 -> 256
    decoder = reduce + fuse + v3_head()  # then 3x3 256 -> 256 and the classifier, as v3's head
    assert n_params(plus) == RESNET50_NO_FC + aspp_params(2048) + decoder == 40_352_181
    assert plus.output_stride == 16 and plus.aspp.rates == (6, 12, 18)


def test_tiny_variants_parameter_counts():
    model = create_model("deeplabv3_tiny", in_chans=3, num_classes=11)
    basic = lambda cin, c: conv(cin, c, 3) + conv(c, c, 3) + 2 * bn(c) + (conv(cin, c) + bn(c) if cin != c else 0)
    backbone = conv(3, 16, 7) + bn(16) + basic(16, 16) + basic(16, 32) + basic(32, 64) + basic(64, 128)
    assert n_params(model.backbone) == backbone == 309_456
    assert n_params(model) == backbone + aspp_params(128, 48) + v3_head(48, 11) == 521_099
    plus = create_model("deeplabv3plus_tiny", in_chans=3, num_classes=11)
    decoder = conv(16, 16) + bn(16) + conv(64, 48, 3) + bn(48) + conv(48, 48, 3) + bn(48) + conv(48, 11, bias=True)
    assert n_params(plus) == backbone + aspp_params(128, 48) + decoder == 549_131


# ----------------------------------------------------------------------------- dilated ResNet (§5.1.5)


def test_dilated_resnet50_has_the_resnet50_parameters_and_torchvision_dilations():
    with torch.device("meta"):
        resnet = create_model("resnet50")
        shapes = {k: v.shape for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
        for os in (8, 16, 32):
            backbone = dilated_resnet(output_stride=os)
            assert {k: v.shape for k, v in backbone.state_dict().items()} == shapes
            assert n_params(create_model("resnet50", output_stride=os)) == 25_557_032
        os8 = dilated_resnet(output_stride=8).stages  # torchvision's replace_stride_with_dilation=[False, True, True]
    conv2 = lambda s, b: os8[s][b].conv2[0]
    assert [conv2(s, 0).stride for s in range(4)] == [(1, 1), (2, 2), (1, 1), (1, 1)]
    assert [conv2(2, b).dilation[0] for b in range(6)] == [1, 2, 2, 2, 2, 2]  # first block r / 2 = 1, then r = 2
    assert [conv2(3, b).dilation[0] for b in range(3)] == [2, 4, 4]
    assert os8[2][0].shortcut[0].stride == (1, 1) and os8.stage_strides == [4, 8, 8, 8]


def test_output_stride_8_and_16_feature_sizes_224_to_28_and_14():
    x = torch.randn(1, 3, 224, 224)
    for os, size in [(8, 28), (16, 14), (32, 7)]:
        backbone = dilated_resnet("resnet18", layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8,
                                  output_stride=os).eval()
        with torch.no_grad():
            feats = backbone(x)
        assert [f.shape[-1] for f in feats] == [56, 28, 28 if os == 8 else 14, size]
        assert backbone.feature_info.reductions() == [224 // f.shape[-1] for f in feats]  # the contract follows
    with pytest.raises(ConfigError, match=r"output_stride must be one of \[4, 8, 16, 32\]"):
        dilated_resnet(output_stride=12)


def test_dilated_resnet_at_stride_32_is_the_plain_resnet_features():
    kw = dict(block="basic", layers=(1, 2, 1, 1), widths=(8, 16, 16, 32), stem_width=8)
    resnet, backbone = ResNet(**kw).eval(), dilated_resnet("resnet18", **kw, output_stride=32).eval()
    assert n_params(backbone) == n_params(resnet) - n_params(resnet.fc)
    backbone.load_state_dict({k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[-1], resnet.forward_features(x))
        resnet.set_output_stride(8)  # the classifier's own option, same weights
        backbone.stages.set_output_stride(8)
        torch.testing.assert_close(backbone(x)[-1], resnet.forward_features(x))
    assert resnet.output_stride == 8 and resnet.forward_features(x).shape[-1] == 8


def test_dilated_blocks_keep_parameters_and_match_conv2d_dilation():
    pairs = [(BasicBlock(8, 8, dilation=2), BasicBlock(8, 8)), (Bottleneck(16, 4, dilation=2), Bottleneck(16, 4)),
             (BasicBlock(8, 16, 2, preact=True, dilation=2), BasicBlock(8, 16, 2, preact=True))]
    for dilated, plain in pairs:
        assert [p.shape for p in dilated.parameters()] == [p.shape for p in plain.parameters()]
        assert dilated(torch.randn(1, 8 if isinstance(dilated, BasicBlock) else 16, 8, 8)).shape[-1] == \
            plain(torch.randn(1, 8 if isinstance(plain, BasicBlock) else 16, 8, 8)).shape[-1]
    block, x = Bottleneck(16, 4, dilation=3).eval(), torch.randn(1, 16, 9, 9)
    c = block.conv2[0]
    with torch.no_grad():
        ref = F.conv2d(block.conv1(x), c.weight, padding=3, dilation=3)
        torch.testing.assert_close(block.conv2[0](block.conv1(x)), ref)
        assert block(x).shape == x.shape
    with pytest.raises(ConfigError, match="dilation"):
        BasicBlock(8, 8, dilation=0)
    with pytest.raises(ConfigError, match="identity shortcut"):
        BasicBlock(8, 8).set_stride_dilation(2, 1)


# ----------------------------------------------------------------------------- DeepLab v3 / v3+


@pytest.mark.parametrize("name", ["deeplabv3_tiny", "deeplabv3plus_tiny"])
def test_output_is_num_classes_by_input_h_by_w_for_any_size(name):
    model = create_model(name, in_chans=3, num_classes=11).eval()
    assert model.default_input_shape == (3, 96, 128)
    with torch.no_grad():
        for h, w in [(96, 128), (65, 97), (33, 50)]:
            assert model(torch.randn(2, 3, h, w)).shape == (2, 11, h, w)
    with pytest.raises(ConfigError, match=r"\[N, 3, H, W\]"):
        model(torch.randn(2, 1, 32, 32))


def test_full_size_deeplabv3_forward_at_a_small_size_has_stride_8_features():
    torch.manual_seed(0)
    model = create_model("deeplabv3_resnet50", aux=True).eval()
    with torch.no_grad():
        maps = model.forward_maps(torch.randn(1, 3, 64, 64))
    assert maps["out"].shape == maps["aux"].shape == (1, 21, 64, 64)
    assert maps["stage4"].shape == (1, 2048, 8, 8) and maps["stage3"].shape == (1, 1024, 8, 8)
    assert maps["aspp"].shape == (1, 256, 8, 8) and model.aspp.rates == (12, 24, 36)


def test_curriculum_os16_to_os8_in_place_doubles_the_features_and_the_rates():
    torch.manual_seed(0)
    model = DeepLabV3(num_classes=5, block="basic", layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8,
                      aspp_chans=8, output_stride=16).eval()
    shapes = [p.shape for p in model.parameters()]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert model.forward_maps(x)["stage4"].shape[-2:] == (4, 6) and model.aspp.rates == (6, 12, 18)
        model.set_output_stride(8)
        assert model.forward_maps(x)["stage4"].shape[-2:] == (8, 12) and model.aspp.rates == (12, 24, 36)
        assert [p.shape for p in model.parameters()] == shapes
        # the same as a network built at OS 8 with these weights
        os8 = DeepLabV3(num_classes=5, block="basic", layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8,
                        aspp_chans=8, output_stride=8).eval()
        os8.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(x), os8(x))
        model.set_output_stride(16)
        assert model.output_stride == 16 and model.aspp.rates == (6, 12, 18)
    with pytest.raises(ConfigError, match="output_stride must be 8, 16 or 32"):
        DeepLabV3(output_stride=4)


def test_v3plus_decoder_fuses_the_stride_4_features():
    model = create_model("deeplabv3plus_tiny").eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        maps = model.forward_maps(x)
        assert maps["stage1"].shape[-2:] == (24, 32) and maps["low"].shape == (1, 16, 24, 32)
        assert maps["aspp"].shape[-2:] == (6, 8) and maps["aspp_up"].shape == (1, 48, 24, 32)  # x4
        assert maps["scores"].shape == (1, 11, 24, 32)  # then x4 to 96 x 128
        assert model.decoder[0][0].in_channels == 48 + 16
        before = model(x)
        model.reduce[0].weight.zero_()  # remove the low-level path: the output changes
        assert not torch.allclose(model(x), before)
    assert isinstance(model, DeepLabV3Plus) and model.head is None


@pytest.mark.parametrize("name", ["deeplabv3_tiny", "deeplabv3plus_tiny"])
def test_gradients_reach_the_first_layer(name):
    model = create_model(name, aux=True)
    maps = model.forward_maps(torch.randn(2, 3, 48, 64))
    target = torch.randint(0, 11, (2, 48, 64))
    (F.cross_entropy(maps["out"], target) + 0.4 * F.cross_entropy(maps["aux"], target)).backward()
    stem = model.backbone.stem[0][0].weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_tiny_deeplab_overfits_one_batch():
    torch.manual_seed(0)
    model = create_model("deeplabv3_tiny", num_classes=3)
    x = torch.randn(2, 3, 48, 64)
    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(64), indexing="ij")
    target = ((xx > 32).long() + (yy > 24).long()).expand(2, -1, -1)  # three regions
    losses = training_losses(model, x, target, 25, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0]


def test_aux_head_reads_the_third_stage():
    model = create_model("deeplabv3_tiny", aux=True)
    assert isinstance(model.aux_head[0], nn.Sequential) and model.aux_head[0][0].in_channels == 64
    assert n_params(model) - n_params(create_model("deeplabv3_tiny")) == aux_head(64, 11)
