"""Integral images, rectangle sums in four look-ups, and Haar-like features (Notes: 002 §4.2.1, §4.2.2).

The integral image `II(i, j) = sum_{i' <= i, j' <= j} I(i', j')` (002 §4.2.2) satisfies the recursion
`II(i, j) = II(i, j-1) + II(i-1, j) - II(i-1, j-1) + I(i, j)`; here it is two cumulative sums. It is stored with a
leading row and column of zeros, `II[0, :] = II[:, 0] = 0`, so that the sum of the rectangle with top-left pixel
(y, x), height h and width w is, with no border cases,

    S = II[y+h, x+w] - II[y, x+w] - II[y+h, x] + II[y, x]     (the notes' II(A) - II(B) - II(C) + II(D), Fig. 4.5)

in O(1) whatever the size. A Haar-like feature (Viola-Jones, 002 §4.2.1) is the sum of white sub-rectangles minus
the sum of black ones, 2 to 4 equal sub-rectangles of a rectangle at a fixed position of the 24 x 24 window:
- "two_horizontal": left half minus right half;     "two_vertical": top half minus bottom half;
- "three_horizontal": outer thirds minus the middle third, side by side; "three_vertical": the same stacked;
- "four": the diagonal quarters (top-left + bottom-right) minus the other two.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError

# name: (columns, rows) of the grid of equal cells, and the sign of each cell row by row
HAAR_FEATURES = {
    "two_horizontal": (2, 1, (1, -1)),
    "two_vertical": (1, 2, (1, -1)),
    "three_horizontal": (3, 1, (1, -1, 1)),
    "three_vertical": (1, 3, (1, -1, 1)),
    "four": (2, 2, (1, -1, -1, 1)),
}


def integral_image(image: Tensor) -> Tensor:
    """Integral image [..., H+1, W+1] of `image` [..., H, W], with a zero first row and column (Notes: 002 §4.2.2).

    Integer images are summed in int64, floating ones in their dtype."""
    if not isinstance(image, Tensor) or image.dim() < 2:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ConfigError(f"integral_image takes an image [..., H, W]; got {got}")
    if not image.is_floating_point():
        image = image.long()
    ii = image.cumsum(-2).cumsum(-1)
    return torch.nn.functional.pad(ii, (1, 0, 1, 0))


def rect_sum(ii: Tensor, y: Tensor | int, x: Tensor | int, h: Tensor | int, w: Tensor | int) -> Tensor:
    """Sum of the pixels in the rectangles with top-left (y, x) and size (h, w), from an integral image
    `ii` [..., H+1, W+1], in four look-ups (Notes: 002 §4.2.2). y, x, h, w broadcast; the result has shape
    ii.shape[:-2] + their broadcast shape."""
    y, x, h, w = (torch.as_tensor(v, device=ii.device, dtype=torch.long) for v in (y, x, h, w))
    rows, cols = ii.shape[-2] - 1, ii.shape[-1] - 1
    if bool(((y < 0) | (x < 0) | (h < 0) | (w < 0) | (y + h > rows) | (x + w > cols)).any()):
        raise ConfigError(f"a rectangle leaves the {rows} x {cols} image: rectangles need 0 <= y, y + h <= {rows}, "
                          f"0 <= x, x + w <= {cols} and h, w >= 0")
    y, x, h, w = torch.broadcast_tensors(y, x, h, w)
    flat = ii.flatten(-2)
    stride = ii.shape[-1]

    def at(r: Tensor, c: Tensor) -> Tensor:
        return flat[..., (r * stride + c).reshape(-1)].reshape(*ii.shape[:-2], *r.shape)

    return at(y + h, x + w) - at(y, x + w) - at(y + h, x) + at(y, x)


def haar_feature(ii: Tensor, kind: str, y: Tensor | int, x: Tensor | int, h: Tensor | int,
                 w: Tensor | int) -> Tensor:
    """Value of the Haar-like feature `kind` on the rectangle (y, x, h, w) of the integral image `ii` (Notes: 002
    §4.2.1): white cells minus black cells; h and w must divide into the feature's rows and columns of cells."""
    if kind not in HAAR_FEATURES:
        raise ConfigError(f"kind must be one of {tuple(HAAR_FEATURES)}; got {kind!r}")
    cols, rows, signs = HAAR_FEATURES[kind]
    y, x, h, w = (torch.as_tensor(v, device=ii.device, dtype=torch.long) for v in (y, x, h, w))
    if bool(((h % rows != 0) | (w % cols != 0)).any()):
        raise ConfigError(f"a {kind} feature splits its rectangle into {rows} x {cols} equal cells (rows x columns): "
                          f"it needs a height that is a multiple of {rows} and a width that is a multiple of {cols}")
    ch, cw = h // rows, w // cols
    total = 0
    for i, sign in enumerate(signs):  # 2 to 4 cells, each one rectangle sum
        r, c = divmod(i, cols)
        total = total + sign * rect_sum(ii, y + r * ch, x + c * cw, ch, cw)
    return total


def haar_positions(kind: str, window: int = 24) -> Tensor:
    """Every placement (y, x, h, w) [F, 4] of the feature `kind` in a `window` x `window` patch: each height a
    multiple of its cell rows, each width of its cell columns, at each position where it fits (Notes: 002 §4.2.1;
    the five kinds in 24 x 24 give 162,336 features)."""
    if kind not in HAAR_FEATURES:
        raise ConfigError(f"kind must be one of {tuple(HAAR_FEATURES)}; got {kind!r}")
    cols, rows, _ = HAAR_FEATURES[kind]
    hs = torch.arange(rows, window + 1, rows)
    ws = torch.arange(cols, window + 1, cols)
    h, w, y, x = torch.meshgrid(hs, ws, torch.arange(window), torch.arange(window), indexing="ij")
    fits = (y + h <= window) & (x + w <= window)
    return torch.stack([y[fits], x[fits], h[fits], w[fits]], dim=1)
