"""The backbone contract of every registered classifier (timm's; Notes: 003 §3.3.2): forward is
forward_head(forward_features(x)), feature_info says the channels and strides of the maps features_only=True
returns, reset_classifier(k) gives k logits (0: the pooled features), get_classifier is the layer the head applies.

Full-size networks are checked on the meta device (shapes only); every family also has a small network checked on
real numbers, bit for bit."""

import copy
from unittest import mock

import pytest
import torch
from torch import nn

from dlkit import create_model, list_models
from dlkit.errors import ConfigError
from dlkit.models.backbone import Backbone, FeatureExtractor
from dlkit.registry import model_entrypoint
from dlkit.techniques.transfer import replace_head

CLASSIFIERS = [n for n in list_models() if model_entrypoint(n).__module__.startswith("dlkit.models.classification.")]
# small networks of every family, checked on real numbers (a full-size one where the family has no small one)
SMALL = {"lenet5": {}, "vgg_tiny_fashion": {}, "nin": {}, "nin_fashion": {}, "googlenet_tiny_fashion": {},
         "resnet_cifar20": {}, "wrn_16_2": {}, "resnext_tiny_fashion": {}, "se_resnet_cifar20": {},
         "mobilenet_v2_tiny_fashion": {}, "mobilenet_v1": {"alpha": 0.25}, "efficientnet_tiny_fashion": {},
         "regnet_tiny_fashion": {}, "vit_tiny_mnist": {}, "inception_resnet_tiny": {}, "example_cnn_003": {},
         "mlp_digits": {}, "darknet_small": {}, "resnet18": {"widths": (8, 8, 16, 16), "stem_width": 8},
         "inception_v1": {"stem_chans": (8, 8, 16), "layout": (("3a", 8, 8, 8, 4, 4, 4), "M",
                                                                ("4a", 8, 8, 8, 4, 4, 4)), "aux_after": ("4a",)}}
SMALL_SIDE = {"resnet18": 64, "mobilenet_v1": 64, "inception_v1": 64}


def _input(model, side: int | None = None, batch: int = 2, device: str = "cpu") -> torch.Tensor:
    shape = model.default_input_shape
    if side is not None and len(shape) == 3:
        shape = (shape[0], side, side)
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0)).to(device)


def _measured(extractor, model, device: str = "cpu") -> tuple[list[int], list[int]]:
    """(channels, strides) of the maps of `extractor`. A stride is input side / map side when that is exact for every
    map (padded networks at a multiple of their total stride), else (change of the input side) / (change of the map
    side) between two inputs, exact for unpadded convolutions and ceil-mode pools too. ViT takes its own size only;
    an MLP's maps are vectors (stride 1)."""
    reductions = model.feature_info.reductions()
    vectors, fixed = len(model.default_input_shape) == 1, hasattr(model, "img_size")
    side = model.default_input_shape[-1] if vectors or fixed else 7 * max(reductions)
    with torch.no_grad():
        maps = extractor(_input(model, None if vectors else side, 1, device))
        chans = [m.shape[1] for m in maps]
        if vectors:
            return chans, [1 for m in maps if m.dim() == 2]
        if fixed or all(m.shape[-1] * r == side for m, r in zip(maps, reductions)):
            return chans, [side // m.shape[-1] for m in maps]
        step = 2 * max(reductions)
        bigger = extractor(_input(model, side + step, 1, device))
    return chans, [step // (b.shape[-1] - m.shape[-1]) for m, b in zip(maps, bigger)]


def test_every_classifier_is_a_backbone_whose_feature_info_matches_its_maps():
    """Every registered classifier not checked on real numbers below, on the meta device: the features_only maps
    have feature_info's channels and strides, and reset_classifier sizes the head."""
    assert len(CLASSIFIERS) > 60 and set(SMALL) <= set(CLASSIFIERS)
    wrong = {}
    for name in sorted(set(CLASSIFIERS) - set(SMALL) | {"resnet18", "inception_v1", "mobilenet_v1"}):
        with torch.device("meta"):
            model = create_model(name)
        assert isinstance(model, Backbone), name
        model.reset_classifier(7)
        head = model.get_classifier()
        assert (head.out_channels if isinstance(head, nn.Conv2d) else head.out_features) == 7, name
        expected = (model.feature_info.channels(), model.feature_info.reductions())
        # batch norm keeps the shape, and on the meta device its decomposition takes most of the time: skipped
        with mock.patch.object(nn.BatchNorm2d, "forward", lambda self, x: x):
            got = _measured(FeatureExtractor(model).eval(), model, "meta")
        if got != expected:
            wrong[name] = (got, expected)
    assert not wrong, wrong


@pytest.mark.parametrize("name", SMALL)
def test_forward_is_the_head_of_the_features_bit_for_bit_and_the_head_can_be_reset(name):
    torch.manual_seed(0)
    model = create_model(name, **SMALL[name]).eval()
    x = _input(model, SMALL_SIDE.get(name))
    width = model.head_hidden_size
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        assert torch.equal(logits, model.forward_head(features))
        pooled = model.forward_head(features, pre_logits=True)
        assert pooled.shape == (2, width)
        maps = model.feature_maps(x)
        assert [m.shape[1] for m in maps] == model.feature_info.channels()
        if hasattr(model, "img_size"):  # ViT: the maps are tokens before the norm
            tokens = model.encoder.norm(maps[-1].flatten(2).transpose(1, 2))
            torch.testing.assert_close(tokens, features[:, 1:])
        else:
            assert torch.equal(maps[-1], features)  # the last stage is the map the head pools
        assert [torch.equal(a, b) for a, b in zip(model.feature_maps(x, (0, -1)), (maps[0], maps[-1]))] == [True] * 2

    # get_classifier is the layer the head applies and trains
    classifier = model.get_classifier()
    assert dict(model.named_parameters())[f"{model.classifier_name}.weight"] is classifier.weight
    trained = copy.deepcopy(model).train()
    out = trained(x)
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    assert trained.get_classifier().weight.grad.abs().sum() > 0

    model.reset_classifier(7)
    new = model.get_classifier()
    assert new is not classifier and model.num_classes == 7
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        new.weight.zero_()
        new.bias.zero_()
        assert torch.equal(model(x), torch.zeros(2, 7))  # the logits come from this layer alone
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), nn.Identity) and model(x).shape == (2, width)
        assert torch.equal(model(x), pooled)  # no classifier: the network returns the pooled features
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.head_hidden_size == width
    assert replace_head(model, 4) is model.get_classifier() and model(x).shape == (2, 4)

    # features_only on a real input: feature_info's channels and strides
    extractor = FeatureExtractor(model).eval()
    assert _measured(extractor, model) == (model.feature_info.channels(), model.feature_info.reductions())
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(extractor(x), maps))


