"""Class weights for an imbalanced data set, to pass as `weight=` of the cross-entropy (Notes: 002 §4.3.4 class
weights; 003 §4 per-pixel cross-entropy).

The notes weigh the loss of each class (binary: alpha and 1 - alpha) so that rare classes count as much as
frequent ones. For segmentation the common choice is SegNet's median-frequency balancing (Eigen and Fergus,
2015): w_c = median_k(f_k) / f_c, where f_c is the pixel frequency of class c counted over the images that contain
c, so the class of median frequency weighs 1, rarer classes more, frequent ones less.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError


def median_frequency_weights(masks: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """SegNet's class balancing of label maps `masks` [N, H, W]: w_c = median_k(f_k) / f_c, f_c = pixels of class c /
    pixels of the images that contain c (ignored pixels not counted). Classes never seen get weight 0 and do not
    enter the median (with an even number of seen classes it is the mean of the middle two, as numpy's).

    Notes: 002 §4.3.4 (class weights), 003 §4. Returns a float32 tensor [num_classes]."""
    if masks.dim() < 2:
        raise ConfigError(f"median_frequency_weights expects label maps [N, H, W] (one per image); got shape "
                          f"{tuple(masks.shape)}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1; got {num_classes}")
    masks = masks.reshape(len(masks), -1)
    valid = masks != ignore_index if ignore_index is not None else torch.ones_like(masks, dtype=torch.bool)
    labels = masks[valid].long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError(f"labels must be class indices 0..{num_classes - 1} (or ignore_index={ignore_index}); got "
                          f"values {int(labels.min())}..{int(labels.max())}")
    counts = torch.stack([torch.bincount(m[v].long(), minlength=num_classes)[:num_classes]
                          for m, v in zip(masks, valid)]).double()  # [N, C] pixels of each class per image
    present = counts > 0
    totals = (valid.sum(1, keepdim=True).double() * present).sum(0)
    freq = counts.sum(0) / totals.clamp(min=1)
    seen = freq > 0
    w = torch.zeros(num_classes, dtype=torch.float64)
    if seen.any():
        w[seen] = freq[seen].quantile(0.5) / freq[seen]  # the median (mean of the middle two for an even count)
    return w.float()
