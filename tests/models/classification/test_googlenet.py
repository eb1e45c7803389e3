"""GoogLeNet / Inception-v1 and the Inception module (Notes: 002 §2.1, 003 §3.3.3): published and hand-derived
parameter counts, branch shapes, auxiliary heads, GAP head."""

import pytest
import torch
import torch.nn.functional as F
from model_checks import assert_every_parameter_gets_a_gradient, digits_batch, n_params, training_losses

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.classification.googlenet import INCEPTION_V1_LAYOUT
from dlkit.nn.inception import InceptionAux, InceptionModule
from dlkit.report.summary import summarize

# ----------------------------------------------------------------------------- hand formulas (the reference)


def conv_unit(cin: int, cout: int, k: int, bn: bool) -> int:
    """k*k*cin*cout weights, plus gamma, beta (BN, no conv bias) or a bias (no BN)."""
    return k * k * cin * cout + (2 * cout if bn else cout)


def inception_formula(cin, c1, r3, c3, r5, c5, p, k5: int, bn: bool) -> int:
    return (conv_unit(cin, c1, 1, bn) + conv_unit(cin, r3, 1, bn) + conv_unit(r3, c3, 3, bn)
            + conv_unit(cin, r5, 1, bn) + conv_unit(r5, c5, k5, bn) + conv_unit(cin, p, 1, bn))


def aux_formula(cin: int, classes: int, bn: bool) -> int:
    return conv_unit(cin, 128, 1, bn) + (128 * 16 * 1024 + 1024) + (1024 * classes + classes)


def googlenet_formula(k5: int, bn: bool, aux: bool, classes: int = 1000) -> int:
    total = conv_unit(3, 64, 7, bn) + conv_unit(64, 64, 1, bn) + conv_unit(64, 192, 3, bn)  # stem
    cin, aux_in = 192, {}
    for row in INCEPTION_V1_LAYOUT:
        if row == "M":
            continue
        name, *w = row
        total += inception_formula(cin, *w, k5=k5, bn=bn)
        cin = w[0] + w[2] + w[4] + w[5]
        aux_in[name] = cin
    total += cin * classes + classes  # GAP -> FC
    if aux:
        total += aux_formula(aux_in["4a"], classes, bn) + aux_formula(aux_in["4d"], classes, bn)
    return total


# ----------------------------------------------------------------------------- Inception module


def test_inception_3a_concatenates_64_128_32_32_into_256_channels_at_same_size():
    block = InceptionModule(192, 64, 96, 128, 16, 32, 32)
    out = block(torch.randn(1, 192, 28, 28))
    assert out.shape == (1, 256, 28, 28) and block.out_chans == 256


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("k5", [3, 5])
def test_inception_module_parameter_count_equals_hand_formula(norm, k5):
    block = InceptionModule(192, 64, 96, 128, 16, 32, 32, norm=norm, c5_kernel=k5)
    assert n_params(block) == inception_formula(192, 64, 96, 128, 16, 32, 32, k5=k5, bn=norm)
    # 3a without BN, true 5x5: 12,288 + 18,432 + 110,592 + 3,072 + 12,800 + 6,144 weights = 163,328 = 159.5 Ki
    # (the paper's Table 1 lists 159K for inception 3a), plus 64+96+128+16+32+32 = 368 biases
    if not norm and k5 == 5:
        assert n_params(block) == 163_696 and (163_696 - 368) // 1024 == 159


def test_bottleneck_1x1_reductions_cut_the_weights_of_module_3a():
    # naive module (no 1x1 reduces): 192*64 + 9*192*128 + 25*192*32 + 192*32 weights = 393,216
    naive = 192 * 64 + 9 * 192 * 128 + 25 * 192 * 32 + 192 * 32
    bottleneck = InceptionModule(192, 64, 96, 128, 16, 32, 32, norm=False)
    weights = sum(p.numel() for n, p in bottleneck.named_parameters() if n.endswith("weight"))
    assert naive == 393_216 and weights == 163_328 and weights < naive / 2


def test_inception_module_equals_explicit_branch_convolutions():
    block = InceptionModule(8, 4, 3, 5, 2, 6, 3, norm=False).eval()
    x = torch.randn(2, 8, 9, 9)

    def cr(t, unit, pad):
        conv = unit[0]
        return F.relu(F.conv2d(t, conv.weight, conv.bias, padding=pad))

    b1 = cr(x, block.branch1, 0)
    b3 = cr(cr(x, block.branch3[0], 0), block.branch3[1], 1)
    b5 = cr(cr(x, block.branch5[0], 0), block.branch5[1], 2)
    bp = cr(F.max_pool2d(x, 3, 1, 1), block.branch_pool[1], 0)
    torch.testing.assert_close(block(x), torch.cat([b1, b3, b5, bp], 1))


