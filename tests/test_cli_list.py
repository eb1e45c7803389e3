"""`dlkit list models | recipes | tasks`: the models' metadata as a table, filters, one-line errors."""

import pytest

from dlkit.cli import main


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.strip().splitlines()
    return {line.split()[0]: line.split() for line in lines[1:] if not line.startswith("parameters: ")}


def test_models_table_shows_task_family_parameters_input_pretrained_and_notes(capsys):
    code, out, _ = run(capsys, "list", "models", "resnet1")
    assert code == 0 and out.splitlines()[0].split() == ["model", "task", "family", "parameters", "input",
                                                         "pretrained", "notes"]
    rows = _rows(out)
    assert set(rows) == {"resnet18", "resnet101", "resnet152", "deeplabv2_resnet101", "deeplabv3_resnet101",
                         "centernet_resnet18"}  # substring
    assert rows["resnet18"] == ["resnet18", "classification", "resnet", "11,689,512", "3x224x224", "-", "002",
                                "§2.2.1"]
    code, out, _ = run(capsys, "list", "models", "gpt_char_nano")
    assert _rows(out)["gpt_char_nano"][:5] == ["gpt_char_nano", "language_model", "gpt", "108,352", "-"]
    code, out, _ = run(capsys, "list", "models", "vit_tiny")
    assert _rows(out)["vit_tiny_mnist"][3:5] == ["-", "1x28x28"]  # no published count: a dash, and a footnote
    assert out.splitlines()[-1].startswith("parameters: the published or hand-derived count") and "dlkit summary" in out
    code, out, _ = run(capsys, "list", "models", "resnet18")
    assert "parameters: " not in out  # every count shown is published


def test_pretrained_and_task_filters(capsys):
    code, out, _ = run(capsys, "list", "models", "--pretrained")
    rows = _rows(out)
    assert code == 0 and list(rows) == ["efficientnet_lite0"] and rows["efficientnet_lite0"][5] == "imagenet"
    code, out, _ = run(capsys, "list", "models", "unet", "--task", "segmentation")
    assert list(_rows(out)) == ["unet", "unet_tiny"]
    code, out, _ = run(capsys, "list", "models", "resnet*", "--pretrained")
    assert code == 0 and out.strip() == "no model matches 'resnet*' with pretrained weights"
    code, out, _ = run(capsys, "list", "recipes", "--task", "segmentation")
    assert code == 0 and "unet-camvid" in out and "lenet5-mnist" not in out


def test_tasks_are_listed_and_pretrained_recipes_are_refused(capsys):
    code, out, _ = run(capsys, "list", "tasks")
    rows = _rows(out)
    assert code == 0 and rows["classification"][1] == "ClassificationTask" and "seq2seq" in rows
    code, _, err = run(capsys, "list", "recipes", "--pretrained")
    assert code == 2 and "dlkit list models --pretrained" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "list", "models", "--task", "segmentaton")
    assert code == 2 and "unknown task 'segmentaton'" in err and "Did you mean: segmentation" in err
    code, _, err = run(capsys, "list", "recipes", "--task", "optimization")
    assert code == 2 and "unknown recipe task 'optimization'" in err and "optimisation" in err


def test_model_patterns_ignore_case(capsys):
    from dlkit.registry import list_models

    assert list_models("RESNET1*") == list_models("resnet1*") and "resnet18" in list_models("ResNet1*")


def test_an_empty_recipe_list_says_so_as_the_model_list_does(capsys):
    code, out, _ = run(capsys, "list", "recipes", "zzz")
    assert code == 0 and out.strip() == "no recipe matches 'zzz'"
    code, out, _ = run(capsys, "list", "recipes", "unet", "--task", "detection")
    assert code == 0 and out.strip() == "no recipe matches 'unet' with task 'detection'"


def test_the_pattern_may_follow_the_task_option(capsys):
    code, out, _ = run(capsys, "list", "recipes", "--task", "segmentation", "unet")
    assert code == 0 and list(_rows(out)) == ["unet-camvid"]
    code, out, _ = run(capsys, "list", "models", "--task", "segmentation", "unet")
    assert code == 0 and list(_rows(out)) == ["unet", "unet_tiny"]
    with pytest.raises(SystemExit) as exit_info:  # two patterns: argparse's own one-line error
        run(capsys, "list", "recipes", "--task", "segmentation", "unet", "extra")
    assert exit_info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
