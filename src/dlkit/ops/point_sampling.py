"""Point-sampled mask losses: reading maps at real-valued points and choosing the uncertain points (Notes: 002
§5.3.3, Mask2Former's "training on a random subset of points"; the sampling is PointRend's, Kirillov et al. 2020).

Points are (x, y) in [0, 1] relative to the map's extent: pixel (i, j) of an H x W map has its centre at
((j + 0.5) / W, (i + 0.5) / H), where `point_sample` returns its value exactly; in between it interpolates
bilinearly (grid_sample, align_corners=False), and near the border it takes the border value (padding_mode
'border'): sampled at the pixel centres of a finer grid, it equals `F.interpolate(..., 'bilinear')`.

Importance sampling (`uncertain_points`): draw `oversample` K uniform candidates, score each by its uncertainty
-|logit| (highest where the predicted mask is 0.5), keep the `importance` K most uncertain, and fill the rest of the
K with fresh uniform points. Mask2Former: K = 12544 (112^2), oversample 3, importance 0.75.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError


def point_sample(maps: Tensor, points: Tensor) -> Tensor:
    """Values [n, C, P] of maps [n, C, H, W] at points [n, P, 2] ((x, y) in [0, 1]), bilinear."""
    if maps.dim() != 4 or points.dim() != 3 or points.shape[-1] != 2 or len(points) != len(maps):
        raise ConfigError(f"point_sample takes maps [n, C, H, W] and points [n, P, 2]; got {tuple(maps.shape)} and "
                          f"{tuple(points.shape)}")
    grid = 2 * points[:, :, None].to(maps.dtype) - 1  # [n, P, 1, 2] in [-1, 1]
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0]


def uncertain_points(mask_logits: Tensor, num_points: int, oversample: float = 3.0, importance: float = 0.75,
                     generator: torch.Generator | None = None) -> Tensor:
    """Points [n, K, 2] for mask logits [n, 1, H, W]: the `importance` K most uncertain (-|logit|) of
    `oversample` K uniform candidates, then uniform points (module docstring). Notes: 002 §5.3.3."""
    if oversample < 1 or not 0 <= importance <= 1 or num_points < 1:
        raise ConfigError(f"uncertain_points needs num_points >= 1, oversample >= 1, importance in [0, 1]; got "
                          f"{num_points}, {oversample}, {importance}")
    n = len(mask_logits)
    dev = mask_logits.device
    candidates = torch.rand(n, int(num_points * oversample), 2, device=dev, generator=generator)
    uncertainty = -point_sample(mask_logits.detach(), candidates)[:, 0].abs()
    k = int(importance * num_points)
    top = uncertainty.topk(k, dim=1).indices
    chosen = candidates.gather(1, top[..., None].expand(-1, -1, 2))
    rest = torch.rand(n, num_points - k, 2, device=dev, generator=generator)
    return torch.cat([chosen, rest], 1)


def pixel_centres(height: int, width: int, device=None) -> Tensor:
    """The (x, y) points [H W, 2] of every pixel centre of an H x W map, row by row."""
    ys, xs = torch.meshgrid((torch.arange(height, device=device) + 0.5) / height,
                            (torch.arange(width, device=device) + 0.5) / width, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], -1)
