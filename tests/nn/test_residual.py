"""Residual connection, BasicBlock and Bottleneck against the notes' formulas written with torch.nn.functional."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.nn.activations import disable_inplace
from dlkit.nn.residual import BasicBlock, Bottleneck, PadShortcut, Residual


def randomize_bn(module: nn.Module) -> None:
    """Random BN affine parameters and running statistics, so eval-mode BN is a non-trivial affine map."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_()
                m.bias.normal_()
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)


def bn(x, m):
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, training=False, eps=m.eps)


def se_ref(u, se):
    """Squeeze-and-excitation from its formula: u * sigmoid(W2 relu(W1 mean_hw(u) + b1) + b2)."""
    z = u.mean((2, 3))
    w1, w2 = se.fc1.weight.flatten(1), se.fc2.weight.flatten(1)
    s = torch.sigmoid(F.linear(torch.relu(F.linear(z, w1, se.fc1.bias)), w2, se.fc2.bias))
    return u * s[:, :, None, None]


# ----------------------------------------------------------------------------- Residual (000 §3.5)


def test_residual_with_zero_branch_is_the_identity():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(Residual(conv)(x), x)


def test_residual_concat_stacks_branch_and_input_channels():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 5, 5)
    y = Residual(conv, merge="concat")(x)
    assert y.shape == (2, 6 + 4, 5, 5)
    assert torch.equal(y, torch.cat([conv(x), x], 1))


def test_residual_stack_keeps_the_input_gradient_that_a_plain_stack_loses():
    # 50 tanh layers with torch's default Linear init: each plain layer shrinks the gradient (~1/sqrt 3 per layer);
    # with skips dL/dx = prod (I + J_l) stays O(1) (000 §3.5: the sum propagates the gradient to lower layers)
    layers = [nn.Sequential(nn.Linear(32, 32), nn.Tanh()) for _ in range(50)]
    x = torch.randn(8, 32, requires_grad=True)
    nn.Sequential(*layers)(x).sum().backward()
    plain = x.grad.norm().item()
    x.grad = None
    nn.Sequential(*[Residual(m) for m in layers])(x).sum().backward()
    residual = x.grad.norm().item()
    assert 1.0 < residual < 1e4
    assert plain < 1e-6 * residual


def test_residual_add_rejects_a_shape_change():
    with pytest.raises(ConfigError, match="merge='concat'"):
        Residual(nn.Conv2d(4, 8, 1))(torch.randn(1, 4, 3, 3))
    with pytest.raises(ConfigError):
        Residual(nn.Identity(), merge="mul")


# ----------------------------------------------------------------------------- BasicBlock (002 §2.2.1)


def test_basic_block_with_zero_last_gamma_is_the_identity_on_nonnegative_input():
    # 002 §2.2: starting F near 0 makes the block the identity; with gamma = beta = 0, relu(0 + x) = x for x >= 0
    block = BasicBlock(8, 8)
    block.zero_init_last()
    x = torch.rand(2, 8, 6, 6)
    assert torch.equal(block(x), x)
    assert block(x).shape == x.shape


def test_identity_shortcut_adds_no_parameters():
    # 003 §3.3.3: the block has exactly the parameters of its two conv-BN layers
    block = BasicBlock(16, 16)
    assert isinstance(block.shortcut, nn.Identity)
    assert sum(p.numel() for p in block.parameters()) == 2 * (9 * 16 * 16 + 2 * 16)


@pytest.mark.parametrize("se", [None, 4])
def test_basic_block_matches_its_formula(se):
    # y = relu(BN2(conv2(relu(BN1(conv1_s2(x))))) [SE] + BN_p(W_p x)), projection (option B) for 8 -> 16, stride 2
    block = BasicBlock(8, 16, stride=2, se_reduction=se).double().eval()
    randomize_bn(block)
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    c1, c2, p = block.conv1, block.conv2, block.shortcut
    u = bn(F.conv2d(torch.relu(bn(F.conv2d(x, c1[0].weight, stride=2, padding=1), c1[1])), c2[0].weight, padding=1),
           c2[1])
    if se:
        u = se_ref(u, block.se)
    ref = torch.relu(u + bn(F.conv2d(x, p[0].weight, stride=2), p[1]))
    torch.testing.assert_close(block(x), ref, rtol=0, atol=1e-12)
    assert ref.shape == (2, 16, 5, 5)


def test_se_is_applied_to_the_residual_branch_before_the_addition():
    # 002 §2.4 Fig. 2.5: x~ = s * F(x) enters the sum, the identity path is not rescaled
    block = disable_inplace(BasicBlock(8, 8, se_reduction=2).eval())  # the hook keeps the SE output unchanged
    seen = {}
    block.se.register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o))
    x = torch.randn(2, 8, 5, 5)
    y = block(x)
    torch.testing.assert_close(seen["out"], se_ref(seen["inp"], block.se))
    torch.testing.assert_close(y, torch.relu(seen["out"] + x))


def test_preact_block_matches_the_wide_resnet_formula():
    # a = relu(BN1(x)); y = conv2(dropout(relu(BN2(conv1(a))))) + W_p a (projection reads a, no BN); identity adds x
    for cin, cout, stride in ((8, 16, 2), (8, 8, 1)):
        block = BasicBlock(cin, cout, stride, preact=True).double().eval()
        randomize_bn(block)
        x = torch.randn(2, cin, 8, 8, dtype=torch.float64)
        a = torch.relu(bn(x, block.bn1))
        h = torch.relu(bn(F.conv2d(a, block.conv1[0].weight, stride=stride, padding=1), block.conv1[1]))
        skip = F.conv2d(a, block.shortcut[0].weight, stride=stride) if cin != cout else x
        torch.testing.assert_close(block(x), F.conv2d(h, block.conv2.weight, padding=1) + skip, rtol=0, atol=1e-12)


