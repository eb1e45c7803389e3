"""The R-CNN box coder: a box as a correction of a reference box (anchor or proposal) (Notes: 002 §4.3.2).

With the reference box in centre form (x_a, y_a, w_a, h_a) and the target box (x, y, w, h), the notes' corrections are

    dx = (x - x_a) / w_a,   dy = (y - y_a) / h_a,   dw = ln(w / w_a),   dh = ln(h / h_a)

and decoding inverts them: `(x_a + w_a dx, y_a + h_a dy, w_a e^dw, h_a e^dh)`. As in Faster R-CNN implementations
(torchvision's `BoxCoder`), the corrections are multiplied by `weights` (wx, wy, ww, wh) when encoding and divided
when decoding, so the regression targets have similar scales; (10, 10, 5, 5) is the R-CNN box head's choice and
(1, 1, 1, 1) gives the notes' formulas. Decoding clamps dw, dh at `clip` = ln(1000/16), so that e^dw cannot overflow.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError
from .boxes import check_boxes

DEFAULT_CLIP = math.log(1000.0 / 16)


def _centres(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


class BoxCoder:
    """Encode xyxy boxes as corrections (dx, dy, dw, dh) of reference boxes, and decode them back.

    `decode(encode(b, a), a) == b` (up to rounding) while the size ratios w / w_a and h / h_a stay below e^clip
    (62.5 by default). Both take tensors [..., 4] that broadcast against each other, e.g. per-class deltas
    [N, K, 4] against anchors [N, 1, 4].
    """

    def __init__(self, weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
                 clip: float = DEFAULT_CLIP):
        if len(weights) != 4 or any(w <= 0 for w in weights):
            raise ConfigError(f"weights must be 4 positive numbers (wx, wy, ww, wh); got {tuple(weights)}")
        self.weights, self.clip = tuple(float(w) for w in weights), float(clip)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, clip={self.clip:.4g})"

    def encode(self, boxes: Tensor, references: Tensor) -> Tensor:
        """Corrections [..., 4] that turn `references` into `boxes` (both xyxy with positive sizes)."""
        check_boxes(boxes, batched=True)
        check_boxes(references, "references", batched=True)
        wx, wy, ww, wh = self.weights
        x, y, w, h = _centres(boxes)
        xa, ya, wa, ha = _centres(references.to(boxes.dtype))
        return torch.stack([wx * (x - xa) / wa, wy * (y - ya) / ha, ww * torch.log(w / wa),
                            wh * torch.log(h / ha)], dim=-1)

    def decode(self, deltas: Tensor, references: Tensor) -> Tensor:
        """xyxy boxes [..., 4] obtained by applying the corrections `deltas` to `references`."""
        if not isinstance(deltas, Tensor) or deltas.shape[-1:] != (4,):
            got = tuple(deltas.shape) if isinstance(deltas, Tensor) else type(deltas).__name__
            raise ConfigError(f"deltas must be a tensor [..., 4] (dx, dy, dw, dh); got {got}")
        check_boxes(references, "references", batched=True)
        wx, wy, ww, wh = self.weights
        xa, ya, wa, ha = _centres(references.to(deltas.dtype))
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.clip)
        dh = (deltas[..., 3] / wh).clamp(max=self.clip)
        x, y = xa + dx * wa, ya + dy * ha
        half_w, half_h = 0.5 * torch.exp(dw) * wa, 0.5 * torch.exp(dh) * ha
        return torch.stack([x - half_w, y - half_h, x + half_w, y + half_h], dim=-1)
