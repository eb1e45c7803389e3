"""The cost of region-based detectors per image: convolution and fully connected (FF) FLOPs of R-CNN, Fast R-CNN
and Faster R-CNN for n proposals, the notes' Table 4.1 (Notes: 002 §4.3.2).

Counted by running the model: one forward pass in evaluation mode on one image with two given proposals
(`proposals=`), every layer's multiply-adds by `report/summary.py`; a layer whose output has one row per proposal
costs that per proposal, any other once per image. A convolution is conv, a dense layer FF, except the box
corrections (`bbox_pred`) shown apart; matrix products elsewhere (R-CNN's warp, a bilinear resampling measured on
a whole-image proposal) are "other". A classifier (no proposals) is counted the same way, all per image.

FLOPs = 2 x multiply-adds + one addition per output of a layer with a bias. The notes' 2154 M conv and 117 M FF per
AlexNet crop are this count on the original-width AlexNet at 227x227 (conv 2 x 1,076,634,144 + 650,080 bias adds =
2,153.9 M; fc6, fc7 and a 1000-way fc8 2 x 58,621,952 + 9,192 = 117.25 M); 2 x MACs alone gives 2,153.3 M and
117.2 M. The notes do not say at which image size Fast R-CNN's 16,310 M is counted, and no size gives it exactly:
604x604 gives 16,307 M (2 x MACs: 16,303 M), 600x600 (Fast R-CNN's test scale) 16,106 M.

Faster R-CNN is Fast R-CNN plus an RPN on the same feature map (`rpn.RPNHead`: a 3x3 convolution of the map's
width, then 1x1 convolutions to 9 objectness logits and 36 corrections per location), whose cost is added per
image; its n proposals then cost what Fast R-CNN's do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .summary import summarize

PROBE_PROPOSALS = 2  # proposals in the counting pass: a per-proposal row has this many rows of output


@dataclass
class Cost:
    """FLOPs of one detector: `image` (once per image) and `region` (per proposal), per column."""

    name: str
    image_shape: tuple[int, ...]
    image: dict[str, int]
    region: dict[str, int]

    def total(self, proposals: int) -> int:
        """FLOPs per image with `proposals` regions."""
        return sum(self.image.values()) + proposals * sum(self.region.values())


COLUMNS = ("conv", "FF", "box", "other")
HEADERS = {"conv": "conv", "FF": "FF (fc, class scores)", "box": "box corrections", "other": "other"}


def _column(kind: str, name: str) -> str:
    if kind.startswith("Conv"):
        return "conv"
    if kind == "Linear":
        return "box" if name.rsplit(".", 1)[-1] == "bbox_pred" else "FF"
    return "other"


class _WithProposals(nn.Module):
    """The detector called with fixed proposals (the same for every image)."""

    def __init__(self, model: nn.Module, boxes: Tensor):
        super().__init__()
        self.model, self.boxes = model, boxes

    def forward(self, images: Tensor):
        return self.model(images, proposals=[self.boxes] * len(images))


def _flops(module: nn.Module, inputs: tuple) -> tuple[dict[str, int], dict[str, int]]:
    """(per image, per proposal) FLOPs by column of one forward pass of `module` on one image."""
    summary = summarize(module, inputs=inputs)
    image = dict.fromkeys(COLUMNS, 0)
    region = dict.fromkeys(COLUMNS, 0)
    for row in summary.rows:
        if row.macs == 0 or not row.output_shape:
            continue
        layer = module.get_submodule("" if row.name == "(model)" else row.name)
        bias = getattr(layer, "bias", None)
        flops = 2 * row.macs + (math.prod(row.output_shape) if isinstance(bias, Tensor) else 0)
        column = _column(row.kind, row.name)
        if row.output_shape[0] == PROBE_PROPOSALS:
            region[column] += flops // PROBE_PROPOSALS
        else:
            image[column] += flops
    return image, region


def detection_cost(model: nn.Module, image_shape: tuple[int, ...], name: str | None = None) -> Cost:
    """FLOPs of `model` (a detector taking `proposals=`, or a classifier) on one image of `image_shape` (C, H, W),
    split into per-image and per-proposal parts (module docstring). Notes: 002 §4.3.2, Table 4.1."""
    if len(image_shape) != 3:
        raise ConfigError(f"the image shape is (channels, height, width); got {tuple(image_shape)}")
    image = torch.zeros(1, *image_shape)
    if hasattr(model, "proposer"):
        h, w = image_shape[1:]
        boxes = torch.tensor([[0.0, 0.0, float(w), float(h)]] * PROBE_PROPOSALS)
        per_image, per_region = _flops(_WithProposals(model, boxes), (image,))
    else:
        per_image, per_region = _flops(model, (image,))
        if any(per_region.values()):  # a classifier's batch is one image: nothing is per proposal
            raise AssertionError("a classifier's layers ran on more than one image")
    return Cost(name or type(model).__name__, tuple(image_shape), per_image, per_region)


def rpn_cost(model: nn.Module, image_shape: tuple[int, ...], num_anchors: int = 9) -> Cost:
    """The FLOPs per image of a region proposal network (`RPNHead`, `num_anchors` per location) on the shared
    feature map of a Fast R-CNN `model` (`model.features`): what Faster R-CNN adds to Fast R-CNN."""
    from ..models.detection.fast_rcnn import FastRCNN
    from ..models.detection.rpn import RPNHead

    if not isinstance(model, FastRCNN):
        raise ConfigError(f"an RPN reads the shared feature map of a Fast R-CNN; {type(model).__name__} has none")
    with torch.no_grad():
        fmap = model.eval().features(torch.zeros(1, *image_shape))
    head = RPNHead(fmap.shape[1], num_anchors)
    per_image, _ = _flops(head, ([torch.zeros_like(fmap)],))
    return Cost(f"RPN ({num_anchors} anchors)", tuple(image_shape), per_image, dict.fromkeys(COLUMNS, 0))


def faster_rcnn_cost(model: nn.Module, image_shape: tuple[int, ...], name: str | None = None) -> Cost:
    """Faster R-CNN's FLOPs: the Fast R-CNN `model`'s plus an RPN on its feature map."""
    fast, rpn = detection_cost(model, image_shape, name), rpn_cost(model, image_shape)
    image = {k: fast.image[k] + rpn.image[k] for k in COLUMNS}
    return Cost(name or f"faster R-CNN ({fast.name} + RPN)", fast.image_shape, image, fast.region)


def _mflops(flops: int) -> str:
    return f"{flops / 1e6:,.0f} M" if flops >= 1e7 else f"{flops / 1e6:.2f} M"


def _cell(image: int, region: int) -> str:
    parts = ([_mflops(image)] if image else []) + ([f"n x {_mflops(region)}"] if region else [])
    return " + ".join(parts) or "0"


def format_cost_table(costs: list[Cost], proposals: int) -> str:
    """The notes' Table 4.1 for `costs`: per column the per-image and n x per-proposal FLOPs, and the total."""
    columns = [k for k in COLUMNS if any(c.image[k] or c.region[k] for c in costs)]  # no empty column
    rows = [[c.name, "x".join(map(str, c.image_shape))] + [_cell(c.image[k], c.region[k]) for k in columns]
            + [_mflops(c.total(proposals))] for c in costs]
    head = ["detector", "image"] + [HEADERS[k] for k in columns] + [f"total (n = {proposals:,})"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    rule = "-" * len(lines[0])
    return "\n".join([f"FLOPs per image (2 x multiply-adds + bias adds; M = 10^6), n = {proposals:,} proposals",
                      rule, lines[0], rule, *lines[1:], rule])
