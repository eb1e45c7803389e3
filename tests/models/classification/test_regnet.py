"""RegNet / AnyNet design space (Notes 002 §2.8): quantised widths, error EDF, sampler ranges, published counts."""

import math
import random

import numpy as np
import pytest
import torch

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.classification.regnet import (
    ANYNET_BOTTLENECK_RATIOS,
    ANYNET_GROUP_WIDTHS,
    ANYNET_WIDTHS,
    RegNet,
    RegNetBlock,
    adjust_widths_groups,
    error_edf,
    quantized_linear_widths,
    regnet_design,
    sample_anynet,
    widths_to_stages,
)

# torchvision regnet_* parameter counts, 1000 classes
TORCHVISION_COUNTS = {"regnet_x_400mf": 5_495_976, "regnet_y_400mf": 4_344_144, "regnet_x_800mf": 7_259_656,
                      "regnet_y_800mf": 6_432_512, "regnet_y_1_6gf": 11_202_430}


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _meta(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


def test_quantised_linear_rule_by_hand_for_regnetx_200mf():
    # u_j = 24 + 36.44 j; j=1: s = round(log(60.44/24)/log 2.49) = round(1.011) = 1, w = 24*2.49 = 59.76 -> 56
    u1 = 24 + 36.44
    s1 = round(math.log(u1 / 24) / math.log(2.49))
    assert s1 == 1 and round(24 * 2.49**s1 / 8) * 8 == 56
    widths = quantized_linear_widths(13, 24, 36.44, 2.49)
    assert widths[:2] == [24, 56]
    # spec [2-26]: RegNetX-200MF stage widths 24, 56, 152, 368 with depths 1, 1, 4, 7
    assert widths_to_stages(widths) == ([24, 56, 152, 368], [1, 1, 4, 7])


def test_regnetx_200mf_has_2_7m_parameters():
    # pycls / timm regnetx_002: 2.68M parameters
    assert _params(_meta("regnet_x_200mf")) == pytest.approx(2.68e6, abs=5e3)


@pytest.mark.parametrize("name", list(TORCHVISION_COUNTS))
def test_parameter_count_equals_torchvision(name):
    assert _params(_meta(name)) == TORCHVISION_COUNTS[name]


def test_regnety_1_6gf_stages_match_the_model_zoo():
    # pycls RegNetY-1.6GF: depths [2, 6, 17, 2], widths [48, 120, 336, 888], group width 24, SE 0.25
    design = regnet_design(27, 48, 20.71, 2.65, 24)
    assert design["depths"] == [2, 6, 17, 2] and design["widths"] == [48, 120, 336, 888]
    assert design["group_widths"] == [24] * 4


def test_group_width_is_capped_and_bottleneck_made_divisible():
    widths, groups = adjust_widths_groups([24, 100], [1, 1], [32, 16])
    assert groups == [24, 16]  # g capped at w/b = 24
    assert widths == [24, 96]  # 100 -> nearest multiple of 16 (96 >= 0.9 * 100)
    widths, groups = adjust_widths_groups([64], [2], [16])
    assert widths == [64] and groups == [16]  # bottleneck 32 is a multiple of 16


def test_error_edf_hand_example():
    # spec [2-25]: errors [0.1, 0.2, 0.2, 0.4]: F(0.2) = 0.25 (strict <), F(0.21) = 0.75
    errors = [0.1, 0.2, 0.2, 0.4]
    assert error_edf(errors, 0.2) == 0.25 and error_edf(errors, 0.21) == 0.75
    grid = np.linspace(-1, 2, 301)
    values = error_edf(errors, grid)
    assert np.all(np.diff(values) >= 0)
    assert error_edf(errors, -np.inf) == 0.0 and error_edf(errors, np.inf) == 1.0
    with pytest.raises(ConfigError, match="non-empty"):
        error_edf([], 0.5)


def test_anynet_sampler_respects_the_design_space_ranges():
    rng = random.Random(0)
    for _ in range(200):
        p = sample_anynet(rng)
        assert all(len(v) == 4 for v in p.values())  # 4 stages x 4 parameters = 16 dimensions
        assert all(1 <= d <= 16 for d in p["depths"])
        assert all(w in ANYNET_WIDTHS for w in p["widths"])
        assert all(b in ANYNET_BOTTLENECK_RATIOS for b in p["bottleneck_ratios"])
        assert all(g in ANYNET_GROUP_WIDTHS for g in p["group_widths"])
        assert all((w // b) % g == 0 for w, b, g in zip(p["widths"], p["bottleneck_ratios"], p["group_widths"]))
    with torch.device("meta"):
        model = RegNet(**sample_anynet(random.Random(1)))
    assert len(model.stages) == 4


def test_regnety_block_has_se_on_a_quarter_of_its_input_and_x_has_none():
    y = _meta("regnet_y_400mf")
    first = y.stages[1][0]  # 48 -> 104
    assert first.se.fc1.in_channels == 104 and first.se.fc1.out_channels == round(0.25 * 48)
    assert first.b[0].groups == 104 // 8
    assert all(b.se is None for s in _meta("regnet_x_400mf").stages for b in s)


def test_block_shortcut_is_identity_unless_shape_changes():
    block = RegNetBlock(32, 32, 1, 8).eval()
    assert block.shortcut is None
    block.c[1].weight.data.zero_()  # zero the branch: the block outputs relu(x)
    x = torch.randn(2, 32, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))
    assert RegNetBlock(32, 64, 2, 8).shortcut is not None
    with pytest.raises(ConfigError, match="multiple of the group width"):
        RegNetBlock(32, 36, 1, 8)


@pytest.mark.parametrize("name", [*TORCHVISION_COUNTS, "regnet_x_200mf", "regnet_tiny_fashion"])
def test_output_shape_and_every_parameter_gets_a_gradient(name):
    model = create_model(name)
    chans = model.default_input_shape[0]
    out = model(torch.randn(2, chans, 64, 64))
    assert out.shape == (2, 10 if "tiny" in name else 1000)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_default_input_shapes_and_tiny_variant_size():
    assert _meta("regnet_y_400mf").default_input_shape == (3, 224, 224)
    tiny = create_model("regnet_tiny_fashion")
    assert tiny.default_input_shape == (1, 32, 32) and _params(tiny) < 500_000
    assert tiny.eval()(torch.randn(3, 1, 32, 32)).shape == (3, 10)


def test_bad_designs_are_explained():
    with pytest.raises(ConfigError, match="wm > 1"):
        quantized_linear_widths(10, 24, 10.0, 1.0)
    with pytest.raises(ConfigError, match="multiple of 8"):
        quantized_linear_widths(10, 20, 10.0, 2.0)
    with pytest.raises(ConfigError, match="equally long"):
        RegNet(depths=[1, 2], widths=[8], group_widths=[8], bottleneck_ratios=[1])
    with pytest.raises(ConfigError, match=r"expects images \[N, 1, H, W\]"):
        create_model("regnet_tiny_fashion")(torch.randn(2, 3, 32, 32))
