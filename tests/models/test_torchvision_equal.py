"""dlkit's architectures equal torchvision's: copy a torchvision model's (random) weights into the dlkit model with
`load_torchvision_state_dict` and require equal outputs in eval mode (float64, max |difference| <= 1e-5).

Every tensor is random: torchvision's own initialisation for the weights, and every tensor it initialises to a
constant (biases, BN gamma and beta, BN running statistics, ViT's class token) redrawn, so a swapped bias or
BN statistic would show. Where dlkit's layout differs by design (the notes' version), the test says so and
compares what is comparable.
"""

import itertools

import pytest
import torch
from torch import nn

torchvision = pytest.importorskip("torchvision")

from dlkit.errors import CheckpointError, ConfigError  # noqa: E402
from dlkit.models.torchvision_weights import load_torchvision_state_dict  # noqa: E402
from dlkit.models.weights_file import load_weights_file  # noqa: E402
from dlkit.registry import create_model  # noqa: E402

TOL = 1e-5  # float64


@torch.no_grad()
def _randomise_constants_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Redraw every floating tensor that holds one constant value: ones (BN/LN gamma, running_var) from U(0.5, 1.5),
    other constants (biases, beta, running_mean, class token) from N(0, 0.1^2)."""
    gen = torch.Generator().manual_seed(seed)
    for _, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        if not t.is_floating_point() or t.numel() == 0 or not torch.all(t == t.flatten()[0]):
            continue
        if t.flatten()[0] == 1:
            t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) + 0.5)
        else:
            t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * 0.1)
    return model


def _pair(tv_name: str, tv_kw: dict | None = None, dl_kw: dict | None = None, prepare=None):
    """(torchvision model, dlkit model) in float64 eval mode, the dlkit model holding torchvision's weights.

    The dlkit model is built on the meta device and takes torchvision's tensors (`assign=True`), which skips its
    own initialisation (seconds for VGG's 120M dense weights); `prepare(tv)` edits torchvision's model first.
    """
    torch.manual_seed(0)
    tv = torchvision.models.get_model(tv_name, weights=None, **(tv_kw or {}))
    tv = _randomise_constants_(tv).double().eval()
    if prepare is not None:
        with torch.no_grad():
            prepare(tv)
    with torch.device("meta"):
        dl = create_model(tv_name, **(dl_kw or {}))
    load_torchvision_state_dict(dl, tv.state_dict(), assign=True)
    assert all(t.device.type == "cpu" for t in itertools.chain(dl.parameters(), dl.buffers()))
    return tv, dl.eval()


def _image(size: int = 64) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _assert_equal(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| <= 1e-5, and <= 1e-5 max |want| where the outputs are smaller than 1."""
    assert got.shape == want.shape
    scale = want.abs().max().item()
    assert scale > 1e-3  # not a trivially zero output
    diff = (got - want).abs().max().item()
    assert diff <= TOL * min(1.0, scale), f"max |dlkit - torchvision| = {diff:.3e} (outputs up to {scale:.3g})"
    return diff


# (torchvision name, torchvision kwargs, dlkit kwargs): the same architecture, same layout
SAME_LAYOUT = [
    ("alexnet", {}, {}),
    ("vgg11", {}, {}),
    ("vgg16_bn", {}, {}),
    ("resnet18", {}, {}),
    ("resnet50", {}, {}),
    ("resnext50_32x4d", {}, {}),
    ("wide_resnet50_2", {}, {}),
    ("mobilenet_v2", {}, {}),
    # torchvision's B0-B4 use BatchNorm's defaults (eps 1e-5, momentum 0.1); dlkit's default is the paper's
    # TensorFlow eps 1e-3, momentum 0.01 (Notes: 002 §2.7), so the comparison builds dlkit's with torchvision's
    ("efficientnet_b0", {}, {"bn_eps": 1e-5, "bn_momentum": 0.1}),
    ("regnet_x_400mf", {}, {}),
    ("regnet_y_400mf", {}, {}),
]


@pytest.mark.parametrize("name,tv_kw,dl_kw", SAME_LAYOUT, ids=[row[0] for row in SAME_LAYOUT])
def test_classifier_logits_equal_torchvision(name, tv_kw, dl_kw):
    tv, dl = _pair(name, tv_kw, dl_kw=dl_kw)
    x = _image()
    with torch.no_grad():
        _assert_equal(dl(x), tv(x))


def test_vit_b_16_logits_equal_torchvision():
    """ViT-B/16 at 32 x 32 (2 x 2 patches + [CLS]; both take the image size as an argument): the fused Q/K/V
    projection of torch's MultiheadAttention is split into dlkit's q/k/v projections."""
    tv, dl = _pair("vit_b_16", {"image_size": 32}, dl_kw={"img_size": 32})
    x = _image(32)
    with torch.no_grad():
        _assert_equal(dl(x), tv(x))


def test_deeplabv3_resnet50_scores_equal_torchvision():
    """DeepLab v3 with ResNet-50 at output stride 8 and the auxiliary FCN head: both outputs equal. (dlkit's ASPP
    dropout is 0.1 as in the official code, torchvision's 0.5: no difference in eval mode.)"""
    tv, dl = _pair("deeplabv3_resnet50", {"aux_loss": True, "weights_backbone": None}, dl_kw={"aux": True})
    x = _image()
    with torch.no_grad():
        want, got = tv(x), dl.forward_maps(x)
    _assert_equal(got["out"], want["out"])
    _assert_equal(got["aux"], want["aux"])


def test_googlenet_equal_torchvision_except_the_pool_before_5a():
    """dlkit's GoogLeNet uses the paper's 3x3/2 max-pool before Inception 5a (Table 1; Notes: 002 §2.1), torchvision
    a 2x2/2 one (same 7x7 map at 224, different values). Compared: the features up to Inception 4e, the auxiliary
    heads on the same features, and the logits once dlkit's pool is swapped for torchvision's."""
    # torchvision initialises fc with std 0.01, which makes logits of ~0.05: a unit-variance fc makes a 1e-5 check
    # meaningful (the paper's pool moves them by ~1e-3 then)
    tv, dl = _pair("googlenet", {"aux_logits": True, "init_weights": True, "transform_input": False},
                   prepare=lambda tv: tv.fc.weight.normal_(0.0, 1.0))
    x = _image()
    seen: dict[str, torch.Tensor] = {}
    hooks = [getattr(tv, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(f"tv{n}", o))
             for n in ("inception4a", "inception4d", "inception4e")]
    hooks += [dl.blocks[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(f"dl{n}", o))
              for n in ("inception4a", "inception4d", "inception4e")]
    with torch.no_grad():
        want, paper = tv(x), dl(x)
        for h in hooks:
            h.remove()
        _assert_equal(seen["dlinception4e"], seen["tvinception4e"])
        _assert_equal(dl.aux["inception4a"](seen["tvinception4a"]), tv.aux1(seen["tvinception4a"]))
        _assert_equal(dl.aux["inception4d"](seen["tvinception4d"]), tv.aux2(seen["tvinception4d"]))
        pools = [k for k in dl.blocks if k.startswith("maxpool")]
        paper_pool, tv_pool = dl.blocks[pools[-1]](seen["tvinception4e"]), tv.maxpool4(seen["tvinception4e"])
        assert paper_pool.shape == tv_pool.shape and (paper_pool - tv_pool).abs().max() > 1e-2
        assert (paper - want).abs().max() > 1e-4  # so the logits differ too
        dl.blocks[pools[-1]] = nn.MaxPool2d(2, stride=2, ceil_mode=True)  # torchvision's maxpool4
        _assert_equal(dl(x), want)


def test_loader_rejects_a_checkpoint_of_another_architecture():
    torch.manual_seed(0)
    state = torchvision.models.resnet50(weights=None).state_dict()
    with pytest.raises(CheckpointError, match=r"'layer1\.0\.conv1\.weight' has shape \(64, 64, 1, 1\) but ResNet's "
                                              r"'stages\.0\.0\.conv1\.0\.weight' has \(64, 64, 3, 3\)"):
        load_torchvision_state_dict(create_model("resnet18"), state)
    state = torchvision.models.resnet34(weights=None).state_dict()
    with pytest.raises(CheckpointError, match=r"'layer1\.2\.conv1\.weight' has no place in ResNet; .*architecture"):
        load_torchvision_state_dict(create_model("resnet18"), state)
    with pytest.raises(CheckpointError, match=r"'classifier\.0\.convs\.0\.0\.weight' has no place in ResNet"):
        load_torchvision_state_dict(create_model("resnet18"), {"classifier.0.convs.0.0.weight": torch.zeros(1)})


def test_loader_rejects_a_shape_mismatch_and_missing_keys_with_one_line():
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(CheckpointError, match=r"'fc\.weight' has shape \(1000, 512\) but .* \(10, 512\)") as err:
        load_torchvision_state_dict(create_model("resnet18", num_classes=10), state)
    assert "\n" not in str(err.value)
    del state["layer4.1.bn2.running_var"]
    with pytest.raises(CheckpointError, match=r"no value for 1 of ResNet's tensors, e\.g\. 'stages\.3\.1\.conv2\.1"):
        load_torchvision_state_dict(create_model("resnet18"), state)


def test_loader_names_the_families_it_knows_for_an_unknown_one():
    with pytest.raises(ConfigError, match="no torchvision key table for DeepLabV3Plus; .*ResNet"):
        load_torchvision_state_dict(create_model("deeplabv3plus_tiny"), {})


def test_a_checkpoint_file_on_disk_loads_with_weights_only(tmp_path):
    """The README's recipe: torch.save of a torchvision state dict, load_weights_file (weights_only), the loader."""
    torch.manual_seed(0)
    tv = _randomise_constants_(torchvision.models.resnet18(weights=None))
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    dl = load_torchvision_state_dict(create_model("resnet18"), load_weights_file(path))
    assert torch.equal(dl.fc.weight, tv.fc.weight)
    assert torch.equal(dl.stages[3][1].conv2[1].running_var, tv.layer4[1].bn2.running_var)