def test_option_a_shortcut_subsamples_and_appends_zero_channels():
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 32, stride=2)(x)
    assert torch.equal(y, torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 4, 4)], 1))
    block = BasicBlock(16, 32, 2, shortcut="A")
    assert sum(p.numel() for p in block.parameters()) == 9 * 16 * 32 + 9 * 32 * 32 + 4 * 32  # no shortcut weights


def test_bad_block_arguments_are_explained():
    with pytest.raises(ConfigError, match="bottleneck"):
        BasicBlock(8, 8, groups=2)
    with pytest.raises(ConfigError, match="shortcut must be one of"):
        BasicBlock(8, 16, shortcut="C")
    with pytest.raises(ConfigError, match="only add channels"):
        PadShortcut(32, 16)


# ----------------------------------------------------------------------------- Bottleneck (002 §2.2.1, §2.3)


def test_bottleneck_256_64_has_69632_conv_weights():
    # spec 2-08: 256*64 (1x1) + 9*64*64 (3x3) + 64*256 (1x1) = 69,632; BN adds 2*(64 + 64 + 256) = 768
    block = Bottleneck(256, 64)
    convs = sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))
    assert convs == 256 * 64 + 9 * 64 * 64 + 64 * 256 == 69_632
    assert sum(p.numel() for p in block.parameters()) == 69_632 + 768


def test_bottleneck_matches_its_formula_with_groups_and_se():
    # width = floor(planes * base_width / 64) * G = 16 * 2 = 32 (G=2 groups of 16); stride on the grouped 3x3 (v1.5)
    block = Bottleneck(32, 16, stride=2, groups=2, base_width=64, se_reduction=8).double().eval()
    randomize_bn(block)
    x = torch.randn(2, 32, 7, 7, dtype=torch.float64)
    c1, c2, c3, p = block.conv1, block.conv2, block.conv3, block.shortcut
    h = torch.relu(bn(F.conv2d(x, c1[0].weight), c1[1]))
    assert h.shape[1] == 32
    h = torch.relu(bn(F.conv2d(h, c2[0].weight, stride=2, padding=1, groups=2), c2[1]))
    u = se_ref(bn(F.conv2d(h, c3[0].weight), c3[1]), block.se)
    ref = torch.relu(u + bn(F.conv2d(x, p[0].weight, stride=2), p[1]))
    torch.testing.assert_close(block(x), ref, rtol=0, atol=1e-12)
    assert ref.shape == (2, 64, 4, 4)


def test_bottleneck_stride_on_first_1x1_keeps_parameters_but_changes_output():
    # the notes' v1 (stride on the first 1x1) and torchvision's v1.5 (stride on the 3x3): same weights, other function
    v15, v1 = Bottleneck(64, 16, stride=2), Bottleneck(64, 16, stride=2, stride_in_1x1=True)
    v1.load_state_dict(v15.state_dict())
    x = torch.randn(2, 64, 8, 8)
    y15, y1 = v15(x), v1(x)
    assert y15.shape == y1.shape == (2, 64, 4, 4)
    assert not torch.allclose(y15, y1)
    assert v1.conv1[0].stride == (2, 2) and v15.conv2[0].stride == (2, 2)


def test_bottleneck_zero_init_last_gives_relu_of_the_shortcut():
    block = Bottleneck(32, 8, stride=2)
    block.zero_init_last()
    x = torch.randn(2, 32, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(block.shortcut(x)))


@pytest.mark.parametrize("name", ["resnet_cifar20", "mobilenet_v2_tiny_fashion"])
def test_in_place_activations_and_sums_change_no_value_or_gradient_and_can_be_turned_off(name):
    # the default blocks run ReLU and the skip sum in place (as torchvision's); the same network with every in-place
    # flag off must give bit-identical outputs, gradients and BN statistics in training mode
    torch.manual_seed(0)
    fast = create_model(name)
    slow = create_model(name)
    slow.load_state_dict(fast.state_dict())
    assert any(getattr(m, "inplace", False) for m in fast.modules())
    disable_inplace(slow)
    assert not any(getattr(m, "inplace", False) for m in slow.modules())
    x = torch.randn(4, *fast.default_input_shape)
    outs = []
    for model in (fast, slow):
        torch.manual_seed(1)  # the same dropout masks
        y = model.train()(x)
        y.square().mean().backward()
        outs.append([y.detach()] + [p.grad for p in model.parameters()] + list(model.buffers()))
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_a_hook_on_the_residual_branch_sees_its_output_overwritten_only_while_in_place_is_on():
    block = Bottleneck(16, 4).eval()
    seen = {}
    block.conv3.register_forward_hook(lambda m, i, o: seen.update(out=o, copy=o.clone()))
    x = torch.randn(1, 16, 4, 4)
    block(x)
    assert not torch.equal(seen["out"], seen["copy"])  # the sum and ReLU were written into conv3's output
    disable_inplace(block)(x)
    assert torch.equal(seen["out"], seen["copy"])
