"""YOLOv3's box parametrisation, its responsible-anchor assignment and its loss (Notes: 000 §3.12.1, 003 §6.0.2).

Box parametrisation. A cell at column c_x, row c_y of a map of stride s predicts, for its i-th anchor of shape
(p_w, p_h), the offsets (t_x, t_y, t_w, t_h) of a box

    b_x = c_x + sigma(t_x),   b_y = c_y + sigma(t_y),   b_w = p_w e^{t_w},   b_h = p_h e^{t_h}

in map units; times the stride the centre is in pixels (the anchors are kept in pixels, so b_w, b_h are already).
The notes' remark that the cell right of (0, 0) is "(0, 1)" indexes (row, column); c_x is the column.

Assignment. A ground-truth box is predicted by one (cell, anchor) pair only: the anchor whose shape overlaps the
box's shape most (IoU of (w, h) at a common centre, over the anchors of every scale, so it also picks the scale)
and, on that anchor's map, the cell that contains the box centre.

Loss (000 §3.12.1, per image, summed over the batch and divided by its size):

    L_loc = lambda_coord sum_resp [(x - x^)^2 + (y - y^)^2 + (sqrt(w) - sqrt(w^))^2 + (sqrt(h) - sqrt(h^))^2]
    L_obj = sum_resp (C - 1)^2 + lambda_noobj sum_other C^2,     L_cls = sum_resp sum_c (p(c) - p^(c))^2

with x = sigma(t_x) the centre inside the cell, w = p_w e^{t_w} / image width (h likewise; YOLOv1's image-relative
sizes), C = sigma(t_o) and p(c) = sigma(t_c) (independent sigmoids), lambda_coord = 5, lambda_noobj = 0.5, and
p^ the multi-hot classes of the boxes a pair is responsible for. The notes print the sums as 0..S x S and 0..B (one
term too many each); they run over the S x S cells and the B anchors. The notes sum the class term over responsible
cells; with anchors it is over responsible (cell, anchor) pairs, as in YOLOv3. `kind="bce"` replaces the squared
errors of the objectness and class terms by binary cross-entropies (YOLOv3's paper, 002 §4.3.4 multi-label BCE),
and `ignore_thresh` leaves out of the no-object term the predictions whose box already overlaps a ground-truth box by
more than it (YOLOv3's 0.5); both are extensions, off by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from ..nn.activations import sigmoid
from ..ops.anchors import wh_iou
from ..ops.boxes import box_convert, box_iou
from .classification import binary_cross_entropy_with_logits

#: e^{t_w} is clamped at 1000 / 16, as torchvision's BoxCoder clamps its log-size deltas (no overflow early on).
MAX_LOG_SIZE = math.log(1000.0 / 16)
YOLO_LOSS_KINDS = ("mse", "bce")


def yolo_grid(height: int, width: int, device=None, dtype=None) -> tuple[Tensor, Tensor]:
    """(c_x [1, W], c_y [H, 1]): the column and row index of every cell of an H x W map."""
    cx = torch.arange(width, device=device, dtype=dtype).view(1, width)
    cy = torch.arange(height, device=device, dtype=dtype).view(height, 1)
    return cx, cy


def yolo_decode(t: Tensor, anchors: Tensor, stride: float) -> Tensor:
    """Boxes (centre x, centre y, w, h) in pixels from offsets t [..., A, H, W, 4] (t_x, t_y, t_w, t_h).

    Notes: 000 §3.12.1. b_x = (c_x + sigma(t_x)) s, b_y = (c_y + sigma(t_y)) s, b_w = p_w e^{t_w}, b_h = p_h e^{t_h},
    with (c_x, c_y) the cell's (column, row), s the map's stride and `anchors` [A, 2] the (p_w, p_h) in pixels.
    """
    if t.dim() < 4 or t.shape[-1] != 4 or anchors.shape != (t.shape[-4], 2):
        raise ConfigError(f"yolo_decode takes offsets [..., A, H, W, 4] and anchors [A, 2]; got {tuple(t.shape)} and "
                          f"{tuple(anchors.shape)}")
    cx, cy = yolo_grid(t.shape[-3], t.shape[-2], t.device, t.dtype)
    bx = (cx + sigmoid(t[..., 0])) * stride
    by = (cy + sigmoid(t[..., 1])) * stride
    size = anchors.to(t).view(-1, 1, 1, 2) * torch.exp(t[..., 2:4].clamp(max=MAX_LOG_SIZE))
    return torch.stack([bx, by, size[..., 0], size[..., 1]], dim=-1)


def yolo_assign(boxes: Tensor, anchors: Tensor, strides: Sequence[float],
                grid_sizes: Sequence[tuple[int, int]]) -> dict[str, Tensor]:
    """The responsible (scale, anchor, cell) of every ground-truth box: dict of int64 [M] `level`, `anchor`
    (index within its level), `row`, `col`.

    Notes: 000 §3.12.1 "Training". `boxes` [M, 4] xyxy pixels; `anchors` [L, A, 2] (w, h) pixels, level l has the
    stride `strides[l]` and a map of `grid_sizes[l]` = (H, W) cells. The anchor is the one of best shape IoU with the
    box over all L x A anchors (the first on ties); the cell is (floor(c_y / s), floor(c_x / s)) of the box centre,
    kept inside the map for a centre on the image's far edge.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ConfigError(f"yolo_assign takes boxes [M, 4] (x1, y1, x2, y2); got {tuple(boxes.shape)}")
    if anchors.dim() != 3 or anchors.shape[-1] != 2 or not len(strides) == len(grid_sizes) == anchors.shape[0]:
        raise ConfigError(f"yolo_assign takes anchors [L, A, 2] and one stride and grid size per level; got anchors "
                          f"{tuple(anchors.shape)}, {len(strides)} strides, {len(grid_sizes)} grid sizes")
    levels, per_level = anchors.shape[:2]
    wh = (boxes[:, 2:] - boxes[:, :2]).to(anchors.dtype)
    if (wh < 0).any():
        raise ConfigError("yolo_assign: boxes must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1; convert other "
                          "formats with dlkit.ops.box_convert")
    best = wh_iou(wh, anchors.reshape(-1, 2)).argmax(dim=1) if len(boxes) else boxes.new_zeros(0, dtype=torch.long)
    level, anchor = best // per_level, best % per_level
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    stride = torch.as_tensor(list(strides), dtype=centre.dtype, device=centre.device)[level]
    size = torch.as_tensor([list(g) for g in grid_sizes], dtype=torch.long, device=centre.device)[level]
    col = torch.minimum(torch.floor(centre[:, 0] / stride).long().clamp(min=0), size[:, 1] - 1)
    row = torch.minimum(torch.floor(centre[:, 1] / stride).long().clamp(min=0), size[:, 0] - 1)
    return {"level": level, "anchor": anchor, "row": row, "col": col}


