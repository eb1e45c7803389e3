"""FCN-32s/16s/8s (Notes: 000 §3.11.1, 002 §5.1.3-§5.1.4, 003 §4.1): convolutionalisation of a VGG classifier,
exact parameter counts cross-checked with dlkit's vgg16, stage strides, sum and concat merges, the bilinear start,
input-size handling, gradients and a learning test."""

import pytest
import torch
import torch.nn.functional as F
from model_checks import training_losses
from torch import nn

from dlkit import create_model, list_models
from dlkit.errors import ConfigError
from dlkit.models.backbone import FeatureInfo
from dlkit.models.classification.vgg import VGG
from dlkit.models.segmentation.fcn import FCN
from dlkit.techniques.transfer import convolutionalize


def n_params(model, learned_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not learned_only)


conv = lambda cin, cout, k=1: cout * (cin * k * k + 1)
FCN32S = 14_714_688 + conv(512, 4096, 7) + conv(4096, 4096) + conv(4096, 21)  # backbone, conv6, conv7, score
UP2 = 21 * 21 * 4 * 4  # a learned x2 upsampler: 4x4 transposed conv 21 -> 21, no bias
LEARNED = {
    "fcn32s_vgg16": FCN32S,                                          # 134,346,581
    "fcn16s_vgg16": FCN32S + conv(512, 21) + UP2,                    # + 10,773 + 7,056 = 134,364,410
    "fcn8s_vgg16": FCN32S + conv(512, 21) + conv(256, 21) + 2 * UP2,  # + 5,397 + 7,056 = 134,376,863
}


def test_fcn_vgg16_learned_parameter_counts():
    assert list_models("*fcn*") == ["fcn16s_vgg16", "fcn32s_vgg16", "fcn8s_lite0", "fcn8s_tiny", "fcn8s_vgg16"]
    assert FCN32S == 134_346_581 and conv(512, 4096, 7) == 102_764_544 and conv(4096, 4096) == 16_781_312
    expected = {"fcn32s_vgg16": 134_346_581, "fcn16s_vgg16": 134_364_410, "fcn8s_vgg16": 134_376_863}
    frozen = {"fcn32s_vgg16": 21 * 64 * 64, "fcn16s_vgg16": 21 * 32 * 32, "fcn8s_vgg16": 21 * 16 * 16}
    for name, count in expected.items():
        with torch.device("meta"):
            model = create_model(name)
        assert n_params(model, learned_only=True) == LEARNED[name] == count, name
        assert n_params(model) - count == frozen[name] == n_params(model.upsample), name  # fixed bilinear kernel


