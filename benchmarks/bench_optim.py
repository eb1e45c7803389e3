"""Time of one optimizer step on ResNet-50-sized parameters: dlkit.optim against torch.optim (foreach and fused).

The 161 parameter tensors of ResNet-50 (25,557,032 values) get random gradients; for SGD with momentum, Adam
and AdamW the script times one step of ours (foreach, the default), torch.optim with foreach=True and torch.optim
with fused=True (where this torch build has it), interleaving the implementations and taking the median of
several repeats after a warm-up. It prints ms per step and the ratios ours/torch-foreach and ours/fused, and
also ours with fused=True (which calls the same fused kernel as torch).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch

import dlkit.optim as ours


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


def _make(case, values, grads) -> dict[str, torch.optim.Optimizer]:
    make_ours, make_torch = CASES[case]
    opts = {"ours (foreach)": make_ours(_params(values, grads), foreach=True),
            "torch foreach": make_torch(_params(values, grads), foreach=True)}
    for name, make in (("torch fused", make_torch), ("ours (fused)", make_ours)):
        try:
            opts[name] = make(_params(values, grads), fused=True)
            opts[name].step()  # fails here when this torch build has no fused kernel for the device/dtype
        except (RuntimeError, TypeError, ValueError, AttributeError) as e:
            opts.pop(name, None)
            print(f"  ({case}: {name} unavailable: {e})")
    return opts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (< 20 s in all)")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    repeats = args.repeats or (5 if args.quick else 15)
    shapes = resnet50_shapes()
    n = sum(torch.Size(s).numel() for s in shapes)
    assert len(shapes) == 161 and n == 25_557_032, (len(shapes), n)
    print(f"ResNet-50 parameter list: {len(shapes)} tensors, {n:,} values, float32, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}; median of {repeats} steps after a warm-up; load average "
          f"{os.getloadavg()[0]:.1f} (times are noisy when other processes share the CPU)")
    print(f"{'optimizer':<18} {'ours ms':>8} {'torch foreach':>14} {'torch fused':>12} {'ours/foreach':>13} "
          f"{'ours/fused':>11} {'ours fused ms':>14} {'ours fused/fused':>17}")
    values, grads = _tensors(shapes, 0.1, seed=0), _tensors(shapes, 0.02, seed=1)
    for case in CASES:
        opts = _make(case, values, grads)
        with torch.no_grad():
            for opt in opts.values():  # warm-up: allocates the state
                opt.step()
                opt.step()
            times: dict[str, list[float]] = {k: [] for k in opts}
            for _ in range(repeats):
                for name, opt in opts.items():
                    t = time.perf_counter()
                    opt.step()
                    times[name].append(time.perf_counter() - t)
        ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        ours, ref = ms["ours (foreach)"], ms["torch foreach"]
        fused, ours_fused = ms.get("torch fused", math.nan), ms.get("ours (fused)", math.nan)
        print(f"{case:<18} {ours:>8.1f} {ref:>14.1f} {fused:>12.1f} {ours / ref:>13.2f} {ours / fused:>11.2f} "
              f"{ours_fused:>14.1f} {ours_fused / fused:>17.2f}")
        del opts


if __name__ == "__main__":
    main()
