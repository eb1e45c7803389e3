"""Faster R-CNN inference time per image on the CPU: dlkit's `fasterrcnn_resnet50_fpn` against torchvision's with the
same weights (copied into dlkit's model), in one run (Notes: 002 §4.3.2; issue 15's performance item, goal <= 1.1).

Both models see the same images (no resizing: torchvision's transform is set to the images' size, so it only
normalises and pads), with heads perturbed so that a few hundred boxes pass the score threshold (as a trained detector
does; the initial heads score every box alike). The two run interleaved, alternating which goes first, after a
warm-up; each time is the median over rounds. The script checks both give the same detections and prints ms per
image and the ratio dlkit / torchvision (< 1: dlkit faster). `--threads` sets torch's intra-op threads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from dlkit import create_model
from dlkit.models.torchvision_weights import load_torchvision_state_dict


def models(size: int):
    torch.manual_seed(0)
    body = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    tv = torchvision.models.detection.FasterRCNN(_resnet_fpn_extractor(body, 5), num_classes=91, min_size=size,
                                                 max_size=size)
    with torch.no_grad():
        for p in [*tv.rpn.head.parameters(), *tv.roi_heads.parameters()]:
            p.normal_(0, 0.02)
    ours = create_model("fasterrcnn_resnet50_fpn")
    load_torchvision_state_dict(ours, tv.state_dict())
    return tv.eval(), ours.eval()


@torch.inference_mode()
def timed(fn, images):
    t0 = time.perf_counter()
    out = fn(images)
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", type=int, default=800, help="square image side (pixels)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tv, ours = models(args.size)
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    runs = {"dlkit": lambda x: ours(x), "torchvision": lambda x: tv(list(x))}
    _, a = timed(runs["dlkit"], image)  # warm-up and the equality check
    _, b = timed(runs["torchvision"], image)
    for k in ("boxes", "scores", "labels"):
        torch.testing.assert_close(a[0][k], b[0][k], rtol=1e-4, atol=1e-3)
    times = {k: [] for k in runs}
    for r in range(args.rounds):
        for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            times[k].append(timed(runs[k], image)[0])
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {args.threads}, image "
          f"{args.size}x{args.size}, {len(a[0]['boxes'])} detections, {args.rounds} rounds (median)")
    print(f"dlkit {med['dlkit']:.0f} ms, torchvision {med['torchvision']:.0f} ms, ratio "
          f"{med['dlkit'] / med['torchvision']:.3f}")


if __name__ == "__main__":
    main()
