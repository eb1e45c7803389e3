"""Injectable normalisation and activation layers (`norm_layer`, `act_layer`) in blocks and model families."""

import functools
import math

import pytest
import torch
from torch import nn

import dlkit
from dlkit.errors import ConfigError
from dlkit.nn.activations import GELU, LeakyReLU, ReLU, ReLU6, SiLU, get_act_layer
from dlkit.nn.aspp import ASPP
from dlkit.nn.conv_bn_act import ConvBNAct
from dlkit.nn.frozen_batchnorm import FrozenBatchNorm2d
from dlkit.nn.inverted_residual import InvertedResidual
from dlkit.nn.norm import NORM_LAYERS, get_norm_layer, group_norm_groups
from dlkit.nn.residual import BasicBlock, Bottleneck

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, FrozenBatchNorm2d)


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, NORM_TYPES)]


def _channels(norm: nn.Module) -> int:
    return norm.num_channels if isinstance(norm, nn.GroupNorm) else norm.num_features


# ----------------------------------------------------------------------------- resolvers


@pytest.mark.parametrize("spec, cls", [("batch", nn.BatchNorm2d), ("BatchNorm", nn.BatchNorm2d), ("bn", nn.BatchNorm2d),
                                       ("group", nn.GroupNorm), ("groupnorm", nn.GroupNorm),
                                       ("instance", nn.InstanceNorm2d), ("frozen_batch", FrozenBatchNorm2d),
                                       (nn.BatchNorm2d, nn.BatchNorm2d), (nn.GroupNorm, nn.GroupNorm),
                                       (nn.InstanceNorm2d, nn.InstanceNorm2d), (FrozenBatchNorm2d, FrozenBatchNorm2d)])
def test_get_norm_layer_builds_the_named_type_for_the_channels(spec, cls):
    norm = get_norm_layer(spec)(48)
    assert type(norm) is cls and _channels(norm) == 48


def test_batch_norm_gets_eps_and_momentum_instance_norm_is_affine_without_running_stats():
    bn = get_norm_layer("batch", eps=1e-3, momentum=0.01)(8)
    assert (bn.eps, bn.momentum) == (1e-3, 0.01)
    inorm = get_norm_layer("instance")(8)
    assert inorm.affine and inorm.weight.shape == (8,) and inorm.running_mean is None


@pytest.mark.parametrize("chans, groups", [(64, 32), (256, 32), (16, 16), (24, 8), (40, 8), (144, 16), (3, 1)])
def test_group_norm_default_groups_are_gcd_of_32_and_channels(chans, groups):
    gn = get_norm_layer("group")(chans)
    assert gn.num_groups == groups == math.gcd(32, chans) and chans % gn.num_groups == 0


def test_group_norm_explicit_groups_must_divide_channels():
    assert get_norm_layer("group", num_groups=4)(24).num_groups == 4
    with pytest.raises(ConfigError, match="divide"):
        get_norm_layer("group", num_groups=5)(24)
    with pytest.raises(ConfigError, match="divide"):
        group_norm_groups(24, 0)


def test_none_and_callables():
    assert get_norm_layer(None) is None and get_norm_layer("none") is None
    gn = get_norm_layer(functools.partial(nn.GroupNorm, 2))(6)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 2 and gn.num_channels == 6


def test_unknown_norm_name_is_a_one_line_config_error_listing_the_names():
    with pytest.raises(ConfigError) as e:
        get_norm_layer("batchh")
    message = str(e.value)
    assert "\n" not in message and all(name in message for name in NORM_LAYERS) and "batch" in message
    with pytest.raises(ConfigError, match="norm_layer"):
        get_norm_layer(3)


def test_get_act_layer_from_name_class_and_none():
    assert type(get_act_layer("relu")()) is ReLU
    assert type(get_act_layer("silu")()) is SiLU and type(get_act_layer("swish")()) is SiLU
    assert type(get_act_layer("gelu")()) is GELU
    leaky = get_act_layer("leaky_relu", negative_slope=0.2)()
    assert type(leaky) is LeakyReLU and torch.equal(leaky(torch.tensor([-1.0])), torch.tensor([-0.2]))
    assert type(get_act_layer(nn.SiLU)()) is nn.SiLU
    assert get_act_layer(nn.LeakyReLU, negative_slope=0.3)().negative_slope == 0.3
    assert get_act_layer(None) is None and get_act_layer("none") is None


