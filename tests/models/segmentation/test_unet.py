"""U-Net (Notes: 000 §3.11.2, 002 §5.1.4, 003 §4.1.3): the original's exact parameter count, 572 -> 388 with centred
skip crops, the padded variant keeping H x W, channel counts after concatenation, gradients and a learning test."""

import pytest
import torch
from model_checks import training_losses
from torch import nn

import dlkit.models.segmentation.unet as unet_module
from dlkit import create_model, list_models
from dlkit.errors import ConfigError
from dlkit.models.segmentation.unet import UNet, center_crop


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def unet_formula(cin: int = 1, classes: int = 2, base: int = 64, depth: int = 4) -> int:
    """3x3 conv: 9 cin cout + cout; 2x2 up-conv: 4 cin cout + cout; 1x1 scorer: cin K + K."""
    conv3 = lambda i, o: 9 * i * o + o
    widths = [base * 2 ** level for level in range(depth + 1)]
    total, c = 0, cin
    for w in widths:  # contracting path and bottom
        total += conv3(c, w) + conv3(w, w)
        c = w
    for w in reversed(widths[:-1]):  # expansive path: up-conv 2w -> w, then two 3x3 on the concatenation (2w)
        total += 4 * 2 * w * w + w + conv3(2 * w, w) + conv3(w, w)
    return total + base * classes + classes


def test_original_unet_has_31030658_parameters():
    # encoder 4,684,224 + bottom 14,157,824 + up-convs 2,786,240 + decoder 9,402,240 + scorer 130 (module docstring)
    assert list_models("*unet*") == ["unet", "unet_tiny"]
    with torch.device("meta"):
        model = create_model("unet")
    assert n_params(model) == unet_formula() == 31_030_658
    assert n_params(model.down) == 4_684_224 and n_params(model.bottom) == 14_157_824
    assert n_params(model.up) == 2_786_240 and n_params(model.decode) == 9_402_240
    assert model.widths == [64, 128, 256, 512, 1024] and model.default_input_shape == (1, 572, 572)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_center_crop_takes_the_centred_window():
    x = torch.arange(6 * 8).view(1, 1, 6, 8)
    assert center_crop(x, (2, 4)).tolist() == [[[[18, 19, 20, 21], [26, 27, 28, 29]]]]
    assert torch.equal(center_crop(x, (6, 8)), x)
    y = torch.arange(25).view(5, 5)  # an odd margin puts the extra row/column after the window
    assert center_crop(y, (2, 2)).tolist() == [[6, 7], [11, 12]]
    with pytest.raises(ConfigError, match="no larger than the map"):
        center_crop(y, (6, 2))


def test_unpadded_unet_maps_572_to_388_with_centred_skip_crops(monkeypatch):
    # base_width 4 has the same spatial arithmetic as the full network at a fraction of the cost
    crops = []

    def recording_crop(x, size):
        crops.append((tuple(x.shape[-2:]), tuple(size)))
        return center_crop(x, size)

    monkeypatch.setattr(unet_module, "center_crop", recording_crop)
    model = create_model("unet", base_width=4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388) and model.output_size(572) == 388
    # encoder maps 568, 280, 136, 64 are cropped to the up-convolved 56, 104, 200, 392: margins 4, 16, 40, 88
    assert crops == [((64, 64), (56, 56)), ((136, 136), (104, 104)), ((280, 280), (200, 200)),
                     ((568, 568), (392, 392))]
    assert [(s[0] - t[0]) // 2 for s, t in crops] == [4, 16, 40, 88]


def test_unpadded_unet_rejects_sizes_whose_pools_see_odd_maps():
    model = create_model("unet", base_width=2)
    assert [s for s in range(180, 260) if model.output_size(s) is not None] == [188, 204, 220, 236, 252]
    assert model.output_size(204) == 20 and model.nearest_valid_size(570) == 572
    with pytest.raises(ConfigError, match="Nearest valid side to 570: 572"):
        model(torch.randn(1, 1, 570, 572))


@pytest.mark.parametrize("upsample", ["transposed", "bilinear"])
@pytest.mark.parametrize("size", [(32, 32), (48, 80), (16, 64)])
def test_padded_unet_keeps_height_and_width(size, upsample):
    model = UNet(in_chans=3, num_classes=5, base_width=4, depth=4, padding=True, upsample=upsample).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, 5, *size)


