"""Class heat maps of a convolutionalised classifier, overlaid on the image (Notes: 003 §4.1-§4.1.1, 000 §3.11.1).

A classifier whose dense layers become convolutions (`dlkit.techniques.transfer.fully_convolutional`) run on an
image larger than its training size returns a coarse score map [C, h, w], one score vector per receptive field.
`class_heatmap` turns one class's map into a heat map in [0, 1] at the image's size (softmax over the classes,
as the notes' per-pixel probabilities, then bilinear upsampling); `plot_class_heatmap` writes the image blended
with that heat map in the 'jet' colour map (red = high) as a PNG of the image's own resolution.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from ..errors import ConfigError  # noqa: E402


def class_heatmap(scores: Tensor, class_index: int, size: tuple[int, int], softmax: bool = True) -> Tensor:
    """Heat map [H, W] in [0, 1] of class `class_index` from scores [C, h, w], bilinearly upsampled to `size`.

    softmax=True: the class probability at each position (softmax over C); False: the raw scores min-max scaled.
    """
    scores = torch.as_tensor(scores)
    if scores.dim() != 3:
        raise ConfigError(f"class_heatmap expects a score map [C, h, w]; got shape {tuple(scores.shape)} "
                          f"(take one image of a batch: scores[0])")
    if not 0 <= class_index < scores.shape[0]:
        raise ConfigError(f"class_index must be in 0..{scores.shape[0] - 1}; got {class_index}")
    s = scores.detach().float().cpu()
    heat = s.softmax(0)[class_index] if softmax else s[class_index]
    heat = F.interpolate(heat[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
    if not softmax:
        lo, hi = heat.min(), heat.max()
        heat = (heat - lo) / (hi - lo) if hi > lo else torch.zeros_like(heat)
    return heat.clamp(0, 1)


def heatmap_overlay(image: Tensor | np.ndarray, heat: Tensor, alpha: float = 0.5) -> np.ndarray:
    """RGB [H, W, 3] in [0, 1]: (1 - alpha) image + alpha jet(heat); image [3, H, W] or [H, W] (any range)."""
    img = np.asarray(torch.as_tensor(image).detach().cpu(), dtype=np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[-1] != 3 or img.shape[:2] != tuple(heat.shape):
        raise ConfigError(f"heatmap_overlay expects an image [3, H, W] or [H, W] of the heat map's size "
                          f"{tuple(heat.shape)}; got {tuple(np.shape(image))}")
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    colour = plt.get_cmap("jet")(np.asarray(heat, dtype=np.float32))[..., :3]
    return (1 - alpha) * img + alpha * colour


def plot_class_heatmap(image: Tensor | np.ndarray, scores: Tensor, class_index: int, path: Path,
                       softmax: bool = True, alpha: float = 0.5) -> Path:
    """Write `path` (PNG, the image's H x W): the image overlaid with class `class_index`'s upsampled heat map.

    Notes: 003 §4.1.1. `scores` [C, h, w] is the coarse output of a convolutionalised classifier on `image`.
    """
    shape = np.shape(image)
    size = shape[-2:] if len(shape) == 3 and shape[0] in (1, 3) else shape[:2]
    overlay = heatmap_overlay(image, class_heatmap(scores, class_index, size, softmax), alpha)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.clip(overlay, 0, 1))
    return path