def test_unknown_activation_is_a_one_line_config_error_listing_the_names():
    with pytest.raises(ConfigError) as e:
        get_act_layer("rleu")
    message = str(e.value)
    assert "\n" not in message and "relu" in message and "leaky_relu" in message and "silu" in message
    with pytest.raises(ConfigError, match="act_layer"):
        get_act_layer(nn.ReLU())  # an instance, not a class
    with pytest.raises(ConfigError, match="act_layer"):
        BasicBlock(8, 8, act_layer=None)


# ----------------------------------------------------------------------------- a block against torch


def test_conv_groupnorm_silu_block_equals_a_hand_built_torch_reference():
    torch.manual_seed(0)
    block = ConvBNAct(6, 16, 3, stride=2, norm_layer="group", act_layer="silu", bn_eps=1e-4)
    conv, gn = block[0], block[1]
    assert conv.bias is None and gn.num_groups == 16 and gn.eps == 1e-4
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    ref = nn.Sequential(nn.Conv2d(6, 16, 3, 2, 1, bias=False), nn.GroupNorm(16, 16, eps=1e-4), nn.SiLU())
    ref.load_state_dict(block.state_dict())
    x = torch.randn(2, 6, 11, 9)
    torch.testing.assert_close(block(x), ref(x), rtol=0, atol=1e-6)

    ref8 = nn.Sequential(nn.Conv2d(6, 16, 3, 1, 1, bias=False), nn.GroupNorm(8, 16), nn.ReLU())
    block8 = ConvBNAct(6, 16, 3, norm_layer=functools.partial(nn.GroupNorm, 8), act_layer=nn.ReLU)
    ref8.load_state_dict(block8.state_dict())
    torch.testing.assert_close(block8(x), ref8(x), rtol=0, atol=1e-6)


def test_conv_without_norm_keeps_its_bias():
    block = ConvBNAct(3, 4, norm_layer=None, act_layer=None)
    assert len(block) == 1 and block[0].bias is not None


@pytest.mark.parametrize("make", [lambda **kw: BasicBlock(8, 16, 2, se_reduction=4, **kw),
                                  lambda **kw: BasicBlock(8, 16, 2, preact=True, **kw),
                                  lambda **kw: Bottleneck(16, 8, 2, groups=2, **kw),
                                  lambda **kw: InvertedResidual(16, 16, 1, 4, se_ratio=0.25, **kw),
                                  lambda **kw: ASPP(16, 8, rates=(2, 4), **kw)])
def test_blocks_take_group_norm_and_a_class_activation(make):
    block = make(norm_layer="group", act_layer=nn.SiLU)
    norms = _norms(block)
    assert norms and all(type(n) is nn.GroupNorm for n in norms)
    assert not any(isinstance(m, (ReLU, ReLU6, nn.ReLU, nn.ReLU6)) for m in block.modules())
    assert any(isinstance(m, nn.SiLU) for m in block.modules())
    y = block(torch.randn(2, 16 if not isinstance(block, BasicBlock) else 8, 8, 8))
    y.square().mean().backward()


def test_aspp_image_pooling_refuses_instance_norm():
    with pytest.raises(ConfigError, match="instance"):
        ASPP(16, 8, rates=(2,), norm_layer="instance")
    assert len(_norms(ASPP(16, 8, rates=(2,), norm_layer="instance", image_pooling=False))) == 3


# ----------------------------------------------------------------------------- model families

FAMILIES = ["resnet_cifar20", "wrn_16_2", "se_resnet_cifar20", "resnext_tiny_fashion", "mobilenet_v2_tiny_fashion",
            "efficientnet_tiny_fashion", "regnet_tiny_fashion", "vgg_tiny_fashion", "googlenet_tiny_fashion",
            "unet_tiny", "deeplabv3plus_tiny", "deeplabv3_tiny", "fcn8s_tiny", "inception_resnet_tiny"]