def test_features_only_extractor_holds_the_backbone_without_its_head_and_the_same_maps():
    torch.manual_seed(0)
    model = create_model("resnet_cifar20").eval()
    keys = {k for k in model.state_dict() if not k.startswith("fc.")}
    x = _input(model)
    with torch.no_grad():
        want = model.feature_maps(x, (1, 3))
    extractor = create_model("resnet_cifar20", features_only=True, out_indices=(1, -1)).eval()
    assert set(extractor.state_dict()) == keys and isinstance(extractor, FeatureExtractor)
    extractor.load_state_dict({k: v for k, v in model.state_dict().items() if k in keys})
    with torch.no_grad():
        got = extractor(x)
    assert len(got) == 2 and all(torch.equal(a, b) for a, b in zip(got, want))
    assert extractor.feature_info.channels() == [16, 64] and extractor.feature_info.reductions() == [1, 4]

    vit = create_model("vit_tiny_mnist", features_only=True, out_indices=(-1,)).double()  # own parameters follow
    assert "cls_token" in vit.state_dict() and vit.model.cls_token is vit.cls_token
    assert vit(torch.zeros(1, 1, 28, 28, dtype=torch.float64))[0].shape == (1, 64, 4, 4)


def test_bad_out_indices_and_non_backbones_are_refused_with_the_valid_range():
    with pytest.raises(ConfigError, match=r"out_indices \[4\].*0\.\.3 \(or -4\.\.-1\)"):
        create_model("resnet_cifar20", features_only=True, out_indices=(4,))
    with pytest.raises(ConfigError, match="name a stage twice"):
        create_model("resnet_cifar20", features_only=True, out_indices=(1, -3))
    with pytest.raises(ConfigError, match="pass features_only=True"):
        create_model("resnet_cifar20", out_indices=(1,))
    with pytest.raises(ConfigError, match="'unet_tiny' is a UNet"):
        create_model("unet_tiny", features_only=True)
    with pytest.raises(ConfigError, match="integer >= 0"):
        create_model("lenet5").reset_classifier(-1)


def test_googlenet_trains_its_auxiliary_heads_beside_the_contract():
    torch.manual_seed(0)
    model = create_model("inception_v1", **SMALL["inception_v1"], dropout=0.0, aux_dropout=0.0).train()
    x = _input(model, 64)
    main, aux = model(x)
    assert torch.equal(main, model.forward_head(model.forward_features(x))) and aux.shape == main.shape
    assert model.feature_info.reductions() == [2, 4, 8, 16] and model.feature_info.module_names()[-1] == (
        "blocks.inception4a")
