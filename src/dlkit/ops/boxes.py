"""Boxes: formats, conversions, areas and the overlap measures IoU and GIoU (Notes: 002 §4, §4.1; 000 §3.12).

A box is 4 numbers in one of three formats:
- "xyxy": corners (x1, y1, x2, y2), the contract of dlkit's detectors (as torchvision and COCO's evaluation);
- "xywh": top-left corner and size (x1, y1, w, h), COCO's annotation files;
- "cxcywh": centre and size (cx, cy, w, h), the notes' `BB = [x, y, w, h]` (002 §4, 000 §3.12) and YOLO's.
Areas are continuous, `(x2 - x1)(y2 - y1)` (torchvision's convention, no pixel-inclusive +1).

IoU (002 §4.1): `IoU(A, B) = |A n B| / |A u B| = |A n B| / (|A| + |B| - |A n B|)`. The notes print the denominator
as `|A| + |B| - |A u B|`, a typo for `- |A n B|`. GIoU (Rezatofighi et al. 2019, used by DETR's box loss, 002 §4.3)
subtracts the part of the smallest enclosing box C that the union leaves empty: `GIoU = IoU - |C \\ (A u B)| / |C|`.
Where torchvision divides 0 by 0 (two empty boxes, or an empty enclosing box) these functions return 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def check_boxes(boxes: Tensor, what: str = "boxes", batched: bool = False) -> None:
    """Refuse anything but a floating tensor [N, 4] (or [..., 4] with `batched`)."""
    if not isinstance(boxes, Tensor):
        raise ConfigError(f"{what} must be a tensor [N, 4]; got {type(boxes).__name__}")
    ok = boxes.shape[-1:] == (4,) if batched else (boxes.dim() == 2 and boxes.shape[1] == 4)
    if not ok:
        raise ConfigError(f"{what} must have shape [{'...' if batched else 'N'}, 4] (one box per row); got "
                          f"{tuple(boxes.shape)}. A single box needs a leading dimension: box[None]")
    if not boxes.is_floating_point():
        raise ConfigError(f"{what} must be a floating-point tensor; got {boxes.dtype}. Convert with .float()")


def _to_xyxy(boxes: Tensor, fmt: str) -> Tensor:
    a, b, c, d = boxes.unbind(-1)
    if fmt == "xyxy":
        return boxes.clone()
    if fmt == "xywh":
        return torch.stack([a, b, a + c, b + d], dim=-1)
    return torch.stack([a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d], dim=-1)  # cxcywh


def _from_xyxy(boxes: Tensor, fmt: str) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    if fmt == "xyxy":
        return boxes
    if fmt == "xywh":
        return torch.stack([x1, y1, x2 - x1, y2 - y1], dim=-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)  # cxcywh


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes [..., 4] between "xyxy", "xywh" and "cxcywh" (Notes: 002 §4, 000 §3.12). Returns a new tensor."""
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ConfigError(f"{name} must be one of {BOX_FORMATS}; got {fmt!r}")
    check_boxes(boxes, batched=True)
    if in_fmt == out_fmt:
        return boxes.clone()
    return _from_xyxy(_to_xyxy(boxes, in_fmt), out_fmt)


def box_area(boxes: Tensor) -> Tensor:
    """Area [N] of xyxy boxes [N, 4], `(x2 - x1)(y2 - y1)`."""
    check_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip xyxy boxes [..., 4] to an image of `size` (height, width): x in [0, W], y in [0, H]."""
    check_boxes(boxes, batched=True)
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64, ascending) of the xyxy boxes whose width and height are both >= `min_size`."""
    check_boxes(boxes)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.where((w >= min_size) & (h >= min_size))[0]


def _upcast(t: Tensor) -> Tensor:
    """Half precision loses too much in products of coordinates: compute in float32."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den, and 0 where den is 0 (where torchvision returns NaN)."""
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def box_inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union areas [N, M] of xyxy boxes a [N, 4] and b [M, 4].

    An inverted box (x2 < x1 or y2 < y1) counts as empty.
    """
    check_boxes(a, "boxes1")
    check_boxes(b, "boxes2")
    a, b = _upcast(a), _upcast(b)
    ax1, ay1, ax2, ay2 = (c[:, None] for c in a.T.contiguous())  # columns: 2-d broadcasts, no strided last dim
    bx1, by1, bx2, by2 = b.T.contiguous()
    area_a = (ax2 - ax1).clamp(min=0) * (ay2 - ay1).clamp(min=0)
    area_b = (bx2 - bx1).clamp(min=0) * (by2 - by1).clamp(min=0)
    w = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0)
    h = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    inter = w * h
    return inter, area_a + area_b - inter


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU [N, M] of xyxy boxes a [N, 4] and b [M, 4] (Notes: 002 §4.1, 000 §3.12).

    `IoU = |A n B| / (|A| + |B| - |A n B|)`; 0 for two empty boxes (torchvision: NaN).
    """
    inter, union = box_inter_union(a, b)
    return _safe_ratio(inter, union)


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise GIoU [N, M] in [-1, 1] of xyxy boxes a [N, 4] and b [M, 4]: `IoU - (|C| - |A u B|) / |C|`,
    C the smallest box enclosing both. Inverted boxes are refused (ConfigError), as torchvision asserts.
    """
    inter, union = box_inter_union(a, b)
    for name, boxes in (("boxes1", a), ("boxes2", b)):
        if (boxes[:, 2:] < boxes[:, :2]).any():
            raise ConfigError(f"generalized_box_iou needs x2 >= x1 and y2 >= y1 in every box of {name}; got an "
                              "inverted box. Convert other formats with box_convert(boxes, fmt, 'xyxy')")
    a, b = _upcast(a), _upcast(b)
    lt = torch.minimum(a[:, None, :2], b[None, :, :2])
    rb = torch.maximum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return _safe_ratio(inter, union) - _safe_ratio(enclosing - union, enclosing)
