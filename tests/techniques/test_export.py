"""Export of a run's model: a torch.export program and an ONNX graph, each reloaded and compared with eager."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import dlkit
from dlkit.cli import main
from dlkit.errors import ConfigError
from dlkit.runs import load_run, model_spec
from dlkit.techniques import export as export_module
from dlkit.techniques.export import export_run


def _hand_run(out, name, kwargs, task="sequence", **spec):
    """A run folder of a randomly initialised registry model, written by hand as `dlkit run` would (tied weights
    cloned, as it does)."""
    torch.manual_seed(0)
    model = dlkit.create_model(name, **kwargs)
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "model.json").write_text(json.dumps({"recipe": "hand", "task": task, **model_spec(name, kwargs, **spec)}))
    return out


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """A run folder of a randomly initialised lenet5 with 3 classes, written by hand as `dlkit run` would."""
    return _hand_run(tmp_path_factory.mktemp("lenet"), "lenet5", {"num_classes": 3}, task="classification",
                     class_names=["a", "b", "c"], channels=1, size=28, mean=0.13, std=0.31)


def test_exported_program_reloads_and_computes_the_eager_function(lenet_run, tmp_path, capsys):
    code = main(["export", str(lenet_run), "--out", str(tmp_path / "lenet.pt2")])
    out = capsys.readouterr().out
    assert code == 0 and "equal to the eager model" in out and "dynamic batch" in out
    program = torch.export.load(str(tmp_path / "lenet.pt2")).module()
    model = load_run(lenet_run).model
    x = torch.randn(5, 1, 28, 28)  # a batch size the export did not trace
    with torch.no_grad():
        assert torch.allclose(program(x), model(x), atol=1e-6)


def test_export_check_reports_a_file_that_computes_something_else(lenet_run, tmp_path, monkeypatch, capsys):
    real_load = torch.export.load

    class Off:
        def __init__(self, program):
            self.program = program

        def module(self):
            inner = self.program.module()
            return lambda x: inner(x) + 1e-3

    monkeypatch.setattr(export_module.torch.export, "load", lambda path: Off(real_load(path)))
    check = export_run(load_run(lenet_run), "exported-program", out=tmp_path / "m.pt2")
    assert not check.passed and check.max_abs_diff == pytest.approx(1e-3, rel=1e-3)
    assert main(["export", str(lenet_run), "--out", str(tmp_path / "m2.pt2")]) == 1
    assert "DIFFERENT from the eager model" in capsys.readouterr().out


def test_a_file_that_cannot_be_run_is_reported_unchecked_with_exit_code_1(lenet_run, tmp_path, monkeypatch, capsys):
    class Broken:
        def module(self):
            def run(x):
                raise ValueError("an operator variant the runtime lacks")
            return run

    monkeypatch.setattr(export_module.torch.export, "load", lambda path: Broken())
    assert main(["export", str(lenet_run), "--out", str(tmp_path / "m.pt2")]) == 1
    out = capsys.readouterr().out
    assert "but could NOT check it: running it failed (ValueError: an operator variant the runtime lacks)" in out


def test_out_may_be_a_folder_and_its_suffix_names_the_format(lenet_run, tmp_path, capsys):
    assert main(["export", str(lenet_run), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "model.pt2").is_file() and f"wrote {tmp_path / 'model.pt2'} (exported-program" in \
        capsys.readouterr().out
    assert main(["export", str(lenet_run), "--out", str(tmp_path / "m.onnx"), "--format", "exported-program"]) == 2
    assert "--out " in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
    if importlib.util.find_spec("onnx") is not None:
        assert main(["export", str(lenet_run), "--out", str(tmp_path / "m.onnx")]) == 0
        assert "(onnx, " in capsys.readouterr().out


def test_export_replaces_no_file_but_its_own_and_writes_only_pt2_or_onnx_files(lenet_run, tmp_path, capsys):
    weights = (lenet_run / "model.safetensors").read_bytes()
    assert main(["export", str(lenet_run), "--out", str(lenet_run / "model.safetensors")]) == 2
    assert "name the file .pt2 (exported-program) or .onnx (onnx), or pass a folder; got the suffix " \
        "'.safetensors'" in capsys.readouterr().err
    assert (lenet_run / "model.safetensors").read_bytes() == weights  # the trained weights are untouched
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main(["export", str(lenet_run), "--out", str(notes)]) == 2 and notes.read_text() == "mine"
    mine = tmp_path / "mine.pt2"
    mine.write_text("mine")
    assert main(["export", str(lenet_run), "--out", str(mine)]) == 2
    assert f"--out {mine} exists; dlkit export does not replace files" in capsys.readouterr().err
    assert mine.read_text() == "mine"
    assert main(["export", str(lenet_run), "--out", str(mine), "--overwrite"]) == 0 and mine.stat().st_size > 1000
    assert main(["export", str(lenet_run), "--out", str(tmp_path / "new")]) == 0  # a new path without a suffix:
    assert (tmp_path / "new" / "model.pt2").is_file()                            # a folder
    for _ in range(2):  # the run folder's own export is written again without --overwrite
        assert main(["export", str(lenet_run)]) == 0
    capsys.readouterr()
    assert main(["export", str(lenet_run), "--out", str(notes / "m.pt2")]) == 2
    assert f"{notes} is a file, so no folder can be made there" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="the onnx package is not installed "
                    "(pip install onnx, in the test extra)")
def test_onnx_graph_reloads_and_computes_the_eager_function(lenet_run, tmp_path, capsys):
    import onnx
    from onnx.reference import ReferenceEvaluator

    code = main(["export", str(lenet_run), "--format", "onnx", "--out", str(tmp_path / "lenet.onnx")])
    assert code == 0 and "equal to the eager model" in capsys.readouterr().out
    graph = onnx.load(str(tmp_path / "lenet.onnx"))
    x = torch.randn(4, 1, 28, 28)
    got = ReferenceEvaluator(graph).run(None, {graph.graph.input[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = load_run(lenet_run).model(x).numpy()
    assert np.allclose(got, want, atol=1e-5)


def test_export_of_a_trained_recipe_run_and_its_errors(tmp_path, capsys):
    out = tmp_path / "run"
    dlkit.run_recipe("mlp-digits", overrides={"threads": 1}, smoke=True, out=out, report=False)
    check = export_run(load_run(out))
    assert check.passed and check.path == out / "model.pt2" and check.input_shape == (3, 1, 8, 8)
    with pytest.raises(ConfigError, match="export format must be one of exported-program, onnx"):
        export_run(load_run(out), "tflite")
    code = main(["export", str(tmp_path)])
    assert code == 2 and "expected model.json and model.safetensors" in capsys.readouterr().err


def test_a_token_model_exports_with_token_id_inputs(tmp_path, capsys):
    """A GPT run (no image input record) is exported on random token ids [batch, length]; the program computes the
    eager logits for a batch size and ids it was not traced with."""
    kwargs = {"vocab_size": 11, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}
    run_dir = _hand_run(tmp_path, "gpt_char_nano", kwargs)
    assert main(["export", str(run_dir)]) == 0 and "equal to the eager model" in capsys.readouterr().out
    program = torch.export.load(str(run_dir / "model.pt2")).module()
    ids = torch.randint(11, (5, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = load_run(run_dir).model(ids)
    assert want.shape == (5, 16, 11) and torch.allclose(program(ids), want, atol=1e-6)


def test_a_two_input_model_is_refused_in_one_line(tmp_path, capsys):
    run_dir = _hand_run(tmp_path, "transformer_tiny", {})
    assert main(["export", str(run_dir)]) == 2
    assert "takes 2 inputs (a source and a target); dlkit export writes models of one input" in capsys.readouterr().err


def test_a_detector_is_refused_in_one_line(tmp_path, capsys):
    """A detector returns per-image dicts, not one tensor: one line naming what it returns, no traceback."""
    run_dir = _hand_run(tmp_path, "localiser_tiny", {}, task="detection", channels=1, size=64, mean=0.0, std=1.0)
    assert main(["export", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "(detection run) returns a list, not one tensor" in err and "Traceback" not in err
    assert not (run_dir / "model.pt2").exists()
