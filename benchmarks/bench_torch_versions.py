"""CPU training-step time of ResNet-20 and of the char-GPT under several torch installations, back to back.

The project moved from torch 2.13.0 (CPU build) to torch 2.14.1 (a CUDA build that also runs on the CPU, the one
torchvision 0.29.1 imports beside). This script times the same two training steps under each Python interpreter
given with `--pythons` (each a venv with its own torch; the first is the baseline), interleaving them: one child
process per interpreter and repeat, A B A B ..., so a change in the machine's load hits both alike. Each child
prints its torch version and its median ms/step as JSON; the parent prints the medians over repeats and each
interpreter's ratio to the baseline (> 1: slower than the baseline).

- ResNet-20 (`resnet_cifar20`, CIFAR layout, 269,722 parameters): batch 128 of 3 x 32 x 32, cross-entropy, SGD
  with momentum 0.9 and weight decay 5e-4.
- char-GPT (the `char-gpt-shakespeare` model: 4 layers, 4 heads, 128 wide, block 64, batch 12, no biases,
  dropout 0): its loss, backward, clipping at norm 1, torch's fused AdamW (weight decay 0.1 on the matrices).

Random inputs stand in for data (the speed does not depend on them). On a shared machine use `--threads 1
--cpu-time` (process CPU time of one intra-op thread: the work a step does, not the turns the scheduler gives).

    python benchmarks/bench_torch_versions.py --pythons /work/main/.venv/bin/python /work/venv214/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("resnet20", "char_gpt")


def _resnet20_step():
    import torch
    import torch.nn.functional as F

    from dlkit.registry import create_model

    torch.manual_seed(0)
    model = create_model("resnet_cifar20").train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))

    def step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _char_gpt_step():
    import torch

    from dlkit.models.sequence.gpt import GPT

    torch.manual_seed(0)
    vocab, block, batch = 65, 64, 12
    model = GPT(vocab, block, 4, 4, 128, dropout=0.0, bias=False).train()
    params = list(model.parameters())
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-3, betas=(0.9, 0.99), fused=True)
    x, y = torch.randint(0, vocab, (batch, block)), torch.randint(0, vocab, (batch, block))

    def step():
        loss = model.loss(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def child(args) -> None:
    """Time `args.steps` steps of each model after `args.warmup` warm-up steps; print JSON on the last line."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    for name, make in (("resnet20", _resnet20_step), ("char_gpt", _char_gpt_step)):
        step = make()
        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.steps):
            t = clock()
            step()
            times.append((clock() - t) * 1e3)
        out[name] = statistics.median(times)
    print(json.dumps(out))


def parent(args) -> None:
    """Run one child per interpreter and repeat, interleaved, and print the medians and the ratios."""
    pythons = args.pythons or [sys.executable]
    flags = ["--child", "--warmup", str(args.warmup), "--steps", str(args.steps)]
    flags += ["--threads", str(args.threads)] if args.threads else []
    flags += ["--cpu-time"] if args.cpu_time else []
    runs: dict[str, list[dict]] = {p: [] for p in pythons}
    for _ in range(args.repeats):
        for py in pythons:
            res = subprocess.run([py, str(Path(__file__).resolve()), *flags], capture_output=True, text=True,
                                 check=False)
            if res.returncode != 0:
                sys.exit(f"bench_torch_versions: {py} failed (exit {res.returncode}): "
                         f"{(res.stderr.strip().splitlines() or ['no output'])[-1]}")
            runs[py].append(json.loads(res.stdout.strip().splitlines()[-1]))
    clock = "process CPU time" if args.cpu_time else "wall time"
    print(f"# {args.repeats} interleaved repeats x {args.steps} steps (after {args.warmup} warm-up), medians, "
          f"{clock}, threads {runs[pythons[0]][0]['threads']}, load average {os.getloadavg()[0]:.1f}")
    base = {m: statistics.median(r[m] for r in runs[pythons[0]]) for m in MODELS}
    print("| torch | python | ResNet-20 ms/step (repeats) | ratio | char-GPT ms/step (repeats) | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for py in pythons:
        cells = []
        for m in MODELS:
            values = [r[m] for r in runs[py]]
            med = statistics.median(values)
            cells += [f"{med:.1f} ({min(values):.1f}-{max(values):.1f})", f"{med / base[m]:.3f}"]
        print(f"| {runs[py][0]['torch']} | {py} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pythons", nargs="+", help="interpreters to compare, the first the baseline (default: this one)")
    ap.add_argument("--quick", action="store_true", help="1 repeat, 2 warm-up + 3 timed steps")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats per interpreter (default 5)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per model (default 3)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per model (default 10)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall time")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.warmup = args.warmup or (2 if args.quick else 3)
    args.steps = args.steps or (3 if args.quick else 10)
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
