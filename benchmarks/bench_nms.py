"""Time of NMS on 10,000 boxes: dlkit.ops.nms (vectorised, torch operations) against torchvision.ops.nms (a C++ loop).

Two scenes of N boxes in a 1000 x 1000 image: "uniform" (random positions, sizes up to 100) and "clustered" (boxes
jittered around N / 20 objects, as a detector's raw output before NMS). For each scene and IoU threshold the two
implementations run interleaved (alternating which goes first) for several rounds after a warm-up; each time is the
median. The script checks that both keep the same boxes and prints ms, the number kept, and the ratio dlkit /
torchvision (< 1: dlkit faster). `--threads` sets torch's intra-op threads (torchvision's CPU kernel uses one).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
import torchvision

import dlkit.ops as ops


def scene(kind: str, n: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        xy = torch.rand(n, 2, generator=g) * 1000
        wh = torch.rand(n, 2, generator=g) * 99 + 1
    else:
        centres = torch.rand(n // 20, 2, generator=g) * 1000
        wh = (torch.rand(n // 20, 2, generator=g) * 150 + 20)[torch.arange(n) % (n // 20)]
        xy = centres[torch.arange(n) % (n // 20)] - wh / 2 + torch.randn(n, 2, generator=g) * wh * 0.1
    return torch.cat([xy, xy + wh], 1).to(device), torch.rand(n, generator=g).to(device)


def timed(fn, device: str) -> tuple[float, torch.Tensor]:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, device {args.device}, "
          f"threads {torch.get_num_threads()}, N = {args.n}, {args.rounds} rounds (median)")
    print(f"{'scene':<10} {'IoU t':>5} {'kept':>6} {'dlkit ms':>9} {'tv ms':>8} {'ratio':>6}")
    for kind in ("uniform", "clustered"):
        boxes, scores = scene(kind, args.n, 0, args.device)
        for t in args.thresholds:
            ours_fn = functools.partial(ops.nms, boxes, scores, t)
            ref_fn = functools.partial(torchvision.ops.nms, boxes, scores, t)
            _, a = timed(ours_fn, args.device)  # warm-up, and the equality check
            _, b = timed(ref_fn, args.device)
            if not torch.equal(a.cpu(), b.cpu()):
                raise SystemExit(f"dlkit and torchvision keep different boxes ({kind}, t = {t})")
            ours, ref = [], []
            for r in range(args.rounds):
                pair = [(ours, ours_fn), (ref, ref_fn)]
                for times, fn in pair if r % 2 == 0 else pair[::-1]:
                    times.append(timed(fn, args.device)[0])
            mo, mr = statistics.median(ours) * 1e3, statistics.median(ref) * 1e3
            print(f"{kind:<10} {t:>5.2f} {len(b):>6} {mo:>9.1f} {mr:>8.1f} {mo / mr:>6.2f}")


if __name__ == "__main__":
    main()