def _first_per_key(key: Tensor) -> tuple[Tensor, Tensor]:
    """(index of the first occurrence of each distinct key, inverse map entry -> distinct key)."""
    uniq, inverse = torch.unique(key, return_inverse=True)
    order = torch.arange(len(key), device=key.device)
    first = torch.full((len(uniq),), len(key), dtype=torch.long, device=key.device)
    return first.scatter_reduce(0, inverse, order, reduce="amin"), inverse


def yolov3_loss(preds: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]], anchors: Tensor,
                strides: Sequence[float], image_size: tuple[int, int], num_classes: int,
                lambda_coord: float = 5.0, lambda_noobj: float = 0.5, kind: str = "mse",
                ignore_thresh: float | None = None) -> dict[str, Tensor]:
    """{loss_box: L_loc, loss_objectness, loss_classifier} of the module docstring, averaged over the images.

    Notes: 000 §3.12.1. `preds[l]` [B, A, H_l, W_l, 5 + C]: (t_x, t_y, t_w, t_h, t_o, t_1 .. t_C) of level l;
    `targets` B dicts {boxes [M, 4] xyxy pixels, labels [M] in 1..C}; `anchors` [L, A, 2] pixels; `image_size`
    (H, W) of the (padded) input. An image without boxes contributes only its no-object term.
    """
    if kind not in YOLO_LOSS_KINDS:
        raise ConfigError(f"the YOLOv3 loss kind must be one of {YOLO_LOSS_KINDS} ('mse': the notes' squared "
                          f"errors); got {kind!r}")
    if len(preds) != anchors.shape[0] or any(p.dim() != 5 or p.shape[-1] != 5 + num_classes for p in preds):
        raise ConfigError(f"yolov3_loss takes one [B, A, H, W, 5 + {num_classes}] prediction per level "
                          f"({anchors.shape[0]} levels); got {[tuple(p.shape) for p in preds]}")
    batch, per_level = preds[0].shape[0], anchors.shape[1]
    if len(targets) != batch:
        raise ConfigError(f"yolov3_loss: {batch} images but {len(targets)} targets; give one dict per image")
    img_h, img_w = image_size
    grid_sizes = [tuple(p.shape[2:4]) for p in preds]
    parts = {"image": [], "level": [], "anchor": [], "row": [], "col": [], "box": [], "label": []}
    for b, target in enumerate(targets):
        boxes, labels = target["boxes"].to(preds[0].dtype), target["labels"]
        if len(labels) and (labels.min() < 1 or labels.max() > num_classes):
            raise ConfigError(f"labels must be in 1..{num_classes} (0 is the background); got "
                              f"{labels.min().item()}..{labels.max().item()}")
        for k, v in yolo_assign(boxes, anchors.to(boxes), strides, grid_sizes).items():
            parts[k].append(v)
        parts["image"].append(torch.full((len(boxes),), b, dtype=torch.long, device=boxes.device))
        parts["box"].append(boxes)
        parts["label"].append(labels.long())
    assigned = {k: torch.cat(v) for k, v in parts.items()}
    zero = preds[0].sum() * 0
    loss_box, loss_obj, loss_cls = zero, zero, zero
    for lvl, pred in enumerate(preds):
        height, width = grid_sizes[lvl]
        here = assigned["level"] == lvl
        image, anchor, row, col = (assigned[k][here] for k in ("image", "anchor", "row", "col"))
        boxes, labels = assigned["box"][here], assigned["label"][here]
        first, inverse = _first_per_key(((image * per_level + anchor) * height + row) * width + col)
        obj_logit = pred[..., 4]
        positive = torch.zeros_like(obj_logit, dtype=torch.bool)
        noobj = torch.ones_like(positive)
        if ignore_thresh is not None:
            with torch.no_grad():
                decoded = box_convert(yolo_decode(pred[..., :4].detach(), anchors[lvl].to(pred), strides[lvl]),
                                      "cxcywh", "xyxy")
                for b, target in enumerate(targets):
                    if len(target["boxes"]):
                        best = box_iou(decoded[b].reshape(-1, 4), target["boxes"].to(decoded)).max(dim=1).values
                        noobj[b] &= (best <= ignore_thresh).view(noobj.shape[1:])
        if len(first):
            i, a, r, c = image[first], anchor[first], row[first], col[first]
            positive[i, a, r, c] = True
            p = pred[i, a, r, c]  # [P, 5 + C]
            box = boxes[first]
            centre, size = (box[:, :2] + box[:, 2:]) / 2, box[:, 2:] - box[:, :2]
            stride = strides[lvl]
            cell = torch.stack([c, r], dim=1).to(p)
            offset_target = centre / stride - cell
            scale = p.new_tensor([img_w, img_h])
            pred_size = anchors[lvl].to(p)[a] * torch.exp(p[:, 2:4].clamp(max=MAX_LOG_SIZE)) / scale
            loss_box = loss_box + lambda_coord * ((sigmoid(p[:, :2]) - offset_target).square().sum()
                                                  + (pred_size.sqrt() - (size / scale).sqrt()).square().sum())
            cls_target = torch.zeros(len(first), num_classes, dtype=p.dtype, device=p.device)
            cls_target[inverse, labels - 1] = 1.0  # multi-hot: every class of the boxes the pair answers for
            if kind == "mse":
                loss_cls = loss_cls + (sigmoid(p[:, 5:]) - cls_target).square().sum()
            else:
                loss_cls = loss_cls + binary_cross_entropy_with_logits(p[:, 5:], cls_target, reduction="sum")
        noobj &= ~positive
        if kind == "mse":
            conf = sigmoid(obj_logit)
            loss_obj = loss_obj + (conf[positive] - 1).square().sum() + lambda_noobj * conf[noobj].square().sum()
        else:
            pos_logit, neg_logit = obj_logit[positive], obj_logit[noobj]
            pos = binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit), reduction="sum")
            neg = binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit), reduction="sum")
            loss_obj = loss_obj + pos + lambda_noobj * neg
    return {"loss_box": loss_box / batch, "loss_objectness": loss_obj / batch, "loss_classifier": loss_cls / batch}
