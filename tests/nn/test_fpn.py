"""Feature pyramid network (Notes: 002 §4.3.3): equal to torchvision.ops.FeaturePyramidNetwork (with its
LastLevelMaxPool and LastLevelP6P7 extra blocks) once the weights are copied, output widths and strides, and the
top-down path by hand on a two-level pyramid."""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import FeaturePyramidNetwork as TVFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from dlkit.errors import ConfigError
from dlkit.nn.fpn import FeaturePyramidNetwork


def copy_from_torchvision(ours: FeaturePyramidNetwork, tv: TVFPN) -> None:
    """torchvision's inner_blocks.i.0 / layer_blocks.i.0 / extra_blocks.* are our lateral.i / output.i / extra.*."""
    sd = {}
    for k, v in tv.state_dict().items():
        renames = (("inner_blocks.", "lateral."), ("layer_blocks.", "output."), ("extra_blocks.", "extra."))
        for tv_name, ours_name in renames:
            k = k.replace(tv_name, ours_name)
        parts = k.split(".")
        if parts[0] in ("lateral", "output"):
            del parts[2]  # the Conv2dNormActivation's index 0
        sd[".".join(parts)] = v
    ours.load_state_dict(sd, strict=True)


def pyramid(widths, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, h, w, generator=g) for c, (h, w) in zip(widths, sizes)]


@pytest.mark.parametrize("extra, tv_extra", [
    ("none", None),
    ("pool", LastLevelMaxPool()),
    ("p6p7", LastLevelP6P7(64, 64)),  # P6 from P5 (torchvision's retinanet_resnet50_fpn)
])
def test_fpn_equals_torchvision_with_copied_weights(extra, tv_extra):
    widths, sizes = (16, 32, 48), [(40, 36), (20, 18), (10, 9)]  # odd sizes: the upsampling takes the lateral's size
    torch.manual_seed(0)
    tv = TVFPN(list(widths), 64, extra_blocks=tv_extra)
    ours = FeaturePyramidNetwork(widths, 64, extra=extra)
    copy_from_torchvision(ours, tv)
    maps = pyramid(widths, sizes)
    expected = list(tv(OrderedDict((str(i), m) for i, m in enumerate(maps))).values())
    got = ours(maps)
    assert len(got) == len(expected) == ours.num_levels
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_p6p7_from_c5_equals_torchvision_v2_layout():
    widths, sizes = (8, 16, 32), [(32, 32), (16, 16), (8, 8)]
    torch.manual_seed(1)
    tv = TVFPN(list(widths), 24, extra_blocks=LastLevelP6P7(32, 24))  # in != out: torchvision reads C5
    ours = FeaturePyramidNetwork(widths, 24, extra="p6p7", p6_source="c5")
    copy_from_torchvision(ours, tv)
    maps = pyramid(widths, sizes, seed=3)
    expected = list(tv(OrderedDict((str(i), m) for i, m in enumerate(maps))).values())
    for a, b in zip(ours(maps), expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_output_levels_have_the_common_width_and_strides_8_to_128():
    fpn = FeaturePyramidNetwork((512, 1024, 2048), 256, extra="p6p7")
    out = fpn([torch.randn(1, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate((512, 1024, 2048))])
    assert [o.shape[1] for o in out] == [256] * 5
    assert [o.shape[-1] for o in out] == [64, 32, 16, 8, 4]  # strides 8, 16, 32, 64, 128 on a 512 image
    # torchvision's counts: laterals sum(C_i 256 + 256), 3x3 outputs 3 (256 * 256 * 9 + 256), P6 and P7 the same
    assert sum(p.numel() for p in fpn.parameters()) == (3584 * 256 + 3 * 256) + 5 * (256 * 256 * 9 + 256)


def test_top_down_path_by_hand_on_two_levels():
    """P_1 = out_1(lat_1(C_1) + up(lat_2(C_2))), P_2 = out_2(lat_2(C_2)), with the notes' nearest upsampling."""
    fpn = FeaturePyramidNetwork((3, 5), 4)
    c1, c2 = pyramid((3, 5), [(8, 8), (4, 4)], seed=7)
    m2 = fpn.lateral[1](c2)
    up = m2.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest x2 by hand
    p1 = F.conv2d(fpn.lateral[0](c1) + up, fpn.output[0].weight, fpn.output[0].bias, padding=1)
    got = fpn([c1, c2])
    torch.testing.assert_close(got[0], p1)
    torch.testing.assert_close(got[1], fpn.output[1](m2))


def test_fpn_rejects_bad_configuration_and_inputs():
    with pytest.raises(ConfigError, match="extra levels"):
        FeaturePyramidNetwork((8,), 8, extra="p6")
    with pytest.raises(ConfigError, match="P6 from P5"):
        from dlkit.nn.fpn import LastLevelP6P7 as P6P7
        P6P7(32, 16, "p5")
    fpn = FeaturePyramidNetwork((8, 16), 8)
    with pytest.raises(ConfigError, match="2 input maps"):
        fpn([torch.randn(1, 8, 4, 4)])
    with pytest.raises(ConfigError, match=r"C = \[8, 16\]"):
        fpn([torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)])
