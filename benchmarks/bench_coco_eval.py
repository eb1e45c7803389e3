"""Time of a COCO bbox evaluation from files: dlkit against pycocotools and faster-coco-eval, on the same files.

The ground truth and detections are generated (deterministic for `--seed`, by
`dlkit.metrics.detection.synthetic.synthetic_coco`): `--images` images (default 5,000, COCO val's size),
`--classes` classes, up to `--max-gt` boxes per image (crowd regions, small to large), up to `--dets-per-gt`
detections of each moved by `--jitter` x its size, false positives, 1 % of the images with 130 detections of
one class, scores with ties. Each tool reads both JSON files, evaluates, accumulates and
summarises (pycocotools `COCO` + `loadRes` + `COCOeval`; faster-coco-eval `COCO` + `loadRes` + `COCOeval_faster`;
dlkit `load_coco_ground_truth` + `load_coco_results` + `coco_evaluate`, what `dlkit coco-eval` runs),
`--repeats` times interleaved; it prints the median seconds of reading the files, of the evaluation and of both,
the ratios, and the largest difference of the 12 summary numbers from pycocotools.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from dlkit.metrics.detection import coco_evaluate, load_coco_ground_truth, load_coco_results
from dlkit.metrics.detection.synthetic import synthetic_coco


def run_pycocotools(gt: Path, dt: Path) -> tuple[np.ndarray, float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        coco = COCO(str(gt))
        e = COCOeval(coco, coco.loadRes(str(dt)), "bbox")
        t1 = time.perf_counter()
        e.evaluate()
        e.accumulate()
        e.summarize()
    return np.asarray(e.stats), t1 - t0, time.perf_counter() - t1


def run_faster(gt: Path, dt: Path) -> tuple[np.ndarray, float, float]:
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        coco = COCO(str(gt))
        e = COCOeval_faster(coco, coco.loadRes(str(dt)), "bbox")
        t1 = time.perf_counter()
        e.evaluate()
        e.accumulate()
        e.summarize()
    return np.asarray(e.stats[:12]), t1 - t0, time.perf_counter() - t1


def run_dlkit(gt: Path, dt: Path) -> tuple[np.ndarray, float, float]:
    t0 = time.perf_counter()
    truth, info = load_coco_ground_truth(gt)
    dets = load_coco_results(dt, info["image_ids"])
    t1 = time.perf_counter()
    stats = coco_evaluate(truth, dets, info["image_ids"], info["category_ids"]).stats
    return stats, t1 - t0, time.perf_counter() - t1


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--max-gt", type=int, default=14)
    ap.add_argument("--dets-per-gt", type=int, default=3)
    ap.add_argument("--false-positives", type=int, default=20)
    ap.add_argument("--jitter", type=float, default=0.05, help="detection noise, a fraction of the box size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-pycocotools", action="store_true", help="only dlkit and faster-coco-eval")
    args = ap.parse_args(argv)

    gt, dets = synthetic_coco(args.seed, n_images=args.images, n_classes=args.classes, max_gt=args.max_gt,
                              dets_per_gt=args.dets_per_gt, false_positives=args.false_positives,
                              crowded_images=max(1, args.images // 100), jitter=args.jitter)
    print(f"{len(gt['images'])} images, {len(gt['annotations'])} gt boxes "
          f"({sum(a['iscrowd'] for a in gt['annotations'])} crowd), {len(dets)} detections, "
          f"{len(gt['categories'])} classes")
    tools = {"dlkit": run_dlkit, "faster-coco-eval": run_faster}
    if not args.skip_pycocotools:
        tools["pycocotools"] = run_pycocotools
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dt_path = Path(tmp) / "gt.json", Path(tmp) / "dets.json"
        gt_path.write_text(json.dumps(gt))
        dt_path.write_text(json.dumps(dets))
        times = {name: {"read": [], "evaluate": [], "total": []} for name in tools}
        stats = {}
        for _ in range(args.repeats):
            for name, fn in tools.items():
                stats[name], read, evaluate = fn(gt_path, dt_path)
                for key, t in (("read", read), ("evaluate", evaluate), ("total", read + evaluate)):
                    times[name][key].append(t)
    med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    print(f"{'':>17}  {'read files':>10}  {'evaluate':>9}  {'total':>7}   (median of {args.repeats}; totals: runs)")
    for name in tools:
        m = med[name]
        print(f"{name:>17}: {m['read']:9.2f}s  {m['evaluate']:8.2f}s  {m['total']:6.2f}s   "
              f"({', '.join(f'{t:.2f}' for t in times[name]['total'])})")
    for part in ("total", "evaluate"):
        print(f"{part:>8}: dlkit time / faster-coco-eval time = "
              f"{med['dlkit'][part] / med['faster-coco-eval'][part]:.2f} (goal <= 2)"
              + (f"; pycocotools / dlkit = {med['pycocotools'][part] / med['dlkit'][part]:.1f}x faster (goal > 1)"
                 if "pycocotools" in med else ""))
    if "pycocotools" in med:
        for name in ("dlkit", "faster-coco-eval"):
            print(f"max |stats - pycocotools| {name}: {np.abs(stats[name] - stats['pycocotools']).max():.2e}")
    print("stats (dlkit):", " ".join(f"{v:.4f}" for v in stats["dlkit"]))


if __name__ == "__main__":
    main()
