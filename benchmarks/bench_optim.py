"""Time of one optimizer step on ResNet-50-sized parameters: dlkit.optim against torch.optim's fused kernel.

The 161 parameter tensors of ResNet-50 (25,557,032 values) get random gradients; for SGD with momentum, Adam
and AdamW the script times one step of: torch.optim with fused=True (the reference) and foreach=True; dlkit's
default (`Adam(params)`: impl "auto"), its `_foreach` chain, its compiled update (`impl="compiled"`, one
inductor loop per tensor) and `fused=True` (torch's kernel called by dlkit). The implementations are
interleaved and each time is the median of several steps after a warm-up. It prints ms per step, the ratio of
each of dlkit's paths to torch's fused kernel (the goal for the default: <= 1.1), and the compilation time of the
first compiled step. "auto" switches from foreach to the compiled update after AUTO_COMPILE_AFTER elements x steps
(ResNet-50: at step 196); the script lowers that threshold to 0 so that "ours default" is measured past its switch.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch

import dlkit.optim as ours
import dlkit.optim.adam as adam_impl


def resnet50_shapes() -> list[tuple[int, ...]]:
    """Shapes of torchvision's resnet50 parameters in order: stem, 16 bottlenecks (4 with downsample), fc."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    in_ch = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        out = 4 * width
        for b in range(blocks):
            shapes += [(width, in_ch, 1, 1), (width,), (width,), (width, width, 3, 3), (width,), (width,),
                       (out, width, 1, 1), (out,), (out,)]
            if b == 0:
                shapes += [(out, in_ch, 1, 1), (out,), (out,)]
            in_ch = out
    return shapes + [(1000, 2048), (1000,)]


def _tensors(shapes, scale: float, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(s, generator=g).sub_(0.5).mul_(scale) for s in shapes]


def _params(values: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Fresh parameters (copies of `values`) sharing the read-only gradients `grads`."""
    params = []
    for v, g in zip(values, grads):
        p = torch.nn.Parameter(v.clone())
        p.grad = g
        params.append(p)
    return params


CASES = {
    "SGD momentum 0.9": (lambda ps, **kw: ours.SGD(ps, lr=0.1, momentum=0.9, **kw),
                         lambda ps, **kw: torch.optim.SGD(ps, lr=0.1, momentum=0.9, **kw)),
    "Adam": (lambda ps, **kw: ours.Adam(ps, lr=1e-3, **kw),
             lambda ps, **kw: torch.optim.Adam(ps, lr=1e-3, **kw)),
    "AdamW (wd 0.05)": (lambda ps, **kw: ours.AdamW(ps, lr=1e-3, weight_decay=0.05, **kw),
                        lambda ps, **kw: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.05, **kw)),
}
COLUMNS = ("torch fused", "torch foreach", "ours default", "ours foreach", "ours compiled", "ours fused")


def _make(case, values, grads) -> tuple[dict[str, torch.optim.Optimizer], float]:
    """The optimizers of one case, each stepped twice (state allocated, kernels compiled); and the seconds of the
    compiled optimizer's first step (its compilation, unless already compiled in this process)."""
    make_ours, make_torch = CASES[case]
    adam = not case.startswith("SGD")
    opts = {"torch foreach": make_torch(_params(values, grads), foreach=True)}
    makers = [("torch fused", make_torch, dict(fused=True)), ("ours fused", make_ours, dict(fused=True))]
    if adam:
        makers.insert(0, ("ours compiled", make_ours, dict(impl="compiled")))
        opts["ours foreach"] = make_ours(_params(values, grads), impl="foreach")
    else:
        opts["ours foreach"] = make_ours(_params(values, grads), foreach=True)
    compile_s = math.nan
    for name, make, kw in makers:
        try:
            opts[name] = make(_params(values, grads), **kw)
            t = time.perf_counter()
            opts[name].step()  # fails here when this torch build has no fused kernel (or no compiler)
            if name == "ours compiled":
                compile_s = time.perf_counter() - t
        except (RuntimeError, TypeError, ValueError, AttributeError) as e:
            opts.pop(name, None)
            print(f"  ({case}: {name} unavailable: {e})")
    opts["ours default"] = make_ours(_params(values, grads))
    with torch.no_grad():
        for opt in opts.values():
            opt.step()
            opt.step()
    return opts, compile_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process's CPU time (use with --threads 1 on a shared machine: the work a step "
                         "does, not how long the scheduler let it run)")
    args = ap.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 15)
    switch = math.ceil(adam_impl.AUTO_COMPILE_AFTER / 25_557_032)
    adam_impl.AUTO_COMPILE_AFTER = 0.0  # measure the default as it runs from its switch step (here `switch`) on
    shapes = resnet50_shapes()
    n = sum(torch.Size(s).numel() for s in shapes)
    assert len(shapes) == 161 and n == 25_557_032, (len(shapes), n)
    print(f"ResNet-50 parameter list: {len(shapes)} tensors, {n:,} values, float32, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}; median of {repeats} steps after a warm-up "
          f"({'process CPU time' if args.cpu_time else 'wall time'}); load average "
          f"{os.getloadavg()[0]:.1f} (times are noisy when other processes share the CPU); the default Adam/AdamW "
          f"switches to the compiled update at step {switch}")
    print(f"{'optimizer':<18}" + "".join(f"{c:>15}" for c in COLUMNS) + f"{'default/fused':>15}"
          f"{'compiled/fused':>15}{'foreach/fused':>15}{'compile s':>11}")
    values, grads = _tensors(shapes, 0.1, seed=0), _tensors(shapes, 0.02, seed=1)
    verdict = {}
    for case in CASES:
        opts, compile_s = _make(case, values, grads)
        times: dict[str, list[float]] = {k: [] for k in opts}
        with torch.no_grad():
            for _ in range(repeats):
                for name, opt in opts.items():
                    t = clock()
                    opt.step()
                    times[name].append(clock() - t)
        ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        fused = ms.get("torch fused", math.nan)
        used = getattr(opts["ours default"], "impl_used", {})
        print(f"{case:<18}" + "".join(f"{ms.get(c, math.nan):>15.1f}" for c in COLUMNS)
              + "".join(f"{ms.get(c, math.nan) / fused:>15.2f}" for c in ("ours default", "ours compiled",
                                                                          "ours foreach"))
              + f"{compile_s:>11.1f}" + (f"   (default ran: {used})" if used else ""))
        verdict[case] = ms.get("ours default", math.nan) / fused
        del opts
    print(f"DLKIT ADAMW DEFAULT / TORCH FUSED: {verdict['AdamW (wd 0.05)']:.2f} (goal <= 1.1); Adam "
          f"{verdict['Adam']:.2f}; SGD (foreach, as torch's default) {verdict['SGD momentum 0.9']:.2f}")


if __name__ == "__main__":
    main()