def test_padded_unet_asks_for_sides_divisible_by_2_to_the_depth():
    with pytest.raises(ConfigError, match=r"divisible by 2\^depth = 8.*Nearest valid side to 30: 32"):
        create_model("unet_tiny")(torch.randn(1, 3, 30, 32))
    with pytest.raises(ConfigError, match=r"\[N, 3, H, W\]"):
        create_model("unet_tiny")(torch.randn(1, 1, 32, 32))
    with pytest.raises(ConfigError, match="upsample must be one of"):
        UNet(upsample="nearest")


def test_channels_double_per_level_and_concatenation_doubles_the_decoder_input():
    model = UNet(base_width=8, depth=3)
    assert model.widths == [8, 16, 32, 64]
    assert [b[0].out_channels for b in model.down] == [8, 16, 32] and model.bottom[0].out_channels == 64
    # each up-convolution halves the channels; concatenating the skip doubles them back
    assert [u[0].in_channels for u in model.up] == [64, 32, 16]
    assert [u[0].out_channels for u in model.up] == [32, 16, 8]
    assert [d[0].in_channels for d in model.decode] == [64, 32, 16]


def test_bilinear_upsampling_swaps_the_2x2_up_convolution_for_a_1x1_convolution():
    t, b = UNet(base_width=8, depth=2), UNet(base_width=8, depth=2, upsample="bilinear")
    # 4 cin cout + cout against cin cout + cout per level: (32 -> 16) and (16 -> 8)
    assert n_params(t) - n_params(b) == 3 * (32 * 16 + 16 * 8)
    assert isinstance(b.up[0][0], nn.Upsample) and isinstance(t.up[0][0], nn.ConvTranspose2d)


def test_unet_tiny_is_padded_rgb_with_batch_norm_and_every_parameter_gets_a_gradient():
    model = create_model("unet_tiny")
    assert (model.default_input_shape, model.padding, model.widths) == ((3, 64, 64), True, [16, 32, 64, 128])
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 14
    assert n_params(model) == 482_754
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert model.down[0][0].weight.grad.abs().sum() > 0  # the first layer


def test_unet_tiny_overfits_one_image_mask_pair():
    # a bright square on noise: the mask is the square
    x = 0.3 * torch.randn(1, 3, 32, 32)
    mask = torch.zeros(1, 32, 32, dtype=torch.long)
    mask[:, 8:20, 10:26] = 1
    x[:, :, 8:20, 10:26] += 1.0
    model = create_model("unet_tiny")
    training_losses(model, x, mask, 40, lr=1e-2)
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == mask).float().mean()
    assert accuracy > 0.98, accuracy


def test_unet_on_a_classifier_encoder_decodes_its_stages_back_to_the_input_size():
    """encoder=: the contracting path is a classifier's stages (the backbone contract), the last at every stride."""
    small = {"widths": (8, 8, 16, 16), "stem_width": 8}
    torch.manual_seed(0)
    model = UNet(in_chans=3, num_classes=5, encoder="resnet18", encoder_kwargs=small, batch_norm=True).eval()
    torch.manual_seed(0)
    resnet = create_model("resnet18", **small).eval()  # the same initialisation as the encoder
    assert model.encoder.feature_info.reductions() == [2, 4, 8, 16, 32] and model.widths == [8, 8, 8, 16, 16]
    keys = {k[len("encoder."):] for k in model.state_dict() if k.startswith("encoder.")}
    assert keys == {k for k in resnet.state_dict() if not k.startswith("fc.")}
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.encoder(x), resnet.feature_maps(x, (0, 1, 2, 3, 4))))
        assert model(x).shape == (2, 5, 64, 96)  # four up-convolutions to stride 2, then bilinear x2
    assert len(model.up) == len(model.decode) == 4 and model.output_size(80) is None
    with pytest.raises(ConfigError, match="divisible by the encoder's stride 32"):
        model(torch.randn(1, 3, 48, 64))
    cifar = UNet(in_chans=1, num_classes=2, encoder="resnet_cifar20")  # in_chans reaches the encoder
    assert cifar.encoder.feature_info.reductions() == [1, 2, 4] and cifar(torch.randn(1, 1, 32, 32)).shape == (
        1, 2, 32, 32)
    with pytest.raises(ConfigError, match="strides double"):
        UNet(in_chans=1, encoder="vit_tiny_mnist")
