"""Inverted residual (MBConv) block: structure of Notes 002 §2.5, a functional reference, stochastic depth."""

import pytest
import torch
import torch.nn.functional as F

from dlkit.errors import ConfigError
from dlkit.nn.inverted_residual import InvertedResidual, StochasticDepth, make_divisible, stochastic_depth


def _randomize_bn(block: torch.nn.Module) -> None:
    """Give every BN non-trivial statistics and affine parameters (so eval mode is a real test)."""
    g = torch.Generator().manual_seed(1)
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_expansion_24_to_144_and_projection_back_to_24():
    # spec [2-18]: C_in=24, t=6, C_out=24 expands 24 -> 144 and projects 144 -> 24 (Notes 002 §2.5 steps 1-3)
    block = InvertedResidual(24, 24, stride=1, expand_ratio=6)
    assert block.expand[0].weight.shape == (144, 24, 1, 1)
    assert block.depthwise[0].weight.shape == (144, 1, 3, 3) and block.depthwise[0].groups == 144
    assert block.project[0].weight.shape == (24, 144, 1, 1)
    assert block.use_residual


def test_parameter_count_equals_hand_formula():
    # expand 24*144 + BN 2*144, depth-wise 144*3*3 + BN 2*144, project 144*24 + BN 2*24 (convs have no bias)
    expected = 24 * 144 + 2 * 144 + 144 * 9 + 2 * 144 + 144 * 24 + 2 * 24
    assert expected == 8_832
    assert sum(p.numel() for p in InvertedResidual(24, 24, 1, 6).parameters()) == expected


def test_expansion_is_omitted_when_t_is_1():
    block = InvertedResidual(32, 16, stride=1, expand_ratio=1)
    assert block.expand is None and block.depthwise[0].weight.shape == (32, 1, 3, 3)


@pytest.mark.parametrize("cin,cout,stride,residual", [(24, 24, 1, True), (24, 24, 2, False), (24, 32, 1, False),
                                                      (16, 24, 2, False)])
def test_skip_exists_only_for_stride_1_and_equal_channels(cin, cout, stride, residual):
    block = InvertedResidual(cin, cout, stride, 6).eval()
    # zero the projection's BN: the branch outputs 0, so the block outputs x (skip) or 0 (no skip)
    block.project[1].weight.data.zero_()
    block.project[1].bias.data.zero_()
    x = torch.randn(2, cin, 8, 8)
    y = block(x)
    assert y.shape == (2, cout, 8 // stride, 8 // stride)
    assert block.use_residual is residual
    assert torch.equal(y, x) if residual else torch.equal(y, torch.zeros_like(y))


def test_projection_is_linear_no_activation_after_it():
    block = InvertedResidual(16, 24, 1, 6).eval()
    _randomize_bn(block)
    assert len(block.project) == 2  # conv + BN, no activation module
    y = block(torch.randn(4, 16, 8, 8))
    assert (y < 0).any()  # a ReLU/ReLU6 after the projection could never output negatives


@pytest.mark.parametrize("activation,se_ratio,kernel,stride", [("relu6", 0.0, 3, 1), ("silu", 0.25, 5, 1),
                                                               ("silu", 0.25, 3, 2)])
def test_block_equals_functional_reference(activation, se_ratio, kernel, stride):
    cin, cout, t = 16, 16 if stride == 1 else 24, 6
    block = InvertedResidual(cin, cout, stride, t, kernel, se_ratio=se_ratio, act_layer=activation).eval()
    _randomize_bn(block)
    act = {"relu6": F.relu6, "silu": F.silu}[activation]
    x = torch.randn(2, cin, 10, 10)

    def bn(h, m):
        return F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    h = act(bn(F.conv2d(x, block.expand[0].weight), block.expand[1]))
    h = act(bn(F.conv2d(h, block.depthwise[0].weight, stride=stride, padding=kernel // 2, groups=cin * t),
               block.depthwise[1]))
    if se_ratio:
        s = h.mean((2, 3), keepdim=True)
        s = torch.sigmoid(F.conv2d(act(F.conv2d(s, block.se.fc1.weight, block.se.fc1.bias)),
                                   block.se.fc2.weight, block.se.fc2.bias))
        h = h * s
    h = bn(F.conv2d(h, block.project[0].weight), block.project[1])
    expected = h + x if block.use_residual else h
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_squeeze_excitation_width_is_a_quarter_of_the_block_input():
    # EfficientNet: SE hidden units = 0.25 * C_in (not of the expanded width): 40 in, 240 expanded -> 10
    block = InvertedResidual(40, 80, 2, 6, 3, se_ratio=0.25, act_layer="silu")
    assert block.se.fc1.weight.shape == (10, 240, 1, 1)
    assert block.se.fc2.weight.shape == (240, 10, 1, 1)


def test_make_divisible_matches_published_channel_counts():
    assert make_divisible(32 * 0.35) == 16  # MobileNetV2-0.35 stem has 16 filters (Keras)
    assert make_divisible(1280 * 1.4) == 1792  # MobileNetV2-1.4 last conv has 1792 filters (Keras)
    assert make_divisible(320 * 1.1) == 352  # EfficientNet-B2 last stage has 352 channels
    assert make_divisible(37) == 40 and make_divisible(3) == 8
    assert make_divisible(19, 8) == 24  # nearest is 16, but 16 < 0.9 * 19: rounded up


def test_stochastic_depth_is_identity_in_eval_and_for_p0():
    x = torch.randn(8, 3, 4, 4)
    assert torch.equal(StochasticDepth(0.5).eval()(x), x)
    assert torch.equal(stochastic_depth(x, 0.0, training=True), x)


def test_stochastic_depth_drops_whole_samples_with_probability_p():
    p, n = 0.3, 20_000
    x = torch.ones(n, 2, 2, 2)
    y = stochastic_depth(x, p, training=True, generator=torch.Generator().manual_seed(0))
    per_sample = y.flatten(1)
    # every sample is either all zero or all 1/(1-p): the mask is per sample ("row" mode)
    assert torch.all((per_sample == 0).all(1) | torch.isclose(per_sample, torch.tensor(1 / (1 - p))).all(1))
    dropped = (per_sample == 0).all(1).float().mean().item()
    assert abs(dropped - p) < 4 * (p * (1 - p) / n) ** 0.5  # binomial 4-sigma band
    assert abs(y.mean().item() - 1.0) < 0.03  # expectation preserved


def test_drop_path_is_only_attached_to_residual_blocks():
    assert InvertedResidual(16, 16, 1, 6, drop_path=0.2).drop_path.p == 0.2
    assert InvertedResidual(16, 24, 1, 6, drop_path=0.2).drop_path is None


def test_invalid_block_configurations_are_explained():
    with pytest.raises(ConfigError, match="stride"):
        InvertedResidual(16, 16, 3)
    with pytest.raises(ConfigError, match="expand_ratio"):
        InvertedResidual(16, 16, 1, 0.5)
    with pytest.raises(ConfigError, match="odd"):
        InvertedResidual(16, 16, 1, 6, kernel_size=4)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        StochasticDepth(1.5)
