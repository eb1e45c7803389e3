"""Network in Network (Notes: 003 §3.3.3): the hand-counted CIFAR-10 model, mlpconv = conv + per-pixel MLP, GAP
head, gradients and the Fashion-MNIST variant."""

import pytest
import torch
import torch.nn.functional as F
from model_checks import assert_every_parameter_gets_a_gradient, digits_batch, n_params, training_losses

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.classification.nin import MlpConv
from dlkit.report.summary import summarize


def test_nin_cifar10_has_hand_counted_966986_parameters():
    def conv(k, d_in, d_out):
        return k * k * d_in * d_out + d_out

    by_hand = (conv(5, 3, 192) + conv(1, 192, 160) + conv(1, 160, 96)
               + conv(5, 96, 192) + conv(1, 192, 192) + conv(1, 192, 192)
               + conv(3, 192, 192) + conv(1, 192, 192) + conv(1, 192, 10))
    assert by_hand == 966_986 == n_params(create_model("nin"))


def test_nin_maps_32x32_through_16_and_8_to_ten_non_negative_logits():
    model = create_model("nin").eval()
    assert model.default_input_shape == (3, 32, 32)
    x = torch.randn(2, 3, 32, 32)
    shapes = []
    for layer in model.features:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes[0] == (96, 32, 32) and shapes[1] == (96, 16, 16) and shapes[4] == (192, 8, 8)
    assert shapes[-1] == (10, 8, 8)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and (logits >= 0).all()  # the paper's ReLU on the class maps
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the paper predates BN


def test_one_by_one_convolution_is_a_dense_layer_at_every_pixel():
    block = MlpConv(3, (6, 5), 3)
    conv1x1 = block[2]
    h = torch.randn(2, 6, 7, 9)
    dense = F.linear(h.permute(0, 2, 3, 1), conv1x1.weight[:, :, 0, 0], conv1x1.bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(conv1x1(h), dense)


def test_mlpconv_keeps_the_spatial_footprint_of_the_plain_convolution():
    x = torch.randn(1, 3, 11, 13)
    plain = torch.nn.Conv2d(3, 8, 5, padding=2)
    assert MlpConv(3, (8, 8, 4), 5)(x).shape[-2:] == plain(x).shape[-2:] == (11, 13)


def test_every_nin_parameter_gets_a_gradient():
    assert_every_parameter_gets_a_gradient(create_model("nin", final_relu=False), torch.randn(2, 3, 32, 32))


def test_nin_fashion_is_small_cheap_and_trains():
    model = create_model("nin_fashion")
    assert model.default_input_shape == (1, 28, 28)
    assert n_params(model) == 45_994
    assert 2 * summarize(model, (32, 1, 28, 28)).total_macs < 0.5e9  # < 0.5 GFLOPs per 32 images
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert_every_parameter_gets_a_gradient(model, torch.randn(4, 1, 28, 28))


def test_nin_explains_bad_input():
    with pytest.raises(ConfigError, match=r"expects images \[N, 3, H, W\]"):
        create_model("nin")(torch.randn(1, 1, 32, 32))
    with pytest.raises(ConfigError, match="three mlpconv blocks"):
        create_model("nin", blocks=((3, (8,)),))


def test_nin_fashion_loss_falls_on_a_small_batch():
    x, y = digits_batch(32, 28, 1, 10)
    losses = training_losses(create_model("nin_fashion"), x, y, steps=20)
    assert losses[-1] < 0.7 * losses[0], losses
