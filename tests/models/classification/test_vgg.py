"""VGG (Notes: 003 §3.3.3): the eight torchvision parameter counts from one config table, the 3x3-stacking claim,
shapes, gradients and the CPU-sized Fashion-MNIST variant."""

import pytest
import torch
from model_checks import assert_every_parameter_gets_a_gradient, digits_batch, n_params, training_losses
from torch import nn

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.classification.vgg import VGG_CONFIGS
from dlkit.report.summary import summarize


def vgg_formula(cfg: str, bn: bool, classes: int = 1000) -> int:
    """Cheat sheet: conv F(9 d_in + 1) (+2F for BN's gamma, beta), dense d_out(d_in + 1); head 512*7*7-4096-4096-K."""
    total, cin = 0, 3
    for c in VGG_CONFIGS[cfg]:
        if c != "M":
            total += c * (9 * cin + 1) + (2 * c if bn else 0)
            cin = c
    return total + 4096 * (512 * 49 + 1) + 4096 * (4096 + 1) + classes * (4096 + 1)


# torchvision's published counts
PUBLISHED = {
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_vgg_has_torchvision_parameter_count(name):
    with torch.device("meta"):
        model = create_model(name)
    cfg = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}[name.removesuffix("_bn")]
    assert n_params(model) == PUBLISHED[name] == vgg_formula(cfg, name.endswith("_bn"))


def test_vgg16_splits_into_conv_14714688_and_fc_123642856():
    with torch.device("meta"):
        model = create_model("vgg16")
    assert n_params(model.features) == 14_714_688 and n_params(model.classifier) == 123_642_856
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 13
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 3


@pytest.mark.parametrize("depth", [2, 3])
def test_stacked_3x3_convs_see_a_larger_field_with_fewer_weights(depth):
    # two 3x3 convs: receptive field 5 with 18 C^2 weights (< 25 C^2); three: 7 with 27 C^2 (< 49 C^2)
    c = 4
    stack = nn.Sequential(*[nn.Conv2d(c, c, 3, padding=1, bias=False) for _ in range(depth)])
    x = torch.randn(1, c, 15, 15, requires_grad=True)
    stack(x)[0, :, 7, 7].sum().backward()
    rows, cols = x.grad.abs().sum(dim=(0, 1)).nonzero(as_tuple=True)
    field = 2 * depth + 1
    assert rows.max() - rows.min() + 1 == field and cols.max() - cols.min() + 1 == field
    assert n_params(stack) == 9 * depth * c * c < field * field * c * c


def test_vgg16_maps_224_to_1000_logits_and_every_parameter_gets_a_gradient():
    model = create_model("vgg16")
    assert model.default_input_shape == (3, 224, 224)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    # the adaptive 7x7 pool lets the real network run on a 32x32 input (the smallest after five halvings)
    assert_every_parameter_gets_a_gradient(model, torch.randn(2, 3, 32, 32))


def test_every_parameter_of_a_batch_norm_vgg_gets_a_gradient():
    model = create_model("vgg11_bn", hidden=64, num_classes=10)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 8
    assert_every_parameter_gets_a_gradient(model, torch.randn(2, 3, 32, 32))


def test_vgg_tiny_fashion_is_small_cheap_and_trains():
    model = create_model("vgg_tiny_fashion")
    assert model.default_input_shape == (1, 28, 28)
    # conv 160 + 4,640 + 18,496 + 36,928, BN 2*(16+32+64+64) = 352, FC 147,712 + 65,792 + 2,570
    assert n_params(model) == 276_650
    assert 2 * summarize(model, (32, 1, 28, 28)).total_macs < 0.5e9  # < 0.5 GFLOPs per 32 images
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert_every_parameter_gets_a_gradient(model, torch.randn(4, 1, 28, 28))


def test_vgg_explains_bad_config_and_input():
    with pytest.raises(ConfigError, match="cfg must be one of"):
        create_model("vgg16", cfg="Z")
    with pytest.raises(ConfigError, match=r"H, W >= 8"):
        create_model("vgg_tiny_fashion")(torch.randn(1, 1, 4, 4))


def test_vgg_tiny_fashion_loss_falls_on_a_small_batch():
    x, y = digits_batch(32, 28, 1, 10)
    losses = training_losses(create_model("vgg_tiny_fashion"), x, y, steps=20)
    assert losses[-1] < 0.5 * losses[0], losses