def test_inception_module_rejects_wrong_channels_and_kernels():
    with pytest.raises(ConfigError, match=r"expects \[N, 192, H, W\]"):
        InceptionModule(192, 64, 96, 128, 16, 32, 32)(torch.randn(1, 190, 8, 8))
    with pytest.raises(ConfigError, match="c5_kernel"):
        InceptionModule(192, 64, 96, 128, 16, 32, 32, c5_kernel=7)


def test_auxiliary_classifier_has_hand_counted_parameters():
    # 1x1 conv 512->128 + BN: 65,792; FC 2048->1024: 2,098,176; FC 1024->1000: 1,025,000
    aux = InceptionAux(512, 1000)
    assert n_params(aux) == 65_792 + 2_098_176 + 1_025_000 == aux_formula(512, 1000, True)
    assert aux.eval()(torch.randn(1, 512, 14, 14)).shape == (1, 1000)


# ----------------------------------------------------------------------------- full networks


def test_googlenet_has_torchvision_parameter_counts():
    # torchvision googlenet: 13,004,888 with aux heads (6,624,904 + 3,188,968 + 3,191,016), 6,624,904 without
    with torch.device("meta"):
        with_aux, without = create_model("googlenet"), create_model("googlenet", aux_logits=False)
    assert n_params(with_aux) == 13_004_888 == googlenet_formula(k5=3, bn=True, aux=True)
    assert n_params(without) == 6_624_904 == googlenet_formula(k5=3, bn=True, aux=False)


def test_true_5x5_kernels_give_the_analytic_7005832():
    # spec 2-05: with the paper's 5x5 in the "5x5" branch torchvision's network has 7,005,832 parameters
    with torch.device("meta"):
        model = create_model("googlenet", c5_kernel=5, aux_logits=False)
    assert n_params(model) == 7_005_832 == googlenet_formula(k5=5, bn=True, aux=False)
    assert n_params(model) - 6_624_904 == 16 * sum(row[4] * row[5] for row in INCEPTION_V1_LAYOUT if row != "M")


def test_paper_inception_v1_has_biases_no_bn_and_hand_counted_parameters():
    with torch.device("meta"):
        model = create_model("inception_v1")
        without = create_model("inception_v1", aux_logits=False)
    assert n_params(model) == 13_378_280 == googlenet_formula(k5=5, bn=False, aux=True)
    assert n_params(without) == 6_998_552 == googlenet_formula(k5=5, bn=False, aux=False)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "BatchNorm2d" not in kinds and "LocalResponseNorm" in kinds


def test_stem_takes_224_down_to_28x28x192():
    model = create_model("googlenet", aux_logits=False)
    assert model.stem(torch.randn(1, 3, 224, 224)).shape == (1, 192, 28, 28)


def test_googlenet_returns_aux_logits_only_in_training():
    model = create_model("googlenet")
    assert model.default_input_shape == (3, 224, 224)
    x = torch.randn(1, 3, 224, 224)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1000)
    model.train()
    small = torch.randn(2, 3, 64, 64)
    main, aux1, aux2 = model(small)
    assert main.shape == aux1.shape == aux2.shape == (2, 1000)
    assert not isinstance(create_model("googlenet", aux_logits=False).train()(small), tuple)


def test_every_googlenet_parameter_gets_a_gradient():
    assert_every_parameter_gets_a_gradient(create_model("inception_v1", num_classes=10), torch.randn(2, 3, 64, 64))
    assert_every_parameter_gets_a_gradient(create_model("googlenet", num_classes=10), torch.randn(2, 3, 64, 64))


def test_gap_head_parameters_do_not_depend_on_resolution():
    model = create_model("googlenet", aux_logits=False, num_classes=7).eval()
    assert n_params(model.fc) == 1024 * 7 + 7
    with torch.no_grad():
        assert model(torch.randn(1, 3, 160, 160)).shape == model(torch.randn(1, 3, 96, 128)).shape == (1, 7)


def test_googlenet_tiny_fashion_is_small_cheap_and_trains():
    model = create_model("googlenet_tiny_fashion")
    assert model.default_input_shape == (1, 28, 28)
    assert n_params(model) == 57_090 < 300_000
    assert 2 * summarize(model, (32, 1, 28, 28)).total_macs < 0.5e9  # < 0.5 GFLOPs per 32 images
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert_every_parameter_gets_a_gradient(model, torch.randn(4, 1, 28, 28))


def test_googlenet_explains_bad_input_and_options():
    with pytest.raises(ConfigError, match=r"expects images \[N, 3, H, W\]"):
        create_model("googlenet_tiny_fashion", in_chans=3)(torch.randn(1, 1, 28, 28))
    with pytest.raises(ConfigError, match="aux_after"):
        create_model("googlenet", aux_after=("9z",))


def test_googlenet_tiny_fashion_loss_falls_on_a_small_batch():
    x, y = digits_batch(32, 28, 1, 10)
    losses = training_losses(create_model("googlenet_tiny_fashion"), x, y, steps=20)
    assert losses[-1] < 0.5 * losses[0], losses
