"""The `dlkit` command line: listing, one-line errors with exit code 2, summary, status, report, verify."""

import json
import re
from pathlib import Path

import pytest

from dlkit.cli import main
from dlkit.errors import ConfigError
from dlkit.recipes import get_recipe, make_config


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_models_and_recipes(capsys):
    code, out, _ = run(capsys, "list", "models")
    assert code == 0 and "lenet5" in out.split() and "mlp" in out.split()
    code, out, _ = run(capsys, "list", "recipes", "mnist")
    assert code == 0 and "lenet5-mnist" in out and "test/accuracy >= 0.99" in out and "mlp-digits" not in out


def test_unknown_recipe_suggests_nearest_names(capsys):
    code, _, err = run(capsys, "run", "lenet-mnist")
    assert code == 2 and "unknown recipe 'lenet-mnist'" in err and "lenet5-mnist" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unknown_model_suggests_nearest_names(capsys):
    code, _, err = run(capsys, "summary", "lenet")
    assert code == 2 and "Did you mean: lenet5" in err


def test_invalid_set_key_lists_valid_keys(capsys):
    code, _, err = run(capsys, "run", "mlp-digits", "--smoke", "--set", "learning_rate=0.1")
    assert code == 2 and "'learning_rate' is not an option" in err and "lr" in err and "batch_size" in err


def test_set_value_of_wrong_type_is_refused(capsys):
    code, _, err = run(capsys, "run", "mlp-digits", "--smoke", "--set", "batch_size=abc")
    assert code == 2 and "expected an integer" in err


def test_one_set_takes_several_items_and_a_bad_item_is_explained(capsys, tmp_path):
    code, _, _ = run(capsys, "run", "mlp-digits", "--smoke", "--set", "epochs=1", "batch_size=16",
                     "--out", str(tmp_path / "r"))
    config = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert code == 0 and config["epochs"] == 1 and config["batch_size"] == 16
    code, _, err = run(capsys, "run", "mlp-digits", "--smoke", "--set", "epochs=1", "oops")
    assert code == 2 and "key=value" in err and "'oops'" in err


def test_a_trainer_option_a_study_lacks_is_refused_before_it_runs(capsys, tmp_path):
    code, _, err = run(capsys, "run", "perceptron-nand", "--smoke", "--set", "lr=0.4", "channels_last=true",
                       "--out", str(tmp_path / "r"))
    assert code == 2 and "'channels_last' is a Trainer option" in err and "is a study" in err
    assert "Valid keys:" in err and "lr" in err and not (tmp_path / "r").exists()  # nothing written, nothing run
    code, _, err = run(capsys, "run", "perceptron-nand", "--smoke", "--epochs", "3", "--out", str(tmp_path / "r"))
    assert code == 2 and "'epochs' is a Trainer option" in err


def test_a_study_refuses_resume_with_one_line(capsys, tmp_path):
    code, _, _ = run(capsys, "run", "perceptron-nand", "--smoke", "--out", str(tmp_path / "r"))
    assert code == 0
    code, _, err = run(capsys, "run", "perceptron-nand", "--resume", str(tmp_path / "r"))
    assert code == 2 and "cannot be resumed" in err and err.count("\n") == 1


def test_a_study_runs_under_the_threads_option_and_restores_it(capsys, tmp_path):
    import torch

    before = torch.get_num_threads()
    code, _, _ = run(capsys, "run", "perceptron-nand", "--smoke", "--set", "threads=1", "--out", str(tmp_path / "r"))
    assert code == 0 and torch.get_num_threads() == before
    code, _, err = run(capsys, "run", "perceptron-nand", "--smoke", "--set", "threads=0", "--out", str(tmp_path / "s"))
    assert code == 2 and "threads must be a positive whole number" in err and "got 0" in err


def test_an_option_a_study_accepts_but_never_reads_is_reported(capsys, tmp_path):
    from dlkit.recipes import Config, Recipe, Study
    from dlkit.recipes.runner import _run_study

    recipe = Recipe(name="t", task="t", notes="", description="", build=None, metric="m", threshold=0.0,
                    study=True, defaults=dict(lr=0.1, momentum=0.0))
    cfg = Config(recipe.options())
    study = Study(lambda run_dir: {"m": cfg.lr})  # reads lr, never momentum
    summary = _run_study(recipe, cfg, study, tmp_path, smoke=True, report=False, overridden={"lr", "momentum"})
    assert summary["ignored_options"] == ["momentum"] and summary["value"] == 0.1
    assert "did not read the option(s) momentum" in capsys.readouterr().err and summary["seconds_to_threshold"] is None


