"""The contract of every registered model (in the style of timm's tests/test_models.py; DESIGN.md "Registries"):

- its trainable parameter count equals the published (or hand-derived) count of its metadata, the full-size models
  built on the meta device so that the test stays fast; a model with no such count is skipped and says so;
- its metadata input size is the model's own `default_input_shape`, and its task is a registered task;
- its factory's docstring cites the notes ("Notes: 002 §2.4");
- the small variants run forward and backward on a small input, and every parameter gets a gradient;
- every classification model is a Backbone and is one of those the feature contract test checks
  (tests/models/test_backbone_contract.py).
"""

from functools import cache

import pytest
import torch

from dlkit import create_model, list_models
from dlkit.models.backbone import Backbone
from dlkit.registry import MODELS, NOTES_SECTION, model_entrypoint, model_metadata
from dlkit.tasks import list_tasks

NAMES = list_models()
SMALL_PARAMS = 3_000_000  # forward and backward on a real input below this many parameters
# parameters the training loss leaves alone by design (a leaf name or a full name): ELMo's scalar mix (s, gamma) is
# trained by the downstream task; DETR's decoder starts from zeros, so its first self-attention's values are
# 0 W_V + b_V and W_V never gets a gradient (as in DETR's own code; MaskFormer's decoder is DETR's)
NOT_TRAINED_BY_THE_LOSS = {"elmo_small": {"mix_weights", "gamma"},
                           "detr_tiny": {"decoder.layers.0.self_attn.v_proj.weight"},
                           "maskformer_tiny": {"decoder.layers.0.self_attn.v_proj.weight"}}


@cache
def meta_model(name: str):
    with torch.device("meta"):
        return create_model(name)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_every_model_module_imports_and_the_registry_is_full():
    assert not MODELS.broken, MODELS.broken
    assert len(NAMES) >= 99


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_equals_the_published_or_hand_derived_count(name):
    meta = model_metadata(name)
    if meta["num_params"] is None:
        pytest.skip(f"{name}: no published or hand-derived parameter count in its metadata")
    assert meta["params_source"]
    assert trainable(meta_model(name)) == meta["num_params"], meta["params_source"]


@pytest.mark.parametrize("name", NAMES)
def test_metadata_input_size_task_and_notes(name):
    meta = model_metadata(name)
    model = meta_model(name)
    assert meta["input_size"] == getattr(model, "default_input_shape", None)
    assert meta["task"] in list_tasks()
    assert meta["family"] == model_entrypoint(name).__module__.rsplit(".", 1)[-1]
    doc = model_entrypoint(name).__doc__ or ""
    assert NOTES_SECTION.search(" ".join(doc.split())), f"{name}'s docstring cites no 'Notes: NNN §x.y'"
    assert meta["section"] and meta["section"][:3] in {"000", "001", "002", "003", "004"}


def _tokens(n: int, t: int, high: int = 10) -> torch.Tensor:
    return torch.randint(0, high, (n, t), generator=torch.Generator().manual_seed(0))


def training_loss(name: str, model) -> torch.Tensor:
    """A scalar whose gradient reaches every parameter the model's training objective trains."""
    kind = type(model).__name__
    if kind == "Word2Vec":  # output vectors start at zero (Mikolov et al.), so the input vectors' first gradient is 0
        with torch.no_grad():
            model.out_embed.weight.normal_(0, 0.1)
        inputs = _tokens(4, 2)[:, 0] if model.mode == "skipgram" else _tokens(4, 2)
        return model(inputs, _tokens(4, 1)[:, 0] + 1, _tokens(4, model.num_negatives) + 2)
    if kind == "ELMo":
        return model.lm_loss(_tokens(2, 6))
    if model_metadata(name)["task"] == "detection":  # the detection contract: images and targets give a loss dict
        chans, h, w = model_metadata(name)["input_size"]
        # objects of eight sizes at three centres (a cell centre of the 4 x 4 map, one of the 8 x 8 map, the image
        # centre), so that every scale's head has positives; a localiser takes exactly one object
        sizes = [0.6] if kind == "Localiser" else [0.06, 0.1, 0.16, 0.25, 0.35, 0.45, 0.6, 0.9]
        shapes = [(0.5, s) for s in sizes] if kind == "Localiser" else [
            (c, s) for s in sizes for c in (0.375, 0.4375, 0.5) if s / 2 <= c]
        boxes = torch.tensor([[(c - s / 2) * w, (c - s / 2) * h, (c + s / 2) * w, (c + s / 2) * h] for c, s in shapes])
        target = {"boxes": boxes, "labels": torch.ones(len(shapes), dtype=torch.long)}
        if getattr(model, "needs_masks", False):  # instance segmentation: each object's mask fills its box
            target["masks"] = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
            for m, (x1, y1, x2, y2) in zip(target["masks"], boxes.round().long().tolist()):
                m[y1:y2, x1:x2] = 1
        if getattr(model, "needs_semantic", False):  # panoptic: class 0 (things) on the objects, 1 (stuff) elsewhere
            target["semantic"] = (target["masks"].sum(0) == 0).long()
        images = torch.rand(2, chans, h, w, generator=torch.Generator().manual_seed(0))
        return sum(model(images, [target, target]).values())
    if kind in ("Seq2Seq", "Transformer"):
        out = model(_tokens(2, 6), _tokens(2, 5))
    elif getattr(model, "default_input_shape", None) is None:  # a language model over token ids
        out = model(_tokens(2, 6))
    else:
        out = model(torch.randn(2, *model.default_input_shape, generator=torch.Generator().manual_seed(0)))
    outs = out if isinstance(out, tuple | list) else (out,)
    return sum(o.float().square().mean() for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point())


SMALL = [n for n in NAMES if trainable(meta_model(n)) < SMALL_PARAMS]


@pytest.mark.parametrize("name", SMALL)
def test_small_models_run_forward_and_backward_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    loss = training_loss(name, model)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    skip = NOT_TRAINED_BY_THE_LOSS.get(name, set())
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and not {n, n.rsplit(".", 1)[-1]} & skip and (p.grad is None or not p.grad.any())]
    assert not missing, missing


def test_the_small_set_covers_every_family_with_a_small_variant():
    families = {model_metadata(n)["family"] for n in SMALL}
    assert {"resnet", "vgg", "googlenet", "efficientnet", "mobilenet", "regnet", "vit", "unet", "deeplab", "fcn",
            "gpt", "char_rnn", "seq2seq", "transformer", "word2vec", "elmo", "lenet", "mlp"} <= families


def test_every_classification_model_is_a_backbone_under_the_feature_contract_test():
    classifiers = list_models(task="classification")
    # the feature contract test's selection: every factory of dlkit.models.classification
    package = "dlkit.models.classification."
    assert classifiers == [n for n in NAMES if model_entrypoint(n).__module__.startswith(package)]
    assert all(isinstance(meta_model(n), Backbone) for n in classifiers)
    assert not any(isinstance(meta_model(n), Backbone) for n in set(NAMES) - set(classifiers))
