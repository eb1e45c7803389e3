"""Real `dlkit run` processes: a SIGKILL mid-epoch then --resume (an MLP, LeNet-5 with channels-last, the
char-GPT and SSD), and torchrun with two gloo processes (an epoch-based MLP, the step-based char-GPT on an endless
stream, and SSD with its sharded COCO evaluation)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

DLKIT = [sys.executable, "-m", "dlkit"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_ok(args, timeout=240):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "model.safetensors"))


def interrupted_run(recipe: str, opts: list, out: Path, checkpoints: int = 3,
                    sig: signal.Signals = signal.SIGKILL) -> subprocess.CompletedProcess:
    """Start `dlkit run recipe --out out`, send it `sig` once `checkpoints` checkpoint files exist (step 0 is the
    first) and wait for it; asserts it did not finish first. Returns the process (its stderr as text)."""
    proc = subprocess.Popen(DLKIT + ["run", recipe, "--out", str(out), *opts], env=ENV, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = out / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(ckpts.glob("step_*.json"))) < checkpoints and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert not (out / "summary.json").exists(), "the run finished before it was interrupted"
    return subprocess.CompletedProcess(proc.args, proc.returncode, None, err)


def resume_gives_the_same_weights(recipe: str, full: Path, interrupted: Path) -> None:
    """`dlkit run recipe --resume interrupted` ends with the weights of the uninterrupted run `full`, to the bit."""
    out = run_ok(DLKIT + ["run", recipe, "--resume", str(interrupted)])
    assert "resumed from" in out.stderr
    a, b = weights(full), weights(interrupted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kill_after_checkpoints_then_resume(recipe: str, opts: list, tmp_path: Path, checkpoints: int = 3) -> None:
    """Run `recipe` uninterrupted, then again killed with SIGKILL once `checkpoints` checkpoints exist, resume the
    killed run, and assert that both end with the same weights to the bit."""
    run_ok(DLKIT + ["run", recipe, "--out", str(tmp_path / "full"), *opts])
    killed = interrupted_run(recipe, opts, tmp_path / "killed", checkpoints)
    assert killed.returncode == -signal.SIGKILL
    resume_gives_the_same_weights(recipe, tmp_path / "full", tmp_path / "killed")


def one_and_two_processes(recipe: str, opts: list, tmp_path: Path) -> tuple[dict, dict]:
    """Weights of `recipe` trained by one process and by two torchrun gloo processes with the same global batch;
    asserts they agree to 1e-5."""
    run_ok(DLKIT + ["run", recipe, "--out", str(tmp_path / "one"), *opts])
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dlkit", "run",
           recipe, "--out", str(tmp_path / "two"), *opts]
    proc = subprocess.run(two, capture_output=True, text=True, timeout=240, env=ENV)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        # a gloo teardown abort seen once in four suite runs under load with torch 2.14.1 (after every output was
        # written); the run is repeated once from scratch, any other failure fails the test
        run_ok([*two, "--overwrite"])
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-5)
    return a, b


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    opts = ["--set", "epochs=3", "--set", "checkpoint_every_steps=10", "--set", "log_every=5"]
    kill_after_checkpoints_then_resume("mlp-digits", opts, tmp_path)  # steps 0, 10, 20: mid epoch 1


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    opts = ["--smoke", "--set", "dropout=0.0", "--set", "batch_size=64", "--set", "epochs=2"]
    a, _ = one_and_two_processes("mlp-digits", opts, tmp_path)
    assert not torch.equal(a["layers.1.weight"], torch.zeros_like(a["layers.1.weight"]))


def test_lenet5_mnist_with_its_defaults_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path, data_root):
    # its defaults: channels-last weights, torch's fused Adam, one-cycle schedule; 3 x 16 steps of 32 images
    opts = ["--smoke", "--set", "batch_size=32", "--set", "epochs=3", "--set", "checkpoint_every_steps=4",
            "--data-dir", str(data_root)]
    kill_after_checkpoints_then_resume("lenet5-mnist", opts, tmp_path)  # killed after the step-8 checkpoint


# char-gpt-shakespeare in smoke mode, a few hundred steps on an endless stream of random windows (Notes: 004 GPT)
GPT_OPTS = ["--smoke", "--set", "max_steps=240", "--set", "lr_decay_steps=240", "--set", "eval_every_steps=120",
            "--set", "n_embd=64", "--set", "block_size=32", "--set", "checkpoint_every_steps=10"]


def test_char_gpt_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path, data_root):
    kill_after_checkpoints_then_resume("char-gpt-shakespeare", [*GPT_OPTS, "--data-dir", str(data_root)], tmp_path)


@pytest.mark.slow
def test_char_gpt_torchrun_two_processes_match_one_process_with_the_same_global_batch(tmp_path, data_root):
    opts = [*GPT_OPTS, "--set", "max_steps=30", "--set", "lr_decay_steps=30", "--set", "batch_size=8",
            "--data-dir", str(data_root)]
    one_and_two_processes("char-gpt-shakespeare", opts, tmp_path)
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["world_size"] == 2 and s2["value"] == pytest.approx(s1["value"], abs=1e-5)  # sharded validation
    assert s1["value"] < 4.0 < math.log(len(json.loads((tmp_path / "one" / "model.json").read_text())["class_names"]))


# a detection recipe (SSD on generated shapes, smoke size): the detection task, its collate and its sharded COCO
# evaluation take the same path (Notes: 002 §4.3.4)
DET_OPTS = ["--smoke", "--set", "epochs=3", "--set", "checkpoint_every_steps=2"]  # 8 scenes, batches of 4


@pytest.mark.slow
def test_ssd_shapes_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path):
    kill_after_checkpoints_then_resume("ssd-shapes", DET_OPTS, tmp_path)  # killed after the step-4 checkpoint


@pytest.mark.slow
def test_ssd_shapes_runs_under_torchrun_with_two_processes(tmp_path):
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dlkit", "run",
           "ssd-shapes", "--out", str(tmp_path / "two"), *DET_OPTS]
    proc = subprocess.run(two, capture_output=True, text=True, timeout=240, env=ENV)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        run_ok([*two, "--overwrite"])  # the gloo teardown abort of one_and_two_processes
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    # batch norm makes one process and two differ (no SyncBatchNorm); the sharded COCO evaluation must still gather
    # every test image: mAP@0.5 is a number in [0, 1], not COCO's -1 of an empty evaluation
    assert summary["world_size"] == 2 and 0.0 <= summary["value"] <= 1.0
    assert "cls_heads.0.weight" in weights(tmp_path / "two")
