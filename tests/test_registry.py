"""The generic Registry (models, recipes, tasks): metadata filters, broken modules named, bare and keyword
`@register_model`, and the recipe and task registries built on it (DESIGN.md "Registries and names")."""

import sys
import textwrap

import pytest
import torch

from dlkit import list_models, list_recipes
from dlkit.errors import ConfigError, UnknownNameError
from dlkit.recipes import get_recipe
from dlkit.registry import MODELS, Registry, create_model, model_metadata, notes_section, register_model
from dlkit.tasks import get_task, list_tasks


def _package(tmp_path, monkeypatch, name: str, modules: dict[str, str]) -> Registry:
    """A throw-away package `name` with `modules` that register into the returned registry."""
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for mod, body in modules.items():
        (pkg / f"{mod}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("widget", name, "list widgets", fields=("colour", "tags"))
    monkeypatch.setitem(sys.modules, "widget_registry", type(sys)("widget_registry"))
    sys.modules["widget_registry"].REG = registry
    return registry


def test_a_broken_module_is_named_and_the_others_are_still_listed(tmp_path, monkeypatch):
    reg = _package(tmp_path, monkeypatch, "widgets_a", {
        "good": "from widget_registry import REG\nREG.register('blue_one', object(), colour='blue', tags=('x',))\n"
                "REG.register('red_one', object(), colour='red', tags=())\n",
        "bad": "from widget_registry import REG\nREG.register('lost', object())\nraise RuntimeError('oops here')\n",
    })
    with pytest.warns(RuntimeWarning, match=r"widget module widgets_a\.bad failed to import \(RuntimeError: oops "
                                            r"here\)"):
        names = reg.list()
    assert "blue_one" in names and "red_one" in names
    assert reg.broken == {"widgets_a.bad": "RuntimeError: oops here"}
    with pytest.raises(UnknownNameError, match=r"unknown widget 'missing'.*failed to import.*widgets_a\.bad"):
        reg.get("missing")


def test_filters_match_values_tuples_and_presence(tmp_path, monkeypatch):
    reg = _package(tmp_path, monkeypatch, "widgets_b", {
        "good": "from widget_registry import REG\nREG.register('blue_one', 1, colour='blue', tags=('x', 'y'))\n"
                "REG.register('blue_two', 2, colour='blue')\nREG.register('red_one', 3, colour='red', tags=('y',))\n",
    })
    assert reg.list(colour="blue") == ["blue_one", "blue_two"]
    assert reg.list("*_one", tags="y") == ["blue_one", "red_one"]
    assert reg.list(tags=True) == ["blue_one", "red_one"] and reg.list(tags=False) == ["blue_two"]
    assert reg.list(colour=None) == ["blue_one", "blue_two", "red_one"]
    assert reg.get("blue_two").meta == {"colour": "blue", "tags": None}
    with pytest.raises(ConfigError, match=r"cannot filter widgets by \['size'\]; expected metadata keys "
                                          r"\['colour', 'tags'\]"):
        reg.list(size=3)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("red_one", 4)
    with pytest.raises(ValueError, match="unknown metadata"):
        reg.register("green", 5, shade="dark")


def test_list_models_filters_by_task_family_and_pretrained():
    resnets = list_models("resnet*", task="classification")
    assert "resnet18" in resnets and "resnet_cifar20" in resnets
    assert all(model_metadata(n)["task"] == "classification" for n in resnets)
    seg = list_models(task="segmentation")
    assert {"unet", "deeplabv3_resnet50", "fcn8s_vgg16"} <= set(seg) and not set(seg) & set(resnets)
    assert list_models(family="vit") == ["vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "vit_tiny_mnist"]
    assert list_models("resnet*", task="classification", pretrained=True) == []
    with_weights, without = list_models(pretrained=True), list_models(pretrained=False)
    assert with_weights == ["efficientnet_lite0"] and len(with_weights) + len(without) == len(list_models())
    assert list_models("gpt*", task="segmentation") == []


def test_bare_and_keyword_register_model_infer_task_family_and_notes(monkeypatch):
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))  # the registrations below do not outlive the test

    def tiny_widget_net(**kw):
        """A test network. Notes: 003 §3.3.2."""

    def other_widget_net(**kw):
        """Another test network, no citation."""

    tiny_widget_net.__module__ = other_widget_net.__module__ = "dlkit.models.classification.widgets"
    assert register_model(tiny_widget_net) is tiny_widget_net
    register_model(num_params=7, params_source="by hand", input_size=(1, 4, 4))(other_widget_net)
    assert model_metadata("tiny_widget_net") == {
        "family": "widgets", "task": "classification", "section": "003 §3.3.2", "input_size": None,
        "num_params": None, "params_source": None, "weights": (), "pretrained": ()}
    meta = model_metadata("other_widget_net")
    assert (meta["section"], meta["num_params"], meta["input_size"]) == (None, 7, (1, 4, 4))
    with pytest.raises(ValueError, match="needs params_source"):
        register_model(num_params=3)(tiny_widget_net)
    other_widget_net.__module__ = "dlkit.models.sequence.widgets"
    with pytest.raises(ValueError, match="pass task="):
        register_model(other_widget_net)


