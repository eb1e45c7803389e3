"""ResNet family: published parameter counts, shapes, gradients, init and the CIFAR/Wide/SE/ResNeXt variants."""

import math

import pytest
import torch
from torch import nn

import dlkit
from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.classification.resnet import ResNet, cifar_resnet, wide_resnet
from dlkit.nn.residual import BasicBlock, PadShortcut


def count(name: str, **kw) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(name, **kw).parameters())


# torchvision 0.2x model builders' documented "num_params" (1000 classes), matching spec rows 2-07, 2-13, 2-22
TORCHVISION = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "wide_resnet50_2": 68_883_240,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
}
IMAGENET = [*TORCHVISION, "se_resnet50"]
CIFAR = ["resnet_cifar20", "resnet_cifar32", "resnet_cifar44", "resnet_cifar56", "resnet_cifar110",
         "se_resnet_cifar20", "wrn_28_10", "wrn_16_4", "wrn_16_2", "resnext_tiny_fashion"]


@pytest.mark.parametrize("name", TORCHVISION)
def test_imagenet_parameter_counts_equal_torchvision(name):
    assert count(name) == TORCHVISION[name]


def test_se_resnet50_count_is_resnet50_plus_one_se_unit_per_bottleneck():
    # SE on the expanded width C = 4 * planes, r = 16, fc with bias: 2 C (C/16) + C/16 + C per block.
    # 3 x 8,464 (C=256) + 4 x 33,312 (512) + 6 x 132,160 (1024) + 3 x 526,464 (2048) = 2,530,992;
    # 25,557,032 + 2,530,992 = 28,088,024, the SE-ResNet-50 count of the common implementation (spec 2-16)
    se = sum(n * (2 * c * (c // 16) + c // 16 + c) for n, c in ((3, 256), (4, 512), (6, 1024), (3, 2048)))
    assert se == 2_530_992
    assert count("se_resnet50") == TORCHVISION["resnet50"] + se == 28_088_024


def cifar_option_a_count(n: int, in_chans: int = 3, classes: int = 10) -> int:
    """Hand count: stem 3x3 conv + BN, 3n two-conv blocks (widths 16, 32, 64), no shortcut weights, fc."""
    conv_bn = lambda cin, cout: 9 * cin * cout + 2 * cout  # noqa: E731
    total = conv_bn(in_chans, 16) + 64 * classes + classes
    for w_in, w in ((16, 16), (16, 32), (32, 64)):
        total += conv_bn(w_in, w) + conv_bn(w, w) + (n - 1) * 2 * conv_bn(w, w)
    return total


@pytest.mark.parametrize("depth,published", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_cifar_resnet_counts_match_hand_count_and_he_et_al_table_6(depth, published):
    # He et al. 2016 §4.2 / Table 6 (option A): 0.27M, 0.46M, 0.66M, 0.85M, 1.7M
    n = count(f"resnet_cifar{depth}")
    assert n == cifar_option_a_count((depth - 2) // 6)
    assert round(n / 1e6, 2 if depth < 110 else 1) == published


def test_cifar_resnet20_exact_counts_for_both_shortcut_options():
    # option A (the paper's CIFAR choice): 269,722; option B adds 1x1 projections + BN: 16*32 + 64 + 32*64 + 128 = 2,752
    assert count("resnet_cifar20") == 269_722
    assert count("resnet_cifar20", shortcut="B") == 269_722 + 2_752 == 272_474
    assert count("resnet_cifar20", in_chans=1) == 269_722 - 9 * 2 * 16  # Fashion-MNIST: grey stem


def wrn_count(depth: int, k: int, classes: int = 10) -> int:
    """Hand count of WRN-d-k: stem conv, preact blocks (BN, conv, BN, conv, 1x1 projection where widths change)."""
    n, total, cin = (depth - 4) // 6, 9 * 3 * 16, 16
    for w in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += 2 * cin + 9 * cin * w + 2 * w + 9 * w * w + (cin * w if cin != w else 0)
            cin = w
    return total + 2 * cin + cin * classes + classes


def test_wrn_28_10_has_the_standard_36_5m_parameters():
    # Zagoruyko & Komodakis 2016 Table: WRN-28-10 36.5M, WRN-16-4 2.7M (10 classes)
    assert count("wrn_28_10") == wrn_count(28, 10) == 36_479_194
    assert count("wrn_16_4") == wrn_count(16, 4) == 2_748_890
    assert count("wrn_16_2") == wrn_count(16, 2)


def test_small_fashion_variants_stay_small():
    assert count("resnext_tiny_fashion") == 247_610 < 500_000
    # se_resnet_cifar20: resnet_cifar20 + SE with max(1, C // 16) hidden units: 3 x 49 + 3 x 162 + 3 x 580 = 2,373
    assert count("se_resnet_cifar20") == 269_722 + 2_373


@pytest.mark.parametrize("name", IMAGENET + CIFAR)
def test_every_parameter_gets_a_gradient_and_shapes_are_right(name):
    imagenet = name in IMAGENET
    # ImageNet models pool adaptively, so one 64x64 image (2x2 maps in the last stage) is enough; CIFAR ones: grey 32x32
    chans, size, batch = (3, 64, 1) if imagenet else (1, 32, 2)
    model = create_model(name, in_chans=chans, num_classes=7)
    assert model.default_input_shape == ((chans, 224, 224) if imagenet else (chans, 32, 32))
    out = model(torch.randn(batch, chans, size, size))
    assert out.shape == (batch, 7)
    out.square().sum().backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_resnet18_feature_maps_are_56_28_14_7_for_a_224_input():
    with torch.device("meta"):
        model = create_model("resnet18")
        sizes = []
        for stage in model.stages:
            stage.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
        assert model(torch.empty(1, 3, 224, 224)).shape == (1, 1000)
    assert sizes == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]


def test_resnext50_uses_32_groups_of_width_4():
    with torch.device("meta"):
        block = create_model("resnext50_32x4d").stages[0][0]
    assert block.conv2[0].groups == 32 and tuple(block.conv2[0].weight.shape) == (128, 4, 3, 3)


def test_convolutions_get_kaiming_normal_fan_out_init():
    # He et al. 2015: std = sqrt(2 / fan_out), fan_out = 512 * 3 * 3 for the last stage's 3x3 (2.4M weights)
    model = create_model("resnet18")
    w = model.stages[3][1].conv2[0].weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.01)
    assert abs(w.mean().item()) < 5e-3 * w.std().item()  # 5 standard errors of the mean (n = 2.4M)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)


def test_zero_init_residual_makes_every_block_start_as_the_identity():
    # with every last BN gamma = 0, each option-A block is relu(x[::s, ::s] padded with zeros) = that (x >= 0):
    # the stages map the stem output z to z[:, :, ::4, ::4] with 48 zero channels appended
    model = create_model("resnet_cifar20", zero_init_residual=True)
    assert all(torch.all(b.conv2[1].weight == 0) for b in model.modules() if isinstance(b, BasicBlock))
    z = model.stem(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(model.stages(z), PadShortcut(16, 64, 4)(z))
    assert not torch.allclose(create_model("resnet_cifar20").stages(z), PadShortcut(16, 64, 4)(z))


def test_wide_resnet_dropout_is_active_only_in_training():
    model = create_model("wrn_16_2", drop_rate=0.3, in_chans=1)
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 6  # one per block, 2 blocks x 3 stages
    x = torch.randn(2, 1, 32, 32)
    assert not torch.allclose(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_resnet_cifar20_overfits_a_tiny_batch():
    # learning test: 10 random grey images (16x16 to keep it fast) with distinct labels are memorised by Adam
    model = create_model("resnet_cifar20", in_chans=1)
    x, y = torch.randn(10, 1, 16, 16), torch.arange(10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    assert (model.eval()(x).argmax(1) == y).float().mean() >= 0.9


def test_all_variants_are_registered():
    names = set(dlkit.list_models())
    assert set(IMAGENET + CIFAR) <= names


def test_bad_configurations_and_inputs_are_explained():
    with pytest.raises(ConfigError, match="6n \\+ 2"):
        cifar_resnet(21)
    with pytest.raises(ConfigError, match="6n \\+ 4"):
        wide_resnet(27, 10)
    with pytest.raises(ConfigError, match="block must be one of"):
        ResNet(block="dense")
    with pytest.raises(ConfigError, match="preact"):
        ResNet(block="bottleneck", preact=True)
    with pytest.raises(ConfigError, match=r"expects images \[N, 1, H, W\]"):
        create_model("resnet_cifar20", in_chans=1)(torch.randn(2, 3, 32, 32))