def _input(model: nn.Module) -> torch.Tensor:
    return torch.randn(2, *model.default_input_shape)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("norm_layer, cls", [("group", nn.GroupNorm), (FrozenBatchNorm2d, FrozenBatchNorm2d),
                                             (nn.InstanceNorm2d, nn.InstanceNorm2d)])
def test_model_built_with_another_norm_has_only_that_norm_at_the_same_places(name, norm_layer, cls):
    if name.startswith("deeplab") and cls is nn.InstanceNorm2d:
        pytest.skip("ASPP's image pooling refuses instance norm (tested above)")
    torch.manual_seed(0)
    default = dlkit.create_model(name)
    model = dlkit.create_model(name, norm_layer=norm_layer)
    norms = _norms(model)
    assert norms and all(type(n) is cls for n in norms)
    default_norms = _norms(default)
    if default_norms:  # the families with BN: one new norm per BN, same channels
        assert [_channels(n) for n in norms] == [_channels(n) for n in default_norms]
    for m in model.modules():
        if isinstance(m, ConvBNAct) and len(m) > 1:
            assert _channels(m[1]) == m[0].out_channels
    model.train()
    out = model(_input(model))
    out = out if isinstance(out, torch.Tensor) else out[0]
    out.float().square().mean().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable if p.dim() > 1)


@pytest.mark.parametrize("name", ["resnet_cifar20", "mobilenet_v2_tiny_fashion", "efficientnet_tiny_fashion",
                                  "regnet_tiny_fashion", "vgg_tiny_fashion", "googlenet_tiny_fashion", "unet_tiny",
                                  "inception_resnet_tiny", "nin_fashion", "alexnet"])
@pytest.mark.parametrize("act_layer, cls", [("leaky_relu", LeakyReLU), (nn.GELU, nn.GELU)])
def test_model_act_layer_as_name_and_class(name, act_layer, cls):
    model = dlkit.create_model(name, act_layer=act_layer).eval()
    acts = [m for m in model.modules() if isinstance(m, cls)]
    assert acts
    relus = [m for m in model.modules() if isinstance(m, (ReLU, ReLU6, nn.ReLU, nn.ReLU6, SiLU))]
    if name == "googlenet_tiny_fashion":  # its auxiliary classifiers' dense layers keep ReLU
        relus = [m for n, m in model.named_modules() if isinstance(m, (ReLU, nn.ReLU)) and not n.startswith("aux")]
    elif name == "vgg_tiny_fashion":  # VGG's classifier keeps ReLU
        relus = [m for n, m in model.named_modules() if isinstance(m, nn.ReLU) and n.startswith("features")]
    assert not relus
    with torch.no_grad():
        assert torch.isfinite(model(_input(model))).all()


def test_default_resnet_is_unchanged_by_naming_the_defaults():
    torch.manual_seed(0)
    a = dlkit.create_model("resnet_cifar20")
    torch.manual_seed(0)
    b = dlkit.create_model("resnet_cifar20", norm_layer="batch", act_layer="relu")
    assert repr(a) == repr(b)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_zero_init_residual_zeroes_the_injected_norms_scale():
    model = dlkit.create_model("resnet_cifar20", norm_layer="group", zero_init_residual=True)
    last = [blk.conv2[-1] for stage in model.stages for blk in stage]
    assert all(type(n) is nn.GroupNorm and torch.count_nonzero(n.weight) == 0 for n in last)


def test_mobilenet_v1_takes_norm_and_act_layers():
    from dlkit.models.classification.mobilenet import MobileNetV1

    model = MobileNetV1(num_classes=5, alpha=0.25, norm_layer="group", act_layer="silu", bn_eps=1e-3)
    norms = _norms(model)
    assert len(norms) == 27 and all(type(n) is nn.GroupNorm and n.eps == 1e-3 for n in norms)  # stem + 13 x 2
    assert not any(isinstance(m, (ReLU6, nn.BatchNorm2d)) for m in model.modules())
    model(torch.randn(2, 3, 64, 64)).sum().backward()
