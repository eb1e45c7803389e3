"""Run folders lose nothing: output paths checked before any work, one owning process per folder, unique default
names, no run written over another, resume refused for another recipe or a changed option, and a changed lr on
resume that acts and is recorded."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dlkit.cli import main
from dlkit.run_folder import LOCK_NAME, RunLock, check_output_path, new_run_dir

XOR = ["run", "mlp-xor", "--smoke"]


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *fragments):
    assert code == 2 and err.startswith("dlkit: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err


# -- output paths ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["a_file", "under_a_file", "long_name", "long_path"])
def test_an_unusable_out_is_refused_before_anything_runs(capsys, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("x")
    out, expected = {"a_file": ("f", "is a file, not a folder"),
                     "under_a_file": ("f/run", "lies under"),
                     "long_name": ("r" * 256, "256 bytes long, more than the 255 bytes"),
                     "long_path": ("/".join(["d" * 200] * 21), "bytes long; with the files written under it")}[case]
    code, _, err = run(capsys, *XOR, "--out", out)
    one_line_error(code, err, "--out", expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no run folder, no default runs/


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the probe is tested by the next test")
def test_an_out_in_a_folder_without_write_permission_is_refused(capsys, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    code, _, err = run(capsys, *XOR, "--out", locked / "run")
    one_line_error(code, err, "cannot write in", "Permission denied")


def test_writability_is_probed_by_creating_a_file(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    check_output_path(tmp_path / "run", "--out")  # writable: accepted, nothing left behind
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(Exception, match="cannot write in .*Read-only file system"):
        check_output_path(tmp_path / "run", "--out")


def test_verify_checks_its_results_folder_before_training(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("results").write_text("a file")
    t0 = time.perf_counter()
    code, _, err = run(capsys, "verify", "mlp-xor", "--results", "results")
    one_line_error(code, err, "--results 'results': is a file, not a folder")
    assert not Path("runs").exists() and time.perf_counter() - t0 < 5  # refused before any training


def test_status_checks_its_out_file(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    code, _, err = run(capsys, "status", "--out", tmp_path / "f" / "STATUS.md", "--results", tmp_path)
    one_line_error(code, err, "lies under")
    code, _, err = run(capsys, "status", "--out", tmp_path, "--results", tmp_path)
    one_line_error(code, err, "is a folder, not a file")
    os.mkfifo(tmp_path / "pipe")  # opening it to write would block until a reader comes
    code, _, err = run(capsys, "status", "--out", tmp_path / "pipe", "--results", tmp_path)
    one_line_error(code, err, "is not a regular file")


def test_a_damaged_verify_record_does_not_break_status(tmp_path):
    from dlkit.report.status import recipe_table

    (tmp_path / "mlp-xor.json").write_text("[1, 2")
    (tmp_path / "mlp-digits.json").write_text('{"value": "high"}')
    rows, _, _ = recipe_table(tmp_path)
    for name in ("mlp-xor", "mlp-digits"):
        (row,) = [r for r in rows if r.startswith(f"| `{name}`")]
        assert "unreadable record" in row and f"dlkit verify {name}" in row


# -- one process per folder ----------------------------------------------------------------------------------------
def test_a_folder_in_use_by_another_process_is_refused_naming_it(capsys, tmp_path):
    folder = tmp_path / "run"
    _fake_run(folder, "mlp-xor")  # as a run writes it before its first step
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from dlkit.run_folder import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)",
                               str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run(capsys, *XOR, "--out", folder)
        one_line_error(code, err, f"is in use by process {holder.pid} on host {socket.gethostname()}")
        code, _, err = run(capsys, "run", "mlp-xor", "--resume", folder)
        one_line_error(code, err, f"process {holder.pid}")
        assert sorted(os.listdir(folder)) == [LOCK_NAME, "config.json"]  # the refused runs wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder's lock file remains: the next run takes it over with a warning, and removes it at the end
    with pytest.warns(UserWarning, match=f"taking over the lock of process {holder.pid}"):
        code, _, _ = run(capsys, "run", "mlp-xor", "--resume", folder)
    assert code == 0 and not (folder / LOCK_NAME).exists() and (folder / "summary.json").is_file()


def test_the_lock_is_released_when_the_run_fails(capsys, tmp_path):
    folder = tmp_path / "run"
    code, _, err = run(capsys, "run", "lenet5-mnist", "--smoke", "--data-dir", tmp_path / "no-data", "--out", folder)
    assert code == 2 and "train-images-idx3-ubyte" in err
    assert not (folder / LOCK_NAME).exists()
    with RunLock(folder):  # free again
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (folder / LOCK_NAME).exists()


def test_one_process_cannot_take_a_folder_twice(tmp_path):
    with RunLock(tmp_path), pytest.raises(Exception, match=f"in use by process {os.getpid()}"):
        RunLock(tmp_path).acquire()


def test_default_run_folders_are_unique_within_one_second(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(new_run_dir(tmp_path, "mlp-xor", smoke=True)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(p.name for p in made)
    assert len(set(names)) == 8 and "20260101-000000-smoke" in names and "20260101-000000-smoke-8" in names
    assert sorted(p.name for p in (tmp_path / "mlp-xor").iterdir()) == names


# -- no run written over another -----------------------------------------------------------------------------------
def test_out_onto_a_previous_run_needs_resume_or_overwrite(capsys, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()  # an empty existing folder is fine
    assert run(capsys, *XOR, "--out", folder)[0] == 0
    first = (folder / "metrics.csv").read_text()
    code, _, err = run(capsys, *XOR, "--set", "lr=0.1", "--out", folder)
    one_line_error(code, err, "holds a finished run", "--resume", "--overwrite")
    assert (folder / "metrics.csv").read_text() == first  # untouched
    (folder / "figures" / "stale.png").write_bytes(b"old")
    (folder / "samples.txt").write_text("old")
    code, _, _ = run(capsys, *XOR, "--set", "lr=0.1", "--out", folder, "--overwrite")
    assert code == 0 and not (folder / "figures" / "stale.png").exists() and not (folder / "samples.txt").exists()
    assert json.loads((folder / "config.json").read_text())["config"]["lr"] == 0.1
    rows = (folder / "metrics.csv").read_text().splitlines()
    assert len(rows) == len(first.splitlines()) and ",lr,0.1" in rows[2]  # one run's rows, not two runs' mixed


def test_resuming_a_finished_run_is_refused_unless_it_trains_further_and_leaves_its_result(capsys, tmp_path):
    folder = tmp_path / "run"
    assert run(capsys, "run", "char-gpt-shakespeare", "--smoke", "--out", folder)[0] == 0
    summary, metrics = (folder / "summary.json").read_text(), (folder / "metrics.csv").read_text()
    code, _, err = run(capsys, "run", "char-gpt-shakespeare", "--resume", folder)
    one_line_error(code, err, "that run finished (its result is in summary.json), so there is nothing left to train",
                   "longer length", "--overwrite")
    assert (folder / "summary.json").read_text() == summary and (folder / "metrics.csv").read_text() == metrics
    code, _, err = run(capsys, *XOR, "--out", folder)  # another recipe's run: offered --resume only to train further
    one_line_error(code, err, "holds a finished run", "--resume", "with a longer length to train it further")
    study = tmp_path / "study"
    assert run(capsys, "run", "perceptron-nand", "--smoke", "--out", study)[0] == 0
    code, _, err = run(capsys, "run", "perceptron-nand", "--smoke", "--out", study)
    one_line_error(code, err, "holds a finished run", "--overwrite")
    assert "--resume" not in err  # a study cannot be resumed


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_keeps_the_previous_run_when_the_new_one_fails_before_its_first_step(capsys, tmp_path):
    folder = tmp_path / "run"
    assert run(capsys, "run", "image-folder", "--smoke", "--out", folder)[0] == 0
    before = _files(folder)
    # refused while reading the data (a typo in --data-dir) and once the model is built (it takes 28 x 28 images)
    code, _, err = run(capsys, "run", "image-folder", "--smoke", "--out", folder, "--overwrite", "--data-dir",
                       tmp_path / "typo")
    assert code == 2 and "dlkit: error: image folder not found" in err and "Traceback" not in err
    assert _files(folder) == before
    code, _, err = run(capsys, "run", "image-folder", "--smoke", "--out", folder, "--overwrite", "--set",
                       "model=lenet5", "image_size=32")  # refused once the model is built: 28 x 28 inputs only
    assert code == 2 and "does not take 3 x 32 x 32 images" in err
    assert _files(folder) == before and sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert run(capsys, "run", "image-folder", "--smoke", "--out", folder, "--overwrite", "--set", "lr=0.01")[0] == 0
    assert json.loads((folder / "config.json").read_text())["config"]["lr"] == 0.01
    assert not (folder / ".dlkit-replaced").exists()


def test_overwrite_deletes_nothing_in_a_folder_that_is_not_only_a_run(capsys, tmp_path):
    folder = tmp_path / "project"
    (folder / ".git").mkdir(parents=True)
    (folder / "metrics.csv").write_text("mine")
    (folder / "config.json").write_text("{}")
    code, _, err = run(capsys, *XOR, "--out", folder, "--overwrite")
    one_line_error(code, err, "also holds .git", "nothing was deleted")
    assert (folder / "metrics.csv").read_text() == "mine"
    # a user's folder that merely looks like a run (a figures/ folder, notes) is no run: nothing is deleted
    thesis = tmp_path / "thesis"
    (thesis / "figures").mkdir(parents=True)
    (thesis / "figures" / "plot.png").write_bytes(b"img")
    (thesis / "notes.txt").write_text("chapter 1")
    code, _, err = run(capsys, *XOR, "--out", thesis, "--overwrite")
    one_line_error(code, err, "holds no config.json, so it is not a dlkit run folder; nothing was deleted")
    (thesis / "config.json").write_text("{}")  # beside a run, a note that no run writes is not deleted either
    code, _, err = run(capsys, *XOR, "--out", thesis, "--overwrite")
    one_line_error(code, err, "also holds notes.txt", "nothing was deleted")
    assert (thesis / "notes.txt").read_text() == "chapter 1" and (thesis / "figures" / "plot.png").is_file()


def test_an_interrupted_run_is_refused_and_overwrite_contradicts_resume(capsys, tmp_path):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    code, _, err = run(capsys, *XOR, "--out", folder)
    one_line_error(code, err, "holds an interrupted run (config.json, checkpoints)")
    code, _, err = run(capsys, "run", "mlp-xor", "--resume", folder, "--overwrite")
    one_line_error(code, err, "pass one of them")


# -- resume: the same recipe, options that may change, a clear error for a damaged config ---------------------------
def _fake_run(folder: Path, recipe: str) -> None:
    """A run folder as `dlkit run RECIPE --smoke` writes it before its first step."""
    from dlkit.recipes import get_recipe, make_config

    folder.mkdir()
    cfg = make_config(get_recipe(recipe), smoke=True)
    (folder / "config.json").write_text(json.dumps({"recipe": recipe, "smoke": True, "config": cfg, "world_size": 1}))


def test_resume_with_another_recipe_is_refused(capsys, tmp_path):
    _fake_run(tmp_path / "lenet", "lenet5-mnist")
    code, _, err = run(capsys, "run", "mlp-fashion-mnist", "--resume", tmp_path / "lenet")
    one_line_error(code, err, "is a run of recipe 'lenet5-mnist', not 'mlp-fashion-mnist'",
                   "dlkit run lenet5-mnist --resume")


@pytest.mark.parametrize("text", ["{not json", "null", "[]", '{"recipe": "mlp-xor", "config": []}',
                                  '{"recipe": "mlp-xor", "config": {"lr": "fast"}}',
                                  '{"recipe": "mlp-xor", "config": {}, "resumes": 3}', "[" * 100_000])
def test_a_damaged_config_json_is_a_clear_error_on_resume(capsys, tmp_path, text):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(text)
    code, _, err = run(capsys, "run", "mlp-xor", "--resume", folder)
    one_line_error(code, err, "config.json is damaged or not a dlkit run configuration", "--overwrite")


def test_resume_refuses_changing_what_the_run_already_computed(capsys, tmp_path):
    folder = tmp_path / "run"
    assert run(capsys, *XOR, "--out", folder)[0] == 0
    before = (folder / "config.json").read_bytes()
    for change in (["--set", "hidden=8"], ["--seed", "3"], ["--set", "optimizer=adam", "lr=0.1"]):
        code, _, err = run(capsys, "run", "mlp-xor", "--resume", folder, *change)
        one_line_error(code, err, "cannot change on resume", "may change only lr, epochs, max_steps")
    assert (folder / "config.json").read_bytes() == before
    code, _, err = run(capsys, "run", "mlp-xor", "--resume", folder, "--set", "hidden=4", "lr=0.5")  # the saved values
    one_line_error(code, err, "that run finished")  # no change refused: only that the finished run has nothing left
    assert (folder / "config.json").read_bytes() == before


def test_resume_refuses_a_new_length_for_a_schedule_laid_out_over_the_old_one(capsys, tmp_path):
    folder = tmp_path / "run"
    assert run(capsys, *XOR, "--set", "schedule=cosine", "--out", folder)[0] == 0
    code, _, err = run(capsys, "run", "mlp-xor", "--resume", folder, "--set", "max_steps=5000")
    one_line_error(code, err, "the run's lr schedule 'cosine' was laid out over its length (max_steps=")
    flat = tmp_path / "flat"  # without a schedule a run may go on for longer
    assert run(capsys, *XOR, "--out", flat)[0] == 0
    assert run(capsys, "run", "mlp-xor", "--resume", flat, "--set", "max_steps=5000")[0] == 0


def test_epoch_options_of_a_recipe_counted_in_steps_are_refused(capsys, tmp_path):
    code, _, err = run(capsys, *XOR, "--epochs", "3", "--out", tmp_path / "run")
    assert code == 2 and "dlkit: error: recipe 'mlp-xor' trains on an endless stream counted in steps, so epochs " \
        "would do nothing" in err and "Traceback" not in err


def _lrs(folder: Path) -> dict[int, float]:
    rows = [line.split(",") for line in (folder / "metrics.csv").read_text().splitlines()[1:]]
    return {int(r[0]): float(r[4]) for r in rows if r[3] == "lr"}


def _interrupt_after(folder: Path, step: int) -> None:
    """Leave `folder` as a run killed right after its checkpoint at `step` would (later checkpoints and the
    finished run's outputs removed)."""
    for p in (folder / "checkpoints").glob("step_*"):
        if int(p.name[5:14]) > step:
            p.unlink()
    for name in ("summary.json", "model.safetensors", "model.json", "report.html"):
        (folder / name).unlink(missing_ok=True)


def test_a_lower_lr_on_resume_scales_the_schedule_and_is_recorded(capsys, tmp_path):
    opts = ["--set", "max_steps=40", "schedule=cosine", "warmup_steps=0", "checkpoint_every_steps=10"]
    assert run(capsys, *XOR, *opts, "--out", tmp_path / "full")[0] == 0
    assert run(capsys, *XOR, *opts, "--out", tmp_path / "cut")[0] == 0
    _interrupt_after(tmp_path / "cut", 20)
    code, _, err = run(capsys, "run", "mlp-xor", "--resume", tmp_path / "cut", "--set", "lr=0.25")
    assert code == 0 and "resumed from" in err
    full, cut = _lrs(tmp_path / "full"), _lrs(tmp_path / "cut")
    assert cut[10] == full[10] and cut[20] == full[20]  # before the resume: the old base lr 0.5
    assert cut[30] == pytest.approx(full[30] / 2, rel=1e-9) and cut[40] == pytest.approx(full[40] / 2, rel=1e-9)
    meta = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert meta["config"]["lr"] == 0.25
    assert meta["resumes"] == [{"step": 20, "overrides": {"lr": 0.25}, "previous": {"lr": 0.5}}]


def test_an_lr_recorded_by_a_resume_that_was_killed_before_its_next_checkpoint_still_acts(capsys, tmp_path):
    from dlkit.recipes import Config
    from dlkit.recipes.runner import _prepare_resume

    folder = tmp_path / "run"
    assert run(capsys, *XOR, "--set", "max_steps=40", "checkpoint_every_steps=10", "--out", folder)[0] == 0
    _interrupt_after(folder, 20)
    cfg = Config({**json.loads((folder / "config.json").read_text())["config"], "lr": 0.125})
    assert _prepare_resume(folder, cfg, {"lr": (0.5, 0.125)}) == 0.125  # recorded; then the process was killed
    code, _, _ = run(capsys, "run", "mlp-xor", "--resume", folder)  # no --set: config.json says 0.125
    assert code == 0 and _lrs(folder)[30] == 0.125 and _lrs(folder)[40] == 0.125


def test_overwrite_without_out_is_refused(capsys):
    code, _, err = run(capsys, *XOR, "--overwrite")
    one_line_error(code, err, "--overwrite replaces the run in the folder --out names")


def test_make_runs_overwrite_beside_default_runs_of_the_same_recipe_keeps_them(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `dlkit run mlp-xor` writes runs/mlp-xor/TIME; `make run` overwrites runs/mlp-xor
    assert run(capsys, *XOR)[0] == 0
    [default] = (tmp_path / "runs" / "mlp-xor").iterdir()
    for _ in range(2):
        assert run(capsys, *XOR, "--out", "runs/mlp-xor", "--overwrite")[0] == 0
    assert (default / "summary.json").is_file() and (tmp_path / "runs" / "mlp-xor" / "summary.json").is_file()


def test_a_run_killed_after_its_final_scores_logs_them_once_when_resumed(capsys, tmp_path):
    folder = tmp_path / "run"
    assert run(capsys, "run", "mlp-digits", "--smoke", "--out", folder)[0] == 0
    before = [r for r in (folder / "metrics.csv").read_text().splitlines() if ",test/" in r]
    (folder / "summary.json").unlink()  # killed after model.safetensors, before the summary and report
    (folder / "report.html").unlink()
    assert run(capsys, "run", "mlp-digits", "--resume", folder)[0] == 0
    after = [r for r in (folder / "metrics.csv").read_text().splitlines() if ",test/" in r]
    assert [r.split(",")[3] for r in after] == [r.split(",")[3] for r in before] == ["test/loss", "test/accuracy"]
