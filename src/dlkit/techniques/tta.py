"""Test-time augmentation: average the predictions over augmented copies of each test image (Notes: 003 §3.3.1).

The notes' recipe: (1) make augmented images A_l(I), (2) predict p_l = CNN(A_l(I)), (3) average p = Avg_l p_l.
`tta_predict` builds the views from named deterministic transforms (identity, flips, rotations), optional crops
(the centre or the five crops of AlexNet; five crops x {identity, hflip} is its "ten-crop") and any callables
(random augmentations included, which draw from `generator`). Averaging softmax probabilities keeps rows summing
to 1. `TTAModel` wraps a classifier so that evaluation code can use it like the plain model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..data.transforms import Transform
from ..errors import ConfigError

VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "rot90": lambda x: torch.rot90(x, 1, dims=(-2, -1)),
    "rot180": lambda x: x.flip(-2, -1),
    "rot270": lambda x: torch.rot90(x, -1, dims=(-2, -1)),
}
CROP_POSITIONS = ("center", "top_left", "top_right", "bottom_left", "bottom_right")
_ACTIVATIONS = {"softmax": lambda z: torch.softmax(z, dim=1), "sigmoid": torch.sigmoid, None: lambda z: z}


def crop(x: torch.Tensor, size: int | tuple[int, int], position: str = "center") -> torch.Tensor:
    """The `size` crop of a batch [N, C, H, W] at a named position (centre offset (H - h) // 2, (W - w) // 2)."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    hh, ww = x.shape[-2:]
    if not (0 < h <= hh and 0 < w <= ww):
        raise ConfigError(f"crop size {(h, w)} must be positive and fit in the input {(hh, ww)}")
    offsets = {"center": ((hh - h) // 2, (ww - w) // 2), "top_left": (0, 0), "top_right": (0, ww - w),
               "bottom_left": (hh - h, 0), "bottom_right": (hh - h, ww - w)}
    if position not in offsets:
        raise ConfigError(f"crop position must be one of {CROP_POSITIONS}; got {position!r}")
    top, left = offsets[position]
    return x[..., top:top + h, left:left + w]


def _view_fn(t) -> Callable:
    if isinstance(t, str):
        if t not in VIEWS:
            raise ConfigError(f"unknown TTA transform {t!r}; expected one of {sorted(VIEWS)} or a callable")
        return VIEWS[t]
    if not callable(t):
        raise ConfigError(f"TTA transforms are names {sorted(VIEWS)} or callables; got {t!r}")
    return t


def tta_views(x: torch.Tensor, transforms: Sequence = ("identity", "hflip"), crops: int | tuple[int, int] | None = None,
              crop_positions: Sequence[str] = CROP_POSITIONS,
              generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The augmented copies A_l(x): every transform applied to every crop (or to x itself when `crops` is None)."""
    if isinstance(transforms, str) or callable(transforms):
        transforms = [transforms]
    if len(transforms) == 0:
        raise ConfigError("tta needs at least one transform, e.g. transforms=('identity', 'hflip')")
    bases = [x] if crops is None else [crop(x, crops, p) for p in crop_positions]
    views = []
    for base in bases:
        for t in transforms:
            fn = _view_fn(t)
            views.append(fn(base, generator=generator) if isinstance(t, Transform) else fn(base))
    return views


@torch.no_grad()
def tta_predict(model: nn.Module, x: torch.Tensor, transforms: Sequence = ("identity", "hflip"),
                crops: int | tuple[int, int] | None = None, crop_positions: Sequence[str] = CROP_POSITIONS,
                activation: str | None = "softmax", generator: torch.Generator | None = None,
                return_views: bool = False):
    """Test-time augmentation: p = (1/L) sum_l act(model(A_l(x))) over the views of `tta_views` (Notes: 003 §3.3.1).

    `activation` is "softmax" (class probabilities, rows sum to 1), "sigmoid" (multi-label) or None (average the
    raw outputs). The model runs in eval mode (its mode is restored afterwards) without gradients. Returns [N, K],
    or ([N, K], [L, N, K]) with `return_views`.
    """
    if activation not in _ACTIVATIONS:
        raise ConfigError(f"activation must be 'softmax', 'sigmoid' or None; got {activation!r}")
    if x.ndim != 4:
        raise ConfigError(f"tta_predict expects a batch [N, C, H, W]; got {tuple(x.shape)}")
    act = _ACTIVATIONS[activation]
    was_training = model.training
    model.eval()
    try:
        preds = torch.stack([act(model(v)) for v in tta_views(x, transforms, crops, crop_positions, generator)])
    finally:
        model.train(was_training)
    mean = preds.mean(0)
    return (mean, preds) if return_views else mean


class TTAModel(nn.Module):
    """A classifier wrapped with test-time augmentation; forward returns log of the TTA-averaged probabilities.

    Notes: 003 §3.3.1. log p works wherever logits do: softmax(log p) = p, argmax is the TTA decision and
    cross_entropy(log p, y) = -log p_y. Gradients do not flow (evaluation only).
    """

    def __init__(self, model: nn.Module, transforms: Sequence = ("identity", "hflip"),
                 crops: int | tuple[int, int] | None = None, crop_positions: Sequence[str] = CROP_POSITIONS):
        super().__init__()
        self.model, self.transforms, self.crops, self.crop_positions = model, tuple(transforms), crops, crop_positions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = tta_predict(self.model, x, self.transforms, self.crops, self.crop_positions, activation="softmax")
        return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
