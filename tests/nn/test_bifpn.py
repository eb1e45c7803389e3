"""BiFPN (Notes: 002 §4.A) against hand computations: fast normalised fusion, the node order (fusion -> swish ->
separable conv -> BN) recomputed with torch.nn.functional, the paper's wiring recomputed node by node, TensorFlow's
'SAME' max pooling, the parameter count from the layer shapes, shapes of stacked blocks."""

import pytest
import torch
import torch.nn.functional as F

from dlkit.errors import ConfigError
from dlkit.nn.bifpn import BiFPN, BiFPNLayer, FastNormalizedFusion, FusionNode, PANet, same_max_pool

EPS = 1e-4


@pytest.mark.parametrize("n", [2, 3])
def test_unit_weights_and_identical_inputs_give_input_times_n_over_n_plus_eps(n):
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    fusion = FastNormalizedFusion(n).double()
    assert torch.equal(fusion.weight, torch.ones(n, dtype=torch.float64))  # the official initial weights
    torch.testing.assert_close(fusion([x] * n), x * (n / (n + EPS)), rtol=1e-12, atol=0)


def test_fusion_is_the_weighted_mean_with_relu_weights():
    fusion = FastNormalizedFusion(3).double()
    a, b, c = (torch.randn(1, 2, 3, 3, dtype=torch.float64) for _ in range(3))
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([2.0, -1.0, 0.5]))  # ReLU(-1) = 0: input b does not count
    torch.testing.assert_close(fusion([a, b, c]), (2 * a + 0.5 * c) / (2.5 + EPS), rtol=1e-12, atol=0)
    w = fusion.normalized_weights()
    assert (w >= 0).all() and w.sum().item() < 1.0
    assert torch.equal(fusion([a, torch.randn_like(b), c]), fusion([a, b, c]))


def test_weights_stay_non_negative_after_steps_that_push_them_below_zero():
    fusion = FastNormalizedFusion(2)
    opt = torch.optim.SGD(fusion.parameters(), lr=10.0)
    x, y = torch.ones(1, 1, 2, 2), 3 * torch.ones(1, 1, 2, 2)
    for _ in range(3):  # minimising the output pushes the weight of the larger input down, through zero
        opt.zero_grad()
        fusion([x, y]).sum().backward()
        opt.step()
    assert fusion.weight.min().item() < 0  # the raw parameter went negative ...
    w = fusion.normalized_weights()
    assert (w >= 0).all()  # ... the weights the fusion uses did not
    assert w[1].item() == 0.0


def test_a_node_is_fusion_swish_separable_conv_then_bn():
    torch.manual_seed(0)
    node = FusionNode(2, 8).eval()
    with torch.no_grad():
        node.fusion.weight.copy_(torch.tensor([0.7, 1.3]))
        node.bn.running_mean.normal_()
        node.bn.running_var.uniform_(0.5, 2)
    a, b = torch.randn(2, 1, 8, 6, 6)
    dw, pw = node.conv
    fused = (0.7 * a + 1.3 * b) / (2.0 + EPS)
    y = F.conv2d(F.conv2d(F.silu(fused), dw.weight, padding=1, groups=8), pw.weight, pw.bias)
    expected = F.batch_norm(y, node.bn.running_mean, node.bn.running_var, node.bn.weight, node.bn.bias, eps=1e-3)
    torch.testing.assert_close(node([a, b]), expected)
    assert dw.bias is None and pw.bias is not None  # Keras' SeparableConv2D: one bias, after the point-wise conv


def test_same_max_pool_is_tensorflows_same_padding():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # TF 'SAME', k 3, s 2 on 4 pixels: pad (0, 1), windows rows/cols {0, 1, 2} and {2, 3}
    torch.testing.assert_close(same_max_pool(x), torch.tensor([[[[10.0, 11.0], [14.0, 15.0]]]]))
    assert torch.equal(F.max_pool2d(x, 3, 2, padding=1), torch.tensor([[[[5.0, 7.0], [13.0, 15.0]]]]))  # not torch's
    x = -torch.arange(25.0).view(1, 1, 5, 5)  # 5 pixels: pad (1, 1), windows {-1, 0, 1}, {1, 2, 3}, {3, 4, 5}
    torch.testing.assert_close(same_max_pool(x), -torch.tensor([[[[0.0, 1, 3], [5, 6, 8], [15, 16, 18]]]]))


def test_three_level_layer_follows_the_papers_equations():
    """P1^td = node(P1^in, up(P2^in)); P0^out = node(P0^in, up(P1^td)); P1^out = node(P1^in, P1^td, down(P0^out));
    P2^out = node(P2^in, down(P1^out)): the nodes recomputed one by one."""
    torch.manual_seed(1)
    layer = BiFPNLayer([8, 8, 8], 8).eval()
    with torch.no_grad():
        for p in layer.parameters():
            if p.dim() == 1 and p.numel() in (2, 3):  # fusion weights: distinct so that a swapped edge shows
                p.uniform_(0.2, 2.0)
    p0, p1, p2 = torch.randn(1, 8, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)
    td0, td1 = layer.td_nodes
    out1, out2 = layer.out_nodes
    up = lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")  # noqa: E731
    p1_td = td1([p1, up(p2)])
    p0_out = td0([p0, up(p1_td)])
    p1_out = out1([p1, p1_td, same_max_pool(p0_out)])
    p2_out = out2([p2, same_max_pool(p1_out)])
    got = layer([p0, p1, p2])
    for g, e in zip(got, [p0_out, p1_out, p2_out]):
        torch.testing.assert_close(g, e)
    assert [n.fusion.num_inputs for n in [*layer.td_nodes, *layer.out_nodes]] == [2, 2, 3, 2]