def test_notes_sections_are_read_from_docstrings():
    assert notes_section("ResNet-18. Notes: 002 §2.2.1.") == "002 §2.2.1"
    assert notes_section("GPT-2 XL: 48 layers.\n    Notes: 004 GPT.") == "004 GPT"
    assert notes_section("cites (003 §3.2.5) but not as Notes") is None and notes_section(None) is None


def test_recipes_and_tasks_are_registries_with_metadata():
    seg = list_recipes(task="segmentation")
    assert "fcn8s-lite0-camvid" in seg and all(get_recipe(n).task == "segmentation" for n in seg)
    assert set(list_recipes(study=True)) == {n for n in list_recipes() if get_recipe(n).study}
    from dlkit.engine.task import Task
    from dlkit.tasks.classification import ClassificationTask

    assert get_task("classification") is ClassificationTask and issubclass(get_task("seq2seq"), Task)
    from dlkit.tasks.panoptic import MaskFormerPanopticTask
    from dlkit.tasks.segmentation import SegmentationTask

    # a module with a variant registers the class the variant derives from; one with two unrelated tasks its TASK
    assert get_task("segmentation") is SegmentationTask and get_task("panoptic") is MaskFormerPanopticTask
    assert {"classification", "segmentation", "language_model", "masked_lm", "seq2seq", "embedding"} <= set(
        list_tasks())
    with pytest.raises(UnknownNameError, match="unknown task 'clasification'.*Did you mean: classification"):
        get_task("clasification")
    from dlkit.recipes.registry import RECIPES
    from dlkit.tasks import TASKS

    assert not RECIPES.broken and not TASKS.broken and not MODELS.broken  # a broken module would only warn


@pytest.mark.parametrize("name, kwargs, match", [
    ("lenet5", dict(num_classes=-1), r"num_classes must be a whole number >= 0 \(0: no classifier"),
    ("lenet5", dict(num_classes=3.0), "num_classes must be a whole number"),
    ("resnet_cifar20", dict(in_chans=0), "in_chans must be a whole number >= 1"),
    ("gpt_char_nano", dict(vocab_size=0), "vocab_size must be a whole number >= 1"),
    ("deeplabv3_tiny", dict(num_classes=0), "num_classes must be a whole number >= 1"),
    ("fcn8s_tiny", dict(num_classes=-3), "num_classes must be a whole number >= 1"),
    ("lenet5", dict(hiden=3), r"create_model\('lenet5', \.\.\.\): .*unexpected keyword argument 'hiden'"),
])
def test_create_model_refuses_bad_sizes_and_unknown_arguments_in_one_line(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_model(name, **kwargs)


def test_num_classes_0_is_a_classifier_without_its_last_layer():
    features = create_model("resnet18", num_classes=0).eval()
    assert features(torch.rand(1, 3, 64, 64)).shape == (1, 512)
