"""Real `dlkit run` processes: a SIGKILL mid-epoch then --resume, and torchrun with two gloo processes."""

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


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    opts = ["--set", "epochs=3", "--set", "checkpoint_every_steps=10", "--set", "log_every=5"]
    run_ok(DLKIT + ["run", "mlp-digits", "--out", str(tmp_path / "full"), *opts])
    killed = tmp_path / "killed"
    proc = subprocess.Popen(DLKIT + ["run", "mlp-digits", "--out", str(killed), *opts], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = killed / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(ckpts.glob("step_*.json"))) < 3:  # steps 10, 20, 30: mid epoch 1
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists(), "the run finished before it was killed"
    out = run_ok(DLKIT + ["run", "mlp-digits", "--resume", str(killed)])
    assert "resumed from" in out.stderr
    a, b = weights(tmp_path / "full"), weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    opts = ["--smoke", "--set", "dropout=0.0", "--set", "batch_size=64", "--set", "epochs=2"]
    run_ok(DLKIT + ["run", "mlp-digits", "--out", str(tmp_path / "one"), *opts])
    run_ok([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dlkit",
            "run", "mlp-digits", "--out", str(tmp_path / "two"), *opts])
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-5)
    assert not torch.equal(a["layers.1.weight"], torch.zeros_like(a["layers.1.weight"]))