def test_a_study_that_logs_its_validation_curve_gets_seconds_to_threshold(tmp_path):
    from dlkit.engine.logger import MetricLogger
    from dlkit.recipes import Config, Recipe, Study
    from dlkit.recipes.runner import _run_study

    recipe = Recipe(name="t", task="t", notes="", description="", build=None, metric="val/loss", threshold=1.0,
                    higher_is_better=False, study=True)

    def run_loop(run_dir):
        log = MetricLogger(run_dir, tensorboard=False)
        for step, loss in enumerate([2.0, 1.5, 0.9, 0.8]):
            log.log(step, 0, {"val/loss": loss})
        log.close()
        return {"val/loss": 0.8}

    summary = _run_study(recipe, Config(recipe.options()), Study(run_loop), tmp_path, smoke=True, report=False,
                         overridden=set())
    rows = [line.split(",") for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert summary["seconds_to_threshold"] == float(rows[2][2])  # the wall time of the first loss <= 1.0


def test_show_lists_a_recipes_options_with_defaults_and_smoke_values(capsys):
    code, out, _ = run(capsys, "show", "perceptron-nand")
    assert code == 0 and "a study of several trainings" in out and "test/accuracy >= 1" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "100" in lines["max_epochs"] and "(--smoke: 20)" in lines["max_epochs"] and "'cpu'" in lines["device"]
    assert "int" in lines["max_epochs"] and "channels_last" not in lines  # not an option of a study
    code, out, _ = run(capsys, "show", "mlp-digits")
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert code == 0 and "training: the Trainer" in out and "channels_last" in out
    assert "(--smoke: False)" in lines["progress"] and "(--smoke: False)" in lines["tensorboard"]  # as make_config
    smoke = make_config(get_recipe("mlp-digits"), smoke=True)
    assert smoke["progress"] is False and smoke["tensorboard"] is False and "--smoke" not in lines["device"]
    assert "int | None" in lines["max_steps"] and "float" in lines["lr"] and "list" in lines["hidden"]
    code, _, err = run(capsys, "show", "mlp-digit")
    assert code == 2 and "mlp-digits" in err


def test_debug_shows_the_traceback():
    from dlkit.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        main(["--debug", "run", "nope"])


def test_missing_data_set_says_which_files_to_put_where(capsys, tmp_path):
    code, _, err = run(capsys, "run", "lenet5-mnist", "--smoke", "--data-dir", str(tmp_path / "empty"),
                       "--out", str(tmp_path / "run"))
    assert code == 2 and "train-images-idx3-ubyte" in err and str(tmp_path / "empty") in err and "http" in err


def test_summary_prints_notes_formula_totals(capsys):
    from dlkit import create_model

    code, out, _ = run(capsys, "summary", "lenet5")
    assert code == 0
    total = sum(p.numel() for p in create_model("lenet5").parameters())
    assert total == 61_706 and "61,706" in out
    code, out, _ = run(capsys, "summary", "mlp", "--input-shape", "784")
    # mlp 784-256-128-10: dense layers 784*256+256 = 200,960, 256*128+128 = 32,896, 128*10+10 = 1,290
    assert code == 0 and all(n in out for n in ("200,960", "32,896", "1,290", "235,146 parameters"))
    for option in (["--num-classes", "5"], ["--proposals", "10"]):  # options of --compare, not silently ignored
        code, _, err = run(capsys, "summary", "lenet5", *option)
        assert code == 2 and "--num-classes and --proposals apply to a --compare cost table" in err


@pytest.mark.parametrize("name", ["retinanet_tiny", "fasterrcnn_tiny", "rcnn_tiny"])
def test_summary_of_a_detector_whose_forward_reads_values(capsys, name):
    """NMS and selective search need pixel values, which the meta device's memory estimate lacks: the summary
    measures those detectors with a real forward instead of failing."""
    from dlkit import create_model

    code, out, err = run(capsys, "summary", name)
    total = sum(p.numel() for p in create_model(name).parameters())
    assert code == 0 and f"{total:,} parameters" in out, err


def test_run_smoke_writes_the_run_folder_and_report_rebuilds(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, _ = run(capsys, "run", "mlp-digits", "--smoke", "--out", str(out_dir))
    assert code == 0 and "test/accuracy" in out
    assert "(reached" in out or "(did NOT reach" in out
    assert "the expected >= 0.97 of the full run; this was a smoke run)" in out
    for name in ["config.json", "metrics.csv", "summary.json", "report.html", "model.safetensors",
                 "figures/curve_loss.png", "figures/confusion_matrix.png", "figures/predictions.png"]:
        assert (out_dir / name).is_file(), name
    assert list((out_dir / "checkpoints").glob("step_*.safetensors"))
    (out_dir / "report.html").unlink()
    assert run(capsys, "report", str(out_dir))[0] == 0 and (out_dir / "report.html").is_file()


def test_the_expected_result_is_said_to_be_the_defaults_when_options_changed_it(capsys, tmp_path):
    code, out, _ = run(capsys, "run", "mlp-digits", "--epochs", "1", "--set", "threads=1", "hidden=[16]",
                       "--out", str(tmp_path / "run"))
    assert code == 0
    assert "the expected >= 0.97 of the recipe's defaults; this run set epochs, hidden)" in out  # threads: not
    code, out, _ = run(capsys, "run", "mlp-digits", "--set", "threads=1", "batch_size=32", "--out",
                       str(tmp_path / "run2"))  # batch_size=32 is the default: nothing changed
    assert code == 0 and re.search(r"\((reached|did NOT reach) the expected >= 0\.97\) in ", out)  # no scope
    _interrupt(tmp_path / "run")  # resumed: the line describes the run (epochs, hidden), not the resume command
    code, out, _ = run(capsys, "run", "mlp-digits", "--resume", str(tmp_path / "run"))
    assert code == 0 and "this run set epochs, hidden)" in out
    code, _, err = run(capsys, "run", "mlp-digits", "--resume", str(tmp_path / "run"), "--smoke")
    assert code == 2 and "that run is a full run and continues as one; --smoke applies to new runs only" in err


def _interrupt(folder):
    """Leave a finished run as if killed after its first checkpoint."""
    for name in ("summary.json", "model.safetensors", "model.json", "report.html"):
        (folder / name).unlink(missing_ok=True)
    for p in sorted((folder / "checkpoints").glob("step_*"))[2:]:
        p.unlink()


def test_show_and_list_read_the_checkouts_records_from_any_folder(capsys, tmp_path, monkeypatch):
    import dlkit

    checkout = Path(dlkit.__file__).resolve().parents[2] / "results" / "verify" / "lenet5-mnist.json"
    if not checkout.is_file():
        pytest.skip("dlkit is not imported from a source checkout with verify records")
    rec = json.loads(checkout.read_text())
    monkeypatch.chdir(tmp_path)  # no results/verify here: the checkout's records are read
    expected = f"passed ({rec['value']:.4g}, {rec['date'][:10]})" if rec["passed"] else "FAILED"
    assert expected in run(capsys, "show", "lenet5-mnist")[1]
    assert expected in run(capsys, "list", "recipes", "lenet5")[1]
    mine = tmp_path / "results" / "verify"  # a project folder with its own records: those are read
    mine.mkdir(parents=True)
    (mine / "lenet5-mnist.json").write_text(json.dumps({**rec, "value": 0.5, "passed": False}))
    assert "FAILED (0.5, " in run(capsys, "show", "lenet5-mnist")[1]
    (mine / "lenet5-mnist.json").unlink()
    assert "not verified" in run(capsys, "show", "lenet5-mnist")[1]


def test_verify_writes_record_and_fails_below_threshold(capsys, tmp_path, monkeypatch):
    from dlkit.recipes import get_recipe

    recipe = get_recipe("mlp-digits")
    monkeypatch.setattr(recipe, "threshold", 1.01)
    monkeypatch.setattr(recipe, "defaults", {**recipe.defaults, "epochs": 1, "progress": False, "tensorboard": False})
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "verify", "mlp-digits")
    rec = json.loads((tmp_path / "results/verify/mlp-digits.json").read_text())
    assert code == 1 and "FAIL mlp-digits" in out
    assert rec["passed"] is False and rec["threshold"] == 1.01 and 0.5 < rec["value"] <= 1.0
    assert {"metric", "seconds", "device", "torch", "commit"} <= rec.keys()
    code, _, _ = run(capsys, "status", "--out", "docs/STATUS.md")
    page = (tmp_path / "docs/STATUS.md").read_text()
    assert code == 0 and "| `mlp-digits` |" in page and "**no**" in page and "| `lenet5` | 61,706 |" in page
    assert "from the registries and `results/verify/`" in page  # the folder it read, relative to where it ran
    (tmp_path / "mine").mkdir()
    (tmp_path / "results/verify/mlp-digits.json").rename(tmp_path / "mine/mlp-digits.json")
    assert run(capsys, "status", "--out", "docs/S3.md", "--results", "mine")[0] == 0
    assert "from the registries and `mine/`" in (tmp_path / "docs/S3.md").read_text()
    code, _, err = run(capsys, "status", "--out", "docs/S2.md", "--results", "nowhere")
    assert code == 2 and "--results nowhere: no such folder of verify records" in err


def test_status_outside_the_repository_reads_the_checkouts_records(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no results/verify here: every recipe was "not run" before
    assert run(capsys, "status", "--out", "STATUS.md")[0] == 0
    row = next(r for r in (tmp_path / "STATUS.md").read_text().splitlines() if r.startswith("| `lenet5-mnist` |"))
    assert "| yes |" in row  # its record in the checkout's results/verify


def test_float_options_accept_exponents_without_a_dot():
    from dlkit.recipes import parse_value

    assert parse_value("lr", "3e-3", "float") == 0.003 and parse_value("lr", "1.5e2", "float") == 150.0
    with pytest.raises(ConfigError, match="expected a number"):
        parse_value("lr", "fast", "float")


@pytest.mark.parametrize("key,text,message", [
    ("lr", "@", "not a valid value"), ("max_steps", "abc", "expected an integer or null"),
    ("threads", "abc", "expected an integer or null"), ("epochs", "null", "cannot be empty or null"),
    ("lr", "nan", "a finite number"), ("grad_clip_norm", "-1", "must be a positive number"),
    ("keep_checkpoints", "-1", "keep_checkpoints must be a whole number >= 1"),
    ("device", "gpu", "cpu, cuda or cuda:N"),
    ("log_every", "0", "log_every must be a positive whole number"), ("ema_decay", "1.5", "in (0, 1)"),
])
def test_bad_option_values_are_refused_before_anything_runs(capsys, tmp_path, key, text, message):
    code, _, err = run(capsys, "run", "mlp-digits", "--smoke", "--set", f"{key}={text}", "--out", str(tmp_path / "r"))
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_run_prints_the_run_folder_at_the_end_even_without_out(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "run", "mlp-digits", "--smoke", "--set", "threads=1")
    last = out.strip().splitlines()[-1]
    assert code == 0 and last.startswith("run folder: runs/mlp-digits/") and "dlkit predict" in last
    folder = last.split()[2].rstrip(":")
    assert (tmp_path / folder / "model.json").is_file() and f"run folder: {folder}" in err  # also said at the start


def test_verify_all_shows_progress_and_flags_a_run_over_its_budget(capsys, monkeypatch):
    import dlkit.recipes

    def fake_verify(name, **kw):
        slow = name == "b"
        return {"passed": True, "metric": "test/accuracy", "value": 0.9, "threshold": 0.5, "seconds": 80.0 if slow
                else 5.0, "budget_s": 60.0, "over_budget": slow}

    monkeypatch.setattr(dlkit.recipes, "list_recipes", lambda pattern="*": ["a", "b"])
    monkeypatch.setattr(dlkit.recipes, "verify_recipe", fake_verify)
    code, out, _ = run(capsys, "verify", "--all")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "[1/2] a ..." and lines[2] == "[2/2] b ..."
    assert lines[1].startswith("PASS a:") and "budget" not in lines[1]
    assert lines[3].endswith("in 80.0 s (OVER its budget of 60 s)")


def test_report_refuses_a_folder_whose_run_failed_before_any_result_and_leaves_it_reusable(capsys, tmp_path):
    folder = tmp_path / "run"
    code, _, err = run(capsys, "run", "char-gpt-shakespeare", "--smoke", "--set", "n_head=3", "--out", str(folder))
    assert code == 2 and sorted(p.name for p in folder.iterdir()) == ["config.json"]  # refused after the folder
    code, _, err = run(capsys, "report", str(folder))
    assert code == 2 and "holds no results to report (no metrics.csv, no summary.json)" in err
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    assert run(capsys, "run", "mlp-xor", "--smoke", "--out", str(folder))[0] == 0  # the folder is reused