def test_fcn_backbone_and_conv6_conv7_are_vgg16_convolutionalised():
    with torch.device("meta"):
        fcn, vgg = create_model("fcn8s_vgg16"), create_model("vgg16")
    assert n_params(fcn.stages) == n_params(vgg.features) == 14_714_688
    convs = lambda m: [tuple(c.weight.shape) for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert convs(fcn.stages) == convs(vgg.features)
    # fc6 reads the flattened 512 x 7 x 7 map: a 7x7 convolution; fc7 reads a vector: a 1x1 convolution
    assert fcn.conv6[0].weight.shape == (4096, 512, 7, 7) and fcn.conv7[0].weight.shape == (4096, 4096, 1, 1)
    assert n_params(fcn.conv6) == n_params(vgg.classifier[0]) and n_params(fcn.conv7) == n_params(vgg.classifier[3])


def small_vgg() -> VGG:
    return VGG(cfg=(8, "M", 8, "M", 16, "M", 16, "M", 16, "M"), num_classes=10, hidden=32, pool_size=7).eval()


def test_convolutionalised_dense_layers_equal_the_dense_layers_both_1x1_and_7x7():
    vgg = small_vgg()
    fc6, fc7 = vgg.classifier[0], vgg.classifier[3]
    x = torch.randn(2, 16, 7, 7)
    conv6 = convolutionalize(fc6, 16, 7, 7)  # the first dense layer: kernel = the 7x7 map it was flattened from
    torch.testing.assert_close(conv6(x).flatten(1), fc6(x.flatten(1)))
    h = torch.randn(2, 32, 1, 1)
    torch.testing.assert_close(convolutionalize(fc7)(h).flatten(1), fc7(h.flatten(1)))  # 1x1 on a 1x1 map
    # on a larger map the same convolution slides: a 3x4 heatmap of fc6 outputs, one per 7x7 window
    big = torch.randn(1, 16, 9, 10)
    heat = conv6(big)
    assert heat.shape == (1, 32, 3, 4)
    torch.testing.assert_close(heat[0, :, 2, 1], fc6(big[:, :, 2:9, 1:8].flatten(1))[0])


def test_fcn_loaded_from_a_classifier_reproduces_its_fc7_features_and_gives_a_heatmap():
    vgg = small_vgg()
    fcn = FCN(num_classes=10, variant="32s", widths=((8,), (8,), (16,), (16,), (16,)), fc_width=32).eval()
    fcn.load_classifier(vgg.features, vgg.classifier[0], vgg.classifier[3])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        fc7 = vgg.classifier[:5](torch.flatten(vgg.avgpool(vgg.features(x)), 1))  # fc6-relu-drop-fc7-relu
        maps = fcn.forward_maps(x)
        # at the native size the centre of the 7x7 conv7 map sees exactly the 7x7 pool5 map: the classifier's fc7
        torch.testing.assert_close(maps["conv7"][:, :, 3, 3], fc7, rtol=1e-4, atol=1e-5)
        assert fcn(torch.randn(1, 3, 320, 256)).shape == (1, 10, 320, 256)
        assert fcn.forward_maps(torch.randn(1, 3, 320, 256))["score"].shape == (1, 10, 10, 8)  # a class heatmap
    with pytest.raises(ConfigError, match="do not match the FCN backbone"):
        FCN(variant="32s", widths=((8,), (8,), (16,), (16,), (8,)), fc_width=32).load_classifier(
            vgg.features, vgg.classifier[0], vgg.classifier[3])


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_fcn_stages_are_at_strides_8_16_32_and_the_output_at_the_input_size(variant):
    model = create_model("fcn8s_tiny", variant=variant, num_classes=5).eval()
    with torch.no_grad():
        maps = model.forward_maps(torch.randn(1, 3, 64, 96))
    assert maps["pool3"].shape == (1, 64, 8, 12) and maps["pool4"].shape == (1, 96, 4, 6)
    assert maps["conv7"].shape == (1, 128, 2, 3) and maps["score"].shape == (1, 5, 2, 3)
    assert maps["out"].shape == (1, 5, 64, 96)
    skips = {"32s": [], "16s": ["pool4"], "8s": ["pool4", "pool3"]}[variant]
    assert [k for k in maps if k.startswith("fused_")] == [f"fused_{s}" for s in skips]
    assert model.upsample.factor == int(variant[:-1])


@pytest.mark.parametrize("size", [(32, 32), (64, 96), (160, 128)])
def test_fcn8s_output_matches_several_input_sizes(size):
    model = create_model("fcn8s_tiny").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, 21, *size)


