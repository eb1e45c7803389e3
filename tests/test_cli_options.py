"""Every option value is type- and range-checked before anything runs, with one line saying what was wrong, what
was expected and how to fix it; the Python API refuses the same values with the same messages."""

import io
import sys

import pytest
import torch
from torch import nn

from dlkit.cli import main
from dlkit.errors import ConfigError
from dlkit.recipes import get_recipe, list_recipes, make_config, parse_value, run_recipe
from dlkit.recipes.options import OPTION_RULES, PROBABILITY, Rule


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("recipe,text,message", [
    ("mlp-digits", "lr=@", "'@' is not a valid value"),
    ("mlp-digits", "lr=*a", "'*a' is not a valid value"),
    ("mlp-digits", "lr=", "cannot be empty or null"),
    ("mlp-digits", "lr=null", "cannot be empty or null"),
    ("mlp-digits", "lr=inf", "expected a finite number"),
    ("mlp-digits", "lr=-1", "expected a finite number > 0 (a learning rate); got '-1' (default: 0.002)"),
    ("mlp-digits", "weight_decay=-1", "expected a finite number >= 0"),
    ("mlp-digits", "threads=abc", "expected an integer or null"),
    ("mlp-digits", "ema_decay=[0]", "expected a number or null"),
    ("mlp-digits", "max_steps=[-1]", "expected an integer or null"),
    ("mlp-digits", "hidden=none", "expected a list of integers"),
    ("mlp-digits", "hidden=[none]", "expected a list of integers"),
    ("mlp-digits", "hidden=[64, 0]", "each element to be a whole number >= 1"),
    ("mlp-xor", "hidden=0", "expected a whole number >= 1"),
    ("mlp-digits", "dropout=2", "expected a finite number >= 0 and < 1 (a probability"),
    ("mlp-digits", "dropout=nan", "expected a finite number"),
    ("mlp-digits", "momentum=-1", ">= 0 and < 1"),
    ("mlp-digits", "batch_size=1000000000000000000000000000000", "<= 2147483647"),
    ("mlp-digits", "batch_size=true", "expected an integer"),
    ("mlp-digits", "hidden=[" + "9" * 400 + "]", "each element to be a whole number >= 1"),
    ("mlp-digits", "lr=" + "9" * 400, "expected a finite number"),
    ("lenet5-mnist", "model=lenet", "registered names (see `dlkit list models`); got 'lenet'"),
    ("lenet5-mnist", "model=lenet", "Did you mean: lenet5"),
    ("mlp-digits", "subset=-5", "expected a whole number >= 0"),
    ("mlp-digits", "optimizer=adamm", "expected one of adagrad, adam, adamw"),
    ("mlp-digits", "schedule=[cosine]", "expected a string"),
    ("mlp-digits", "log_every=0", "log_every must be a positive whole number"),
    ("mlp-digits", "eval_every=0", "'eval_every' is not an option of recipe 'mlp-digits'"),
    ("mlp-digits", "grad_clip_norm=-1", "grad_clip_norm must be a positive number or null"),
    ("mlp-digits", "grad_clip_value=-0.5", "grad_clip_value must be a positive number or null"),
    ("mlp-digits", "keep_checkpoints=-1", "keep_checkpoints must be a whole number >= 1"),
    ("mlp-digits", "early_stopping_patience=1.5", "expected an integer or null"),
    ("mlp-digits", "early_stopping_patience=-1", "early_stopping_patience must be a positive whole number"),
    ("mlp-digits", "monitor=loss", "monitor must name a logged metric as SPLIT/NAME"),
    ("mlp-digits", "max_steps=0", "max_steps must be a positive whole number"),
    ("mlp-digits", "epochs=2147483648", "epochs must be a positive whole number (at most 2147483647)"),
    ("mlp-digits", "seed=4294967296", "expected a whole number >= 0 and <= 4294967295"),
    ("mlp-digits", "seed=-1", "(a random seed)"),
    ("mlp-digits", "device=gpu", "device must be cpu, cuda or cuda:N"),
    ("mlp-digits", "device=cuda:²", "device must be cpu, cuda or cuda:N"),
    ("mlp-digits", "bf16=maybe", "bf16 must be true, false or auto"),
    ("perceptron-nand", "rules=[0, 0]", "expected each element to be one of hebbian, perceptron"),
    ("perceptron-nand", "rules=[[a]]", "expected a list of strings"),
    ("perceptron-nand", "convention=-1", "expected one of 01, pm1"),
    ("optimizer-paths-2d", "steps=[]", "expected a mapping"),
    ("optimizer-paths-2d", "steps={canyon: 5}", "a mapping {canyon: N, rosenbrock: N}"),
    ("backprop-vanishing-gradient", "inits=2001-01-01", "expected each element to be one of glorot,"),
    ("backprop-vanishing-gradient", "inits=2001-13-45", "'2001-13-45' is not a valid value"),
    ("backprop-vanishing-gradient", "depth=1000000000000000000000000000000", "<= 2147483647"),
])
def test_a_bad_option_value_is_refused_with_one_line_before_anything_runs(capsys, tmp_path, recipe, text, message):
    code, _, err = run(capsys, "run", recipe, "--smoke", "--set", text, "--out", str(tmp_path / "r"))
    assert code == 2 and err.startswith("dlkit: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "--epochs expects a whole number from 1 to 2147483647; got 0"),
    (["--epochs", "-3"], "--epochs expects a whole number from 1 to 2147483647; got -3"),
    (["--seed", str(2**64)], "--seed expects a whole number from 0 to 4294967295"),
    (["--seed", "-1"], "--seed expects a whole number from 0"),
    (["--device", "gpu"], "device must be cpu, cuda or cuda:N"),
    (["--epochs", "abc"], "argument --epochs: invalid int value: 'abc'; see `dlkit run --help`"),
    (["--set", " =1"], "--set expects key=value items"),
    (["--set", "seed=2", "--seed", "1"], "seed is given twice, as --seed and as --set seed"),
])
def test_bad_run_flags_are_refused_with_one_line(capsys, tmp_path, args, message):
    try:
        code, _, err = run(capsys, "run", "mlp-digits", "--smoke", "--out", str(tmp_path / "r"), *args)
    except SystemExit as e:  # argparse's usage errors
        code, err = e.code, capsys.readouterr().err
    assert code == 2 and err.startswith("dlkit: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_a_gpu_device_without_a_gpu_is_refused_before_the_run_folder(capsys, tmp_path):
    code, _, err = run(capsys, "run", "mlp-digits", "--smoke", "--device", "cuda:1", "--out", str(tmp_path / "r"))
    assert code == 2 and "no CUDA GPU visible; use --device cpu" in err and not (tmp_path / "r").exists()


def test_usage_errors_of_argparse_are_one_line_too(capsys):
    for argv in (["run"], ["nope"], ["list", "things"], ["run", "mlp-xor", "--bogus"], ["verify", "--device", "x"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("dlkit: error: ") and err.count("\n") == 1, (argv, err)
        assert "--help`" in err


def test_the_python_api_refuses_the_same_values_with_the_same_messages(capsys, tmp_path):
    recipe = get_recipe("mlp-digits")
    with pytest.raises(ConfigError) as api:
        make_config(recipe, {"dropout": "2"})  # the text the command line passes
    code, _, err = run(capsys, "run", "mlp-digits", "--set", "dropout=2", "--out", str(tmp_path / "r"))
    assert code == 2 and err.strip() == f"dlkit: error: {api.value}"
    for overrides, message in (({"lr": float("inf")}, "a finite number"), ({"hidden": [True]}, "list of integers"),
                               ({"seed": 2**64}, "a random seed"), ({"grad_clip_value": -1.0}, "grad_clip_value")):
        with pytest.raises(ConfigError, match=message):
            run_recipe("mlp-digits", overrides=overrides, out=tmp_path / "api", smoke=True)
    assert not (tmp_path / "api").exists()


def test_rules_against_hand_checked_values():
    assert PROBABILITY.allows(0.0) and PROBABILITY.allows(0.999) and not PROBABILITY.allows(1.0)
    assert not PROBABILITY.allows(float("nan")) and not PROBABILITY.allows(True) and not PROBABILITY.allows("0.5")
    whole = Rule(1, 10, whole=True)
    assert whole.allows(10) and whole.allows([1, 2]) and not whole.allows(2.5) and not whole.allows([1, 0])
    assert whole.describe() == "a whole number >= 1 and <= 10"
    steps = OPTION_RULES["steps"]
    assert steps.allows({"canyon": 1, "rosenbrock": 2}) and not steps.allows({"canyon": 1})
    assert not steps.allows({"canyon": 1, "rosenbrock": 2, "x": 3}) and not steps.allows([1, 2])
    assert parse_value("lr", "3e-3", "float") == 0.003 and parse_value("hidden", "[64.0]", "list[int]") == [64]
    assert parse_value("threads", "None", "int | None") is None


def test_every_recipe_default_and_smoke_value_satisfies_the_rules():
    """The rule table agrees with what the recipes declare; a rule names an option that exists."""
    names = set()
    for name in list_recipes():
        r = get_recipe(name)
        types, options = r.option_types(), r.options()
        names |= set(options)
        for key, value in {**options, **r.smoke}.items():
            assert parse_value(key, value, types[key]) == value or isinstance(value, tuple), (name, key)
    assert set(OPTION_RULES) <= names, set(OPTION_RULES) - names


def test_show_lists_element_types_of_list_options(capsys):
    code, out, _ = run(capsys, "show", "mlp-digits")
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert code == 0 and "list[int]" in lines["hidden"] and "[128, 64]" in lines["hidden"]


@pytest.mark.parametrize("shape,message", [
    ("0,28,28", "has a dimension outside 1..2147483647 (0)"),
    ("1,-28,28", "has a dimension outside 1..2147483647 (-28)"),
    ("1,99999999999999999999,1", "has a dimension outside 1..2147483647"),
    ("1,2147483647,2147483647", "more than a tensor can hold"),
    ("1,28.5,28", "--input-shape expects whole numbers like 3,224,224"),
    (",", "the input shape has no dimensions"),
    ("3,28,28", "LeNet5 cannot take an input of shape 3x28x28"),
    ("1,100000,100000", "LeNet5 cannot take an input of shape 1x100000x100000"),
])
def test_summary_refuses_shapes_with_one_line(capsys, shape, message):
    code, _, err = run(capsys, "summary", "lenet5", "--input-shape", shape)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_summary_estimates_activation_memory_before_allocating(capsys, monkeypatch):
    import dlkit.report.summary as summary

    # input 4 floats (16 bytes) + Linear's 3 outputs (12) + ReLU's 3 outputs (12) = 40 bytes, on the meta device
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    assert summary.activation_bytes(model, (torch.zeros(1, 4),)) == 40
    assert all(p.device.type == "cpu" for p in model.parameters())  # the model itself stays where it was
    # resnet18 at 3x20000x20000: the first convolution's output alone is 64 x 10000 x 10000 floats = 23.8 GiB
    code, _, err = run(capsys, "summary", "resnet18", "--input-shape", "3,20000,20000")
    assert code == 2 and err.count("\n") == 1 and "use a smaller --input-shape" in err and "GiB" in err
    monkeypatch.setattr(summary, "available_memory", lambda: 1000)
    code, _, err = run(capsys, "summary", "lenet5")
    assert code == 2 and "more than half of the" in err
    monkeypatch.undo()
    code, out, _ = run(capsys, "summary", "lenet5")
    assert code == 0 and "61,706 parameters" in out


def test_an_allocation_failure_is_one_line_and_other_runtime_errors_are_not_hidden(capsys, monkeypatch):
    import dlkit.cli

    def alloc_fails(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 4398046511104 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(dlkit.cli, "cmd_show", alloc_fails)
    code, _, err = run(capsys, "show", "mlp-xor")
    assert code == 2 and err.startswith("dlkit: error: out of memory") and err.count("\n") == 1
    monkeypatch.setattr(dlkit.cli, "cmd_show", lambda args: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["show", "mlp-xor"])


def test_debug_still_shows_the_traceback_of_an_option_error():
    err, sys.stderr = sys.stderr, io.StringIO()
    try:
        with pytest.raises(ConfigError, match="dropout"):
            main(["--debug", "run", "mlp-digits", "--set", "dropout=2"])
    finally:
        sys.stderr = err


def test_a_set_key_given_twice_takes_its_last_value_and_keys_are_stripped():
    from dlkit.cli import _parse_sets

    assert _parse_sets(["lr=1", " lr =2", "hidden=[1, 2]"]) == {"lr": "2", "hidden": "[1, 2]"}


@pytest.mark.parametrize("args, message", [
    (["perceptron-nand", "--set", "rules=[]"], "--set rules: expected a list of at least one element; got an empty"),
    (["gd-batch-sizes", "--set", "modes=[]"], "--set modes: expected a list of at least one element"),
    (["ssd-shapes", "--smoke", "--set", "scene={foo: 1}"],
     "recipe 'ssd-shapes': shapes_scene() got an unexpected keyword argument 'foo'; check the keys of scene"),
])
def test_an_empty_list_to_compare_or_an_unknown_key_of_a_dict_option_is_one_line(capsys, tmp_path, args, message):
    code, _, err = run(capsys, "run", *args, "--out", str(tmp_path / "run"))
    assert code == 2 and message in err and "Traceback" not in err


def test_perceptron_rules_learn_the_gates_in_the_plus_minus_one_convention(tmp_path):
    summary = run_recipe("perceptron-nand", overrides={"convention": "pm1"}, out=tmp_path / "run", report=False)
    assert summary["value"] == 1.0 and summary["metrics"]["and/perceptron/accuracy"] == 1.0


@pytest.mark.parametrize("recipe, fixed", [("fcn8s-camvid", "num_classes=11"), ("ssd-shapes", "num_classes=5"),
                                           ("vgg-tiny-fashion", "in_chans=1"), ("transformer-copy", "max_len=10"),
                                           ("vit-mnist", "dropout=0.0"), ("yolov3-shapes", "image_size=64")])
def test_model_kwargs_may_not_set_what_the_recipe_sets(capsys, tmp_path, recipe, fixed):
    key = fixed.split("=")[0]
    code, _, err = run(capsys, "run", recipe, "--smoke", "--set", f"model_kwargs={{{key}: 7}}", "--out",
                       str(tmp_path / "run"))
    assert code == 2 and "Traceback" not in err, err
    assert f"model_kwargs sets {key}, which the recipe sets from its data or options ({fixed}); remove it" in err


def test_elements_of_a_list_of_strings_stay_as_written():
    # YAML 1.1 reads 32:0.1 as the base-60 number 1920.1, and 0.10 as 0.1
    assert parse_value("modes", "32:0.1", "list[str]") == ["32:0.1"]
    assert parse_value("modes", "[full:0.5, 32:0.10, 1:1e-3]", "list[str]") == ["full:0.5", "32:0.10", "1:1e-3"]
    assert parse_value("optimizers", "sgd:0.1", "list[str]") == ["sgd:0.1"]


def test_malformed_or_colliding_batch_modes_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"modes: each entry is 'B:lr'.*got 'full:0.5,32:0.1'"):
        run_recipe("gd-batch-sizes", smoke=True, out=tmp_path / "a", overrides={"modes": "full:0.5,32:0.1"})
    with pytest.raises(ConfigError, match=r"one entry per kind of gradient descent.*\['mini-batch', 'mini-batch'\]"):
        run_recipe("gd-batch-sizes", smoke=True, out=tmp_path / "b", overrides={"modes": "[32:0.1, 64:0.1]"})
    run_recipe("gd-batch-sizes", smoke=True, out=tmp_path / "c", overrides={"modes": "32:0.1"})
    assert "mini-batch/test_accuracy" in (tmp_path / "c" / "summary.json").read_text()


@pytest.mark.parametrize("overrides", [{"activations": "[relu]", "inits": "[kaiming_normal]"},
                                       {"activations": "[sigmoid, relu, sigmoid]"},
                                       {"activations": "[sigmoid, relu]"}])
def test_vanishing_gradient_activations_must_pair_with_inits_once_each_with_sigmoid_and_relu(tmp_path, overrides):
    with pytest.raises(ConfigError, match="activations and inits pair up, one init per activation, each activation "
                                          "once"):
        run_recipe("backprop-vanishing-gradient", smoke=True, out=tmp_path, overrides=overrides)


def test_a_study_under_torchrun_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets in each process
    with pytest.raises(ConfigError, match="recipe 'perceptron-nand' is a study of several trainings, which runs in one "
                                          "process.*without torchrun"):
        run_recipe("perceptron-nand", smoke=True, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
