"""MobileNetV2 (Notes 002 §2.5, Table 2.1) and MobileNet v1 (Notes 003 §3.3.3): structure, published counts, shapes."""

import pytest
import torch

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.classification.mobilenet import MOBILENET_V2_TABLE
from dlkit.nn.activations import ReLU6


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _bn_stats(model):
    return sum(b.numel() for name, b in model.named_buffers() if "running" in name)


def _meta(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


def test_bottleneck_rows_are_the_notes_table_2_1():
    # Notes 002 Table 2.1, (t, c, n, s) of the seven bottleneck rows, copied by hand from the notes
    notes = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    assert list(MOBILENET_V2_TABLE) == notes
    model = _meta("mobilenet_v2")
    for (t, c, n, s), stage in zip(notes, model.stages):
        assert len(stage) == n
        assert [b.stride for b in stage] == [s] + [1] * (n - 1)  # the stride applies to the first repeat only
        assert all(b.out_chans == c and b.hidden_chans == t * b.in_chans for b in stage)


def test_stage_shapes_follow_the_input_column_of_table_2_1():
    model = _meta("mobilenet_v2").eval()
    x = torch.empty(1, 3, 224, 224, device="meta")
    h = model.stem(x)
    shapes = [tuple(h.shape[1:])]
    for stage in model.stages:
        h = stage(h)
        shapes.append(tuple(h.shape[1:]))
    shapes.append(tuple(model.head(h).shape[1:]))
    assert shapes == [(32, 112, 112), (16, 112, 112), (24, 56, 56), (32, 28, 28), (64, 14, 14), (96, 14, 14),
                      (160, 7, 7), (320, 7, 7), (1280, 7, 7)]


def test_mobilenet_v2_has_3504872_parameters():
    model = _meta("mobilenet_v2")
    # torchvision mobilenet_v2: 3,504,872; Keras MobileNetV2(alpha=1) also lists 34,112 non-trainable BN statistics
    # (total 3,538,984)
    assert _params(model) == 3_504_872
    assert _bn_stats(model) == 34_112


def test_mobilenet_v2_uses_relu6_and_a_linear_bottleneck():
    model = _meta("mobilenet_v2")
    assert all(len(b.project) == 2 for stage in model.stages for b in stage)  # projection: conv + BN only
    assert isinstance(model.stem[2], ReLU6) and isinstance(model.head[2], ReLU6)


def test_width_multiplier_rounds_channels_to_multiples_of_8():
    small, large = _meta("mobilenet_v2", width_mult=0.35), _meta("mobilenet_v2", width_mult=1.4)
    assert small.stem[0].out_channels == 16  # Keras MobileNetV2-0.35: 16-filter stem
    assert small.num_features == 1280  # the head is not shrunk below 1280
    assert large.num_features == 1792  # Keras MobileNetV2-1.4: 1792-filter last conv
    assert all(b.out_chans % 8 == 0 for m in (small, large) for s in m.stages for b in s)


def test_mobilenet_v1_matches_keras_parameter_count():
    model = _meta("mobilenet_v1")
    # Keras MobileNet(alpha=1, 224): 4,253,864 parameters = 4,231,976 trainable + 21,888 BN moving mean/variance
    assert _params(model) == 4_231_976
    assert _params(model) + _bn_stats(model) == 4_253_864


def test_mobilenet_v1_separable_layer_has_67840_weights_against_589824():
    # spec [3-24]: a 3x3 256->256 depth-wise separable conv without bias: 3*3*256 + 256*256 = 67,840 vs 589,824
    model = _meta("mobilenet_v1")
    layer = next(m for m in model.features[1:] if m[0][0].in_channels == 256 and m[1][0].out_channels == 256)
    depthwise, pointwise = layer[0][0], layer[1][0]
    assert depthwise.groups == 256
    assert depthwise.weight.numel() + pointwise.weight.numel() == 67_840 < 3 * 3 * 256 * 256 == 589_824


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v1", "mobilenet_v2_tiny_fashion"])
def test_output_shape_and_every_parameter_gets_a_gradient(name):
    model = create_model(name)
    chans = model.default_input_shape[0]
    out = model(torch.randn(2, chans, 64, 64))
    assert out.shape == (2, 1000 if "tiny" not in name else 10)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_default_input_shapes():
    assert _meta("mobilenet_v2").default_input_shape == (3, 224, 224)
    assert _meta("mobilenet_v1").default_input_shape == (3, 224, 224)
    assert _meta("mobilenet_v2_tiny_fashion").default_input_shape == (1, 32, 32)


def test_tiny_fashion_variant_is_small_and_keeps_a_2x2_map_on_32x32():
    model = create_model("mobilenet_v2_tiny_fashion").eval()
    assert _params(model) < 500_000
    assert model.stem[0].stride == (1, 1)
    assert model.forward_features(torch.randn(1, 1, 32, 32)).shape[-2:] == (2, 2)


def test_wrong_input_layout_is_explained():
    with pytest.raises(ConfigError, match=r"expects images \[N, 3, H, W\]"):
        create_model("mobilenet_v2_tiny_fashion", in_chans=3)(torch.randn(2, 32, 32))
    with pytest.raises(ConfigError, match="width_mult"):
        create_model("mobilenet_v2", width_mult=0)