def test_sum_merge_keeps_k_channels_and_concat_doubles_them_then_mixes_back_equal_to_the_sum_at_init():
    x = torch.randn(1, 3, 64, 64)
    summed = create_model("fcn8s_tiny", num_classes=4).eval()
    concat = create_model("fcn8s_tiny", num_classes=4, merge="concat").eval()
    missing, unexpected = concat.load_state_dict(summed.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == sorted(f"fuse.{s}.{p}" for s in ("pool3", "pool4")
                                                          for p in ("weight", "bias"))
    for s in ("pool3", "pool4"):  # give the skip scorers weights, so the merge really adds two maps
        for m in (summed, concat):
            torch.manual_seed(1)
            nn.init.normal_(m.score_skip[s].weight)
    with torch.no_grad():
        ms, mc = summed.forward_maps(x), concat.forward_maps(x)
    for s in ("pool4", "pool3"):
        assert ms[f"merged_{s}"].shape[1] == 4 and mc[f"merged_{s}"].shape[1] == 8
        assert ms[f"fused_{s}"].shape[1] == mc[f"fused_{s}"].shape[1] == 4
    assert concat.fuse["pool4"].weight.shape == (4, 8, 1, 1)
    torch.testing.assert_close(mc["out"], ms["out"])


def test_fcn32s_output_is_bilinear_upsampling_of_its_score_map_away_from_the_border():
    model = create_model("fcn8s_tiny", variant="32s").eval()
    with torch.no_grad():
        maps = model.forward_maps(torch.randn(1, 3, 128, 160))
    ref = F.interpolate(maps["score"], scale_factor=32, mode="bilinear", align_corners=False)
    assert ref.shape == maps["out"].shape == (1, 21, 128, 160)
    torch.testing.assert_close(maps["out"][..., 16:-16, 16:-16], ref[..., 16:-16, 16:-16])


def test_fcn8s_starts_with_the_predictions_of_its_coarse_path():
    # the skip scorers are zero-initialised (as in the paper), so pool3 and pool4 add nothing at first
    model = create_model("fcn8s_tiny").eval()
    with torch.no_grad():
        maps = model.forward_maps(torch.randn(2, 3, 64, 64))
        coarse = model.upsample(model.up_skip["pool3"](model.up_skip["pool4"](maps["score"])))
    assert not maps["score_pool4"].any() and not maps["score_pool3"].any()
    torch.testing.assert_close(maps["out"], coarse)
    assert model.up_skip["pool4"].conv.weight.requires_grad and not model.upsample.conv.weight.requires_grad
    assert create_model("fcn8s_tiny", learn_final_upsample=True).upsample.conv.weight.requires_grad


def test_fcn_explains_input_sizes_or_pads_them():
    with pytest.raises(ConfigError, match=r"divisible by 32.*got 70x100.*pad_input=True.*96x128"):
        create_model("fcn8s_tiny")(torch.randn(1, 3, 70, 100))
    with pytest.raises(ConfigError, match=r"\[N, 3, H, W\]"):
        create_model("fcn8s_tiny")(torch.randn(1, 1, 64, 64))
    model = create_model("fcn8s_tiny", pad_input=True).eval()
    x = torch.randn(1, 3, 70, 100)
    with torch.no_grad():
        out = model(x)
        padded = model(F.pad(x, (0, 28, 0, 26)))
    assert out.shape == (1, 21, 70, 100)
    torch.testing.assert_close(out, padded[..., :70, :100])  # zero-pad bottom/right, crop back


def test_fcn_explains_bad_configurations():
    with pytest.raises(ConfigError, match="variant must be one of"):
        FCN(variant="4s")
    with pytest.raises(ConfigError, match="merge must be one of"):
        FCN(merge="max")
    with pytest.raises(ConfigError, match="5 stages"):
        FCN(widths=((8,), (8,)))


def test_fcn8s_tiny_gradients_reach_the_first_layer_and_every_learned_parameter():
    model = create_model("fcn8s_tiny").train()
    assert n_params(model, learned_only=True) == 374_351
    for s in ("pool3", "pool4"):  # non-zero skip scorers, so gradients also reach the backbone through the skips
        nn.init.normal_(model.score_skip[s].weight, 0.0, 0.01)
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, missing
    assert model.stages[0][0][0].weight.grad.abs().sum() > 0


def test_fcn8s_tiny_loss_falls_on_one_image_mask_pair():
    x = 0.3 * torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 64, 64, dtype=torch.long)
    mask[:, 16:48, 8:40] = 1
    x[:, :, 16:48, 8:40] += 1.0
    model = create_model("fcn8s_tiny", num_classes=2).train()
    losses = training_losses(model, x, mask, 30, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0], losses


class _Pools(nn.Module):
    """A toy feature extractor: average pools of a 1x1 projection at strides 8, 16, 32 with 5, 6, 7 channels."""

    feature_info = FeatureInfo(FeatureInfo.entry(f"proj.{i}", c, 2 ** (i + 3)) for i, c in enumerate((5, 6, 7)))

    def __init__(self):
        super().__init__()
        self.proj = nn.ModuleList([nn.Conv2d(3, c, 1) for c in self.feature_info.channels()])

    def forward(self, x):
        return [F.avg_pool2d(conv(x), 2 ** (i + 3)) for i, conv in enumerate(self.proj)]


def test_fcn_on_another_backbone_scores_its_maps_and_leaves_its_weights_alone():
    backbone = _Pools()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = FCN(num_classes=4, variant="8s", backbone=backbone, fc_width=0)
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    maps = model.forward_maps(torch.randn(2, 3, 64, 96))
    assert maps["out"].shape == (2, 4, 64, 96) and maps["score"].shape == (2, 4, 2, 3)
    assert model.score.in_channels == 7 and model.score_skip["pool3"].in_channels == 5 and len(model.stages) == 0
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == {"backbone", "score", "score_skip", "up_skip", "upsample"}  # no VGG stages, no conv6/7
    with pytest.raises(ConfigError, match=r"three maps at strides \[8, 16, 32\].*got strides Identity"):
        FCN(backbone=nn.Identity())
    with pytest.raises(ConfigError, match=r"got strides \[4, 8, 16, 32\]"):
        FCN(backbone=create_model("resnet18", features_only=True, out_indices=(1, 2, 3, 4)))
