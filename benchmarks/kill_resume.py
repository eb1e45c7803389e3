"""Kill -9 at random moments, then --resume: how many runs end bit-exactly where an uninterrupted run ends.

For each recipe (default `mlp-fashion-mnist` and `lenet5-mnist`, the latter with channels-last weights and torch's
fused Adam, as registered) the harness first runs `dlkit run` once uninterrupted, in a shortened form (`--quick`:
a subset of the training set and checkpoints every few steps, ~10-20 s a trial; without it, the registered
length), and notes its checkpoints' steps and the mean time between two. Each trial then starts the same
command and sends SIGKILL at a random moment of the training: once a checkpoint drawn uniformly from those (step 0
to the one before the last) exists, after a delay drawn uniformly from [0, that mean interval] (the moment follows
the run's progress, so a busy machine does not push it past the end). It then runs
`dlkit run RECIPE --resume DIR` and compares every tensor of the final checkpoint (weights, optimizer state,
schedule, RNG and data state) and of `model.safetensors` with the uninterrupted run's (`torch.equal`). Trials
alternate between the recipes. It prints one line per trial and the bit-exact count; the exit status is 1 when
any trial differs. The Trainer promises this on CPU (DESIGN.md "Engine": "Resuming after a crash gives
bit-identical weights to an uninterrupted run on CPU").

    DLKIT_DATA=../shared/datasets python benchmarks/kill_resume.py --trials 20 --quick
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

# shortened runs: a few hundred steps, a checkpoint every few seconds of training
QUICK = {
    "mlp-fashion-mnist": ["--set", "epochs=2", "--set", "subset=24000", "--set", "checkpoint_every_steps=20"],
    "lenet5-mnist": ["--set", "epochs=2", "--set", "subset=12000", "--set", "checkpoint_every_steps=10"],
}


def command(recipe: str, out: Path, args) -> list[str]:
    opts = QUICK.get(recipe, []) if args.quick else []
    return [sys.executable, "-m", "dlkit", "run", recipe, "--out", str(out), "--set", f"threads={args.threads}",
            "--set", "progress=false", "--set", "tensorboard=false", *opts,
            *(["--data-dir", args.data_dir] if args.data_dir else [])]


def env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def steps(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.json"))


def reference(recipe: str, out: Path, args) -> tuple[list[int], float]:
    """Run uninterrupted; return the steps of its checkpoints and the mean seconds between two of them."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command(recipe, out, args), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    seen: dict[int, float] = {}  # step -> seconds after start when its checkpoint appeared
    while proc.poll() is None:
        for step in steps(out):
            seen.setdefault(step, time.perf_counter() - t0)
        time.sleep(0.01)
    if proc.returncode != 0:
        sys.exit(f"kill_resume: the uninterrupted run of {recipe} failed:\n{proc.stderr.read()[-3000:]}")
    if len(seen) < 2:
        sys.exit(f"kill_resume: {recipe} wrote fewer than 2 checkpoints; use --quick or set checkpoint_every_steps")
    times = sorted(seen.values())
    return sorted(seen), (times[-1] - times[0]) / (len(times) - 1)


def final_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the newest checkpoint and of model.safetensors, by name."""
    newest = max((run_dir / "checkpoints").glob("step_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    tensors = {f"checkpoint/{k}": v for k, v in load_file(str(newest)).items()}
    tensors.update({f"model/{k}": v for k, v in load_file(str(run_dir / "model.safetensors")).items()})
    return tensors


def trial(recipe: str, out: Path, after: int, delay: float, args) -> tuple[int | None, float]:
    """Start the run, SIGKILL it `delay` seconds after its checkpoint of step `after` appeared, resume it; returns
    (newest checkpoint step at the kill, the seconds of the trial). The step is None when the run had already
    finished."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command(recipe, out, args), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (steps(out) and steps(out)[-1] >= after):
        time.sleep(0.005)
    t1 = time.perf_counter()
    while proc.poll() is None and time.perf_counter() - t1 < delay:
        time.sleep(0.005)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = steps(out)
    if not finished:
        resume = [sys.executable, "-m", "dlkit", "run", recipe, "--resume", str(out),
                  *(["--data-dir", args.data_dir] if args.data_dir else [])]
        done = subprocess.run(resume, env=env(), capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"kill_resume: --resume of {out} failed:\n{done.stderr[-3000:]}")
    return (None if finished else (at_kill[-1] if at_kill else -1)), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20, help="kill-and-resume trials in all (alternating recipes)")
    ap.add_argument("--recipes", nargs="+", default=["mlp-fashion-mnist", "lenet5-mnist"])
    ap.add_argument("--quick", action="store_true", help="shortened runs (~10-20 s a trial on 2 quiet cores)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of each run (1 on a shared machine)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--data-dir", default=None, help="data root (default: DLKIT_DATA)")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (printed) instead of deleting them")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    refs = {}
    for recipe in args.recipes:
        ckpts, interval = reference(recipe, root / f"{recipe}-uninterrupted", args)
        refs[recipe] = (final_tensors(root / f"{recipe}-uninterrupted"), ckpts, interval)
        print(f"{recipe}: uninterrupted run: checkpoints at steps {ckpts[0]}..{ckpts[-1]} ({len(ckpts)}), "
              f"{interval:.2f} s apart", flush=True)
    exact = {r: [0, 0] for r in args.recipes}
    for i in range(args.trials):
        recipe = args.recipes[i % len(args.recipes)]
        ref, ckpts, interval = refs[recipe]
        after, delay = rng.choice(ckpts[:-1]), rng.uniform(0.0, interval)
        out = root / f"{recipe}-trial{i:02d}"
        step, seconds = trial(recipe, out, after, delay, args)
        at = f"{delay:.2f} s after the step-{after} checkpoint"
        if step is None:
            print(f"trial {i:2d} {recipe}: finished before the kill {at} (not counted)", flush=True)
            continue
        got = final_tensors(out)
        same = got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
        exact[recipe][0] += same
        exact[recipe][1] += 1
        print(f"trial {i:2d} {recipe}: killed {at} (newest checkpoint: step {step}), resumed: "
              f"{'bit-exact' if same else 'DIFFERENT'} ({seconds:.1f} s)", flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    good, total = sum(v[0] for v in exact.values()), sum(v[1] for v in exact.values())
    per = ", ".join(f"{r} {v[0]}/{v[1]}" for r, v in exact.items())
    print(f"bit-exact after kill -9 and --resume: {good}/{total} ({per}); torch {torch.__version__}")
    if args.keep:
        print(f"run folders in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if good == total else 1)


if __name__ == "__main__":
    main()
