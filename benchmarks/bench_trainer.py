"""Per-step overhead of the Trainer against a bare PyTorch loop on the char-GPT training step.

Both train the `char-gpt-shakespeare` model (4 layers, 4 heads, 128 wide, block 64, batch 12, no biases) on the
same random windows with the same step: forward, next-token cross-entropy, backward, clipping at norm 1, torch's
fused AdamW over the model's parameter groups, the warm-up + cosine schedule, and the loss read on the host every
`log_every` = 10 steps (the recipe's logging). The bare loop is that and nothing else; the Trainer adds its
bookkeeping (step context, NaN guard, running means, callbacks, checkpoint timer). Both end with equal weights
(checked). Runs are interleaved and the median of the repeats is taken; the script prints ms/step for each and
the ratio trainer / bare (goal <= 1.03).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from dlkit.data.char_lm import RandomWindows
from dlkit.engine.machine import describe_machine
from dlkit.engine.trainer import Trainer, TrainerConfig
from dlkit.models.sequence.gpt import GPT
from dlkit.tasks.language_model import LanguageModelTask

V, BLOCK, BATCH, LAYERS, HEADS, WIDTH = 65, 64, 12, 4, 4, 128
LOG_EVERY = 10


def _ids() -> torch.Tensor:
    return torch.randint(0, V, (200_000,), generator=torch.Generator().manual_seed(0))


def _task(steps: int) -> LanguageModelTask:
    torch.manual_seed(0)
    model = GPT(V, BLOCK, LAYERS, HEADS, WIDTH, dropout=0.0, bias=False)
    return LanguageModelTask(model, block_size=BLOCK, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1,
                             warmup_steps=min(100, steps), lr_decay_steps=max(steps, 2000), min_lr=1e-4)


def bare(steps: int, clock=time.perf_counter) -> tuple[float, dict]:
    """The loop with nothing but the training step and the recipe's logging read; returns seconds and weights."""
    task = _task(steps)
    model = task.model
    (opt,), (sched,) = task.configure_optimizers(None)
    params = [p for g in opt.param_groups for p in g["params"]]
    batches = RandomWindows(_ids(), BATCH, BLOCK, seed=0)
    pending = []
    model.train()
    t = clock()
    for step in range(1, steps + 1):
        x, y = next(batches)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        pending.append(loss.detach())
        if step % LOG_EVERY == 0:
            torch.stack(pending).mean().item()
            pending.clear()
    return clock() - t, model.state_dict()


def trainer(steps: int, clock=time.perf_counter) -> tuple[float, dict]:
    """The same training through `Trainer.fit` (headless: no run folder, no validation data)."""
    task = _task(steps)
    cfg = TrainerConfig(max_steps=steps, grad_clip_norm=1.0, log_every=LOG_EVERY, progress=False, tensorboard=False,
                        checkpoint_every_minutes=None)
    tr = Trainer(task, RandomWindows(_ids(), BATCH, BLOCK, seed=0), None, cfg)
    t = clock()
    tr.fit()
    return clock() - t, tr.model.state_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats of 30 steps")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process's CPU time instead of wall time: with --threads 1 it counts the "
                         "work done and not the waits for other processes' turns on a shared machine")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps, steps = args.repeats or (3 if args.quick else 7), args.steps or (30 if args.quick else 60)
    print(f"char GPT {LAYERS}x{HEADS}x{WIDTH}, block {BLOCK}, batch {BATCH}; {describe_machine()}, torch "
          f"{torch.__version__}; median of {reps} interleaved repeats of {steps} "
          f"steps, {'process CPU time' if args.cpu_time else 'wall time'}; load average {os.getloadavg()[0]:.1f}")
    clock = time.process_time if args.cpu_time else time.perf_counter
    bare(3), trainer(3)  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {"bare": [], "trainer": []}
    for _ in range(reps):
        tb, wb = bare(steps, clock)
        tt, wt = trainer(steps, clock)
        times["bare"].append(tb / steps)
        times["trainer"].append(tt / steps)
        assert all(torch.equal(wb[k], wt[k]) for k in wb), "the Trainer and the bare loop trained different weights"
    b, e = (1e3 * statistics.median(times[k]) for k in ("bare", "trainer"))
    print(f"{'loop':10s} {'ms/step':>9s}")
    print(f"{'bare':10s} {b:9.2f}\n{'trainer':10s} {e:9.2f}")
    print(f"ratio trainer / bare: {e / b:.3f} (goal <= 1.03); per-repeat ratios: "
          + ", ".join(f"{t / b_:.3f}" for b_, t in zip(times['bare'], times['trainer'])) + "; equal weights: yes")


if __name__ == "__main__":
    main()
