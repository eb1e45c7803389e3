"""Forward and backward time of RoI pooling and RoI align: dlkit.ops (vectorised torch gathers, autograd backward)
against torchvision.ops (C++ kernels), on a Faster R-CNN-sized case: 2 images, 256 channels of a stride-16 map of an
800 x 1088 image (50 x 68 cells), 512 regions per image, 7 x 7 outputs; RoI align with sampling ratio 2, aligned.

Both run interleaved (alternating which goes first) for several rounds after a warm-up; each time is the median.
The script checks both give the same outputs and input gradients, and prints ms and the ratio dlkit / torchvision
(< 1: dlkit faster). `--threads` sets torch's intra-op threads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision.ops as tvops

from dlkit.ops.roi import roi_align, roi_pool


def case(rois_per_image: int, channels: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, 50, 68, generator=g)
    xy = torch.rand(2 * rois_per_image, 2, generator=g) * torch.tensor([1000.0, 700.0])
    wh = torch.rand(2 * rois_per_image, 2, generator=g) * 300 + 8
    batch = torch.arange(2).repeat_interleave(rois_per_image)[:, None].float()
    return x, torch.cat([batch, xy, xy + wh], dim=1)


def step(fn, x, rois, upstream):
    x = x.detach().requires_grad_()
    t0 = time.perf_counter()
    out = fn(x, rois)
    t1 = time.perf_counter()
    (out * upstream).sum().backward()
    return t1 - t0, time.perf_counter() - t1, out.detach(), x.grad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--rois", type=int, default=512, help="regions per image")
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, rois = case(args.rois, args.channels)
    ops = {
        "roi_pool": (lambda t, r: roi_pool(t, r, 7, 1 / 16), lambda t, r: tvops.roi_pool(t, r, 7, 1 / 16)),
        "roi_align": (lambda t, r: roi_align(t, r, 7, 1 / 16, 2, True),
                      lambda t, r: tvops.roi_align(t, r, 7, 1 / 16, 2, True)),
    }
    print(f"torch {torch.__version__}, threads {args.threads}, x {tuple(x.shape)}, {len(rois)} regions, "
          f"{args.rounds} rounds (median)")
    print(f"{'op':10} {'dlkit fwd':>10} {'tv fwd':>8} {'ratio':>6} {'dlkit bwd':>10} {'tv bwd':>8} {'ratio':>6}")
    for name, (ours, theirs) in ops.items():
        upstream = torch.randn(len(rois), args.channels, 7, 7, generator=torch.Generator().manual_seed(1))
        a, b = step(ours, x, rois, upstream), step(theirs, x, rois, upstream)  # warm-up and the equality check
        torch.testing.assert_close(a[2], b[2], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(a[3], b[3], rtol=1e-4, atol=1e-4)
        times = {"dlkit": [], "tv": []}
        for r in range(args.rounds):
            order = [("dlkit", ours), ("tv", theirs)][:: 1 if r % 2 == 0 else -1]
            for who, fn in order:
                times[who].append(step(fn, x, rois, upstream)[:2])
        med = {who: [statistics.median(t[i] for t in ts) * 1e3 for i in range(2)] for who, ts in times.items()}
        print(f"{name:10} {med['dlkit'][0]:10.1f} {med['tv'][0]:8.1f} {med['dlkit'][0] / med['tv'][0]:6.2f} "
              f"{med['dlkit'][1]:10.1f} {med['tv'][1]:8.1f} {med['dlkit'][1] / med['tv'][1]:6.2f}")


if __name__ == "__main__":
    main()