def layer_params(w: int, levels: int = 5) -> int:
    """One BiFPN block of width w by hand: 2(L-1) nodes of (depth-wise 3x3: 9w, point-wise: w^2 + w bias, BN: 2w),
    plus the fusion weights: 2 per top-down node, 3 per middle output node, 2 for the top one."""
    node = 9 * w + w * w + w + 2 * w
    return 2 * (levels - 1) * node + 2 * (levels - 1) + 3 * (levels - 2) + 2


def test_parameter_count_equals_the_hand_count():
    layer = BiFPNLayer([64] * 5, 64)
    assert sum(p.numel() for p in layer.parameters()) == layer_params(64) == 8 * 4864 + 19
    # EfficientDet-D0's network: 1x1 conv (bias) + BN adapters: P6 from C5, C3 once, C4 and C5 twice each
    adapter = lambda c: c * 64 + 64 + 2 * 64  # noqa: E731
    net = BiFPN([40, 112, 320], 64, num_layers=3)
    expected = adapter(320) + adapter(40) + 2 * adapter(112) + 2 * adapter(320) + 3 * layer_params(64)
    assert sum(p.numel() for p in net.parameters()) == expected == 196_281
    unweighted = BiFPN([40, 112, 320], 64, num_layers=3, weighted=False)  # D6/D7: plain sums, no fusion weights
    assert sum(p.numel() for p in unweighted.parameters()) == expected - 3 * 19


@pytest.mark.parametrize("size", [(256, 256), (256, 384)])
def test_shapes_at_every_level_and_two_stacked_blocks_keep_them(size):
    h, w = size
    net = BiFPN([40, 112, 320], 64, num_layers=2)
    maps = [torch.randn(2, c, h // s, w // s) for c, s in ((40, 8), (112, 16), (320, 32))]
    out = net(maps)
    assert [tuple(o.shape) for o in out] == [(2, 64, h // s, w // s) for s in (8, 16, 32, 64, 128)]
    again = BiFPNLayer([64] * 5, 64)(out)
    assert [o.shape for o in again] == [o.shape for o in out]


def test_gradient_reaches_every_fusion_weight():
    net = BiFPN([16, 24, 40], 16, num_layers=2)
    maps = [torch.randn(2, c, 64 // s, 64 // s) for c, s in ((16, 8), (24, 16), (40, 32))]
    sum(o.square().mean() for o in net(maps)).backward()
    fusions = [m for m in net.modules() if isinstance(m, FastNormalizedFusion)]
    assert len(fusions) == 2 * 8
    assert all(f.weight.grad is not None and (f.weight.grad != 0).all() for f in fusions)


def test_bad_inputs_raise_config_errors():
    with pytest.raises(ConfigError, match="2 or more inputs"):
        FastNormalizedFusion(1)
    with pytest.raises(ConfigError, match="one shape"):
        FastNormalizedFusion(2)([torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2)])
    net = BiFPN([16, 24, 40], 16, num_layers=1)
    with pytest.raises(ConfigError, match="3 backbone maps"):
        net([torch.zeros(1, 16, 8, 8)])
    with pytest.raises(ConfigError, match=r"C = \[16, 24, 40\]; got shapes"):
        net([torch.zeros(1, 16, 8, 8), torch.zeros(1, 24, 4, 4), torch.zeros(1, 41, 2, 2)])
    with pytest.raises(ConfigError, match="num_levels"):
        BiFPN([16, 24, 40], 16, num_levels=2)


def test_panet_adds_a_bottom_up_path_of_stride_2_convolutions_to_the_fpn():
    torch.manual_seed(0)
    net = PANet([16, 24, 40], 8).eval()
    maps = [torch.randn(1, c, 64 // s, 64 // s) for c, s in ((16, 8), (24, 16), (40, 32))]
    out = net(maps)
    assert [tuple(o.shape) for o in out] == [(1, 8, 8, 8), (1, 8, 4, 4), (1, 8, 2, 2)]
    assert all(d.stride == (2, 2) and d.kernel_size == (3, 3) for d in net.down)
    p = net.fpn(maps)
    torch.testing.assert_close(out[0], p[0])  # N_3 = P_3
    n4 = F.relu(F.conv2d(F.relu(F.conv2d(p[0], net.down[0].weight, net.down[0].bias, stride=2, padding=1)) + p[1],
                         net.smooth[0].weight, net.smooth[0].bias, padding=1))
    torch.testing.assert_close(out[1], n4)
