"""Selective search on the 40 Raccoon validation photos: recall of the ground-truth boxes at IoU 0.5 and 0.7 against
the number of proposals, and seconds per image (Notes: 002 §4.3.2: region proposals need a high recall).

Each photo (187 x 270 to 720 x 1280 pixels) is searched as is (`--max-side 0`) or shrunk so that its longer side is
at most `--max-side` pixels (default 256, bilinear with antialiasing; the boxes are scaled back to the photo, and
recall is measured against the photo's own boxes). Time is the wall time of `selective_search` per photo, after
reading and decoding it, with `--threads` torch threads (default 1). Prints a markdown table.

    python benchmarks/selective_search_recall.py --data-dir ../shared/datasets [--mode fast] [--max-side 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from dlkit.data.voc import raccoon_detection
from dlkit.metrics.detection.proposal_recall import DEFAULT_COUNTS, proposal_recall
from dlkit.ops import selective_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DLKIT_DATA"), help="data root holding raccoon/")
    parser.add_argument("--mode", default="fast", choices=("single", "fast", "quality"))
    parser.add_argument("--max-side", type=int, default=256, help="shrink photos to this longer side (0: as is)")
    parser.add_argument("--images", type=int, default=None, help="only the first N val photos")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ds = raccoon_detection("val", args.data_dir)
    n = len(ds) if args.images is None else min(args.images, len(ds))
    proposals, gts, seconds = [], [], []
    for i in range(n):
        image, target = ds[i]
        t = time.perf_counter()
        boxes = selective_search(image, mode=args.mode, max_side=args.max_side or None, seed=args.seed)
        seconds.append(time.perf_counter() - t)
        proposals.append(boxes)
        gts.append(target["boxes"])
    r05 = proposal_recall(proposals, gts, DEFAULT_COUNTS, iou=0.5)
    r07 = proposal_recall(proposals, gts, DEFAULT_COUNTS, iou=0.7)
    counts = [len(p) for p in proposals]
    size = "as is" if not args.max_side else f"longer side <= {args.max_side}"
    print(f"Raccoon val: {n} photos, {sum(len(g) for g in gts)} boxes; mode '{args.mode}', {size}, "
          f"{args.threads} thread(s)")
    print(f"proposals per photo: mean {statistics.mean(counts):.0f}, min {min(counts)}, max {max(counts)}; "
          f"seconds per photo: mean {statistics.mean(seconds):.2f}, median {statistics.median(seconds):.2f}, "
          f"max {max(seconds):.2f}\n")
    print("| proposals | recall@0.5 | recall@0.7 |")
    print("|---|---|---|")
    for c in DEFAULT_COUNTS:
        print(f"| {c} | {r05[c]:.3f} | {r07[c]:.3f} |")


if __name__ == "__main__":
    main()
