"""EfficientNet B0-B7 and Lite0 (Notes 002 §2.6-2.7): compound scaling, published counts and FLOPs, shapes."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.classification.efficientnet import (
    ALPHA,
    BETA,
    EFFICIENTNET_PARAMS,
    GAMMA,
    EfficientNet,
    compound_scaling,
    scale_depth,
    scale_width,
)
from dlkit.nn.activations import ReLU6, SiLU

# torchvision efficientnet_b0..b7 (v1) parameter counts, 1000 classes
TORCHVISION_COUNTS = {"b0": 5_288_548, "b1": 7_794_184, "b2": 9_109_994, "b3": 12_233_232, "b4": 19_341_616,
                      "b5": 30_389_784, "b6": 43_040_704, "b7": 66_347_960}


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _meta(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


def _macs(model, resolution):
    """Multiply-adds of one forward pass at `resolution` (torch's FLOP counter counts 2 per multiply-add)."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, resolution, resolution, device="meta"))
    return counter.get_total_flops() / 2


def test_compound_scaling_constants_satisfy_the_constraint():
    # Notes 002 §2.6: alpha * beta^2 * gamma^2 ~ 2 with alpha, beta, gamma >= 1; EfficientNet's values give 1.92
    assert (ALPHA, BETA, GAMMA) == (1.2, 1.1, 1.15)
    assert ALPHA * BETA**2 * GAMMA**2 == pytest.approx(1.920, abs=1e-3)
    assert compound_scaling(0) == (1.0, 1.0, 1.0)  # phi = 0 is the baseline
    assert compound_scaling(2) == pytest.approx((1.44, 1.21, 1.3225))
    with pytest.raises(ConfigError, match=">= 1"):
        compound_scaling(1, alpha=0.9)


def test_published_variant_table():
    assert EFFICIENTNET_PARAMS == {
        "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
        "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
        "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5)}


@pytest.mark.parametrize("variant", list(TORCHVISION_COUNTS))
def test_parameter_count_equals_torchvision(variant):
    model = _meta(f"efficientnet_{variant}")
    assert _params(model) == TORCHVISION_COUNTS[variant]
    assert model.default_input_shape == (3, EFFICIENTNET_PARAMS[variant][2], EFFICIENTNET_PARAMS[variant][2])


def test_width_is_rounded_to_multiples_of_8_and_depth_up():
    assert scale_width(320, 1.1) == 352 and scale_width(40, 1.2) == 48 and scale_width(24, 1.4) == 32
    assert scale_depth(4, 3.1) == 13 and scale_depth(1, 1.1) == 2 and scale_depth(3, 1.0) == 3
    b7 = _meta("efficientnet_b7")
    # B7 has 55 MBConv blocks, stages of 4, 7, 7, 10, 10, 13, 4 (= ceil(n * 3.1)), 32..640 channels (c * 2.0)
    assert [len(s) for s in b7.stages] == [4, 7, 7, 10, 10, 13, 4]
    assert [row[3] for row in b7.stage_config] == [32, 48, 80, 160, 224, 384, 640]
    assert b7.stem[0].out_channels == 64 and b7.num_features == 2560


def test_b0_stage_shapes():
    model = _meta("efficientnet_b0").eval()
    h = model.stem(torch.empty(1, 3, 224, 224, device="meta"))
    shapes = [tuple(h.shape[1:])]
    for stage in model.stages:
        h = stage(h)
        shapes.append(tuple(h.shape[1:]))
    shapes.append(tuple(model.head(h).shape[1:]))
    # Tan & Le (2019) Table 1: stem 112^2x32, MBConv stages 16, 24, 40, 80, 112, 192, 320, head 7^2x1280
    assert shapes == [(32, 112, 112), (16, 112, 112), (24, 56, 56), (40, 28, 28), (80, 14, 14), (112, 14, 14),
                      (192, 7, 7), (320, 7, 7), (1280, 7, 7)]
    kernels = [stage[0].depthwise[0].kernel_size[0] for stage in model.stages]
    assert kernels == [3, 3, 5, 3, 5, 5, 3]


def test_b0_uses_silu_and_se_on_a_quarter_of_the_block_input():
    model = _meta("efficientnet_b0")
    block = model.stages[3][0]  # 40 -> 80, expanded 240
    assert block.se.fc1.out_channels == 10 and block.se.fc1.in_channels == 240
    assert isinstance(block.depthwise[2], SiLU) and isinstance(model.stem[2], SiLU)
    assert model.stem[1].eps == 1e-3


def test_stochastic_depth_probability_grows_linearly_with_block_index():
    model = _meta("efficientnet_b0")
    blocks = [b for s in model.stages for b in s]
    for i, b in enumerate(blocks):  # torchvision / the paper: p_i = 0.2 * i / 16 on the residual blocks
        assert (b.drop_path.p if b.drop_path is not None else None) == (0.2 * i / 16 if b.use_residual else None)


def test_b0_costs_0_39_billion_multiply_adds():
    # Tan & Le (2019) Table 2: EfficientNet-B0 0.39B FLOPs (multiply-adds) at 224x224
    with torch.device("meta"):
        assert _macs(EfficientNet(), 224) == pytest.approx(0.39e9, rel=0.02)


def test_single_dimension_scaling_flops_follow_d_w2_r2():
    # Notes 002 §2.6: FLOPs are linear in depth and quadratic in width and resolution
    with torch.device("meta"):
        base = _macs(EfficientNet(), 224)
        assert _macs(EfficientNet(), 448) / base == pytest.approx(4.0, rel=0.01)  # r x2: pooling/FC do not grow
        assert _macs(EfficientNet(depth_mult=2.0), 224) / base == pytest.approx(2.0, rel=0.05)  # stem/head fixed
        assert _macs(EfficientNet(width_mult=2.0), 224) / base == pytest.approx(4.0, rel=0.1)  # RGB input fixed


def test_compound_scaling_doubles_flops_per_unit_of_phi_up_to_rounding():
    # FLOPs(phi) ~ (alpha beta^2 gamma^2)^phi ~ 2^phi; ceil(n * d) adds blocks, so small phi overshoots
    ratios = []
    with torch.device("meta"):
        base = _macs(EfficientNet(), 224)
        for phi in (1, 2, 3):
            d, w, r = compound_scaling(phi)
            ratios.append(_macs(EfficientNet(width_mult=w, depth_mult=d), round(224 * r)) / base / 2**phi)
    assert all(0.9 < q < 1.35 for q in ratios)
    assert ratios[0] > ratios[1] > ratios[2]  # the rounding overshoot fades as phi grows


def test_lite0_has_no_se_relu6_fixed_stem_and_head():
    model = _meta("efficientnet_lite0")
    assert _params(model) == 4_652_008  # equals the tensors of the shipped ImageNet file (test_pretrained)
    assert all(b.se is None for s in model.stages for b in s)
    assert isinstance(model.stem[2], ReLU6) and model.stem[1].eps == 1e-3
    wide = _meta("efficientnet_lite0", width_mult=1.4)
    assert wide.stem[0].out_channels == 32 and wide.num_features == 1280  # not scaled with width


@pytest.mark.parametrize("name", [f"efficientnet_{v}" for v in TORCHVISION_COUNTS]
                         + ["efficientnet_lite0", "efficientnet_tiny_fashion"])
def test_output_shape_and_every_parameter_gets_a_gradient(name):
    model = create_model(name, drop_path=0.0)  # no dropped branches: every parameter must be reached
    chans = model.default_input_shape[0]
    out = model(torch.randn(2, chans, 64, 64))
    assert out.shape == (2, 10 if "tiny" in name else 1000)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_tiny_fashion_variant_is_small():
    model = create_model("efficientnet_tiny_fashion")
    assert _params(model) < 500_000
    assert model.default_input_shape == (1, 32, 32)
    assert model.eval()(torch.randn(3, 1, 32, 32)).shape == (3, 10)


def test_bad_configurations_are_explained():
    with pytest.raises(ConfigError, match="multipliers"):
        EfficientNet(width_mult=0)
    with pytest.raises(ConfigError, match=r"\(t, k, s, c, n\)"):
        EfficientNet(stages=((6, 3, 2, 24),))
    with pytest.raises(ConfigError, match=r"expects images \[N, 3, H, W\]"):
        create_model("efficientnet_lite0")(torch.randn(1, 1, 32, 32))
    assert math.isclose(ALPHA * BETA**2 * GAMMA**2, 1.92027, rel_tol=1e-5)
