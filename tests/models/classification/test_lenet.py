"""LeNet-5: the published parameter count, shapes and input checks."""

import pytest
import torch

from dlkit import create_model
from dlkit.errors import ConfigError


def test_lenet5_has_61706_parameters():
    # C1 156 + C3 2,416 + F5 48,120 + F6 10,164 + output 850 = 61,706 (modern LeNet-5 with full C3)
    assert sum(p.numel() for p in create_model("lenet5").parameters()) == 61_706


def test_lenet5_shapes_and_gradients():
    model = create_model("lenet5")
    out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert create_model("lenet5", pad_input=False)(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_original_variant_uses_tanh_and_average_pooling():
    model = create_model("lenet5", activation="tanh", pool="avg")
    names = {type(m).__name__ for m in model.modules()}
    assert {"AvgPool2d"} <= names and "MaxPool2d" not in names


def test_wrong_input_layout_is_explained():
    with pytest.raises(ConfigError, match=r"expects images \[N, 1, 28, 28\]"):
        create_model("lenet5")(torch.randn(2, 28, 28))


def test_wrong_image_size_is_explained_and_the_features_take_any_size():
    model = create_model("lenet5")
    with pytest.raises(ConfigError, match=r"read the 16x5x5 map of 28x28 images; got a 16x14x14 map"):
        model(torch.randn(2, 1, 64, 64))
    with pytest.raises(ConfigError, match=r"16x5x5 map of 32x32 images; got a 16x6x6 map"):
        create_model("lenet5", pad_input=False)(torch.randn(1, 1, 36, 36))
    assert model.forward_features(torch.randn(1, 1, 64, 64)).shape == (1, 16, 14, 14)  # (64 / 2 - 4) / 2


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_pooling_before_a_monotone_activation_computes_the_textbook_order(activation):
    model = create_model("lenet5", activation=activation).double()
    c1, p1, a1, c3, p3, a3 = model.features  # pool first: the fast order
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    textbook = p3(a3(c3(p1(a1(c1(x))))))  # conv -> activation -> pool, as the notes draw it
    torch.testing.assert_close(model.features(x), textbook, rtol=0, atol=0)
