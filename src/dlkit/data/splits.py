"""Train/validation/test splits of in-memory tensors as TensorLoaders (Notes: 000 §2.5, held-out data).

The validation set is the last `val_size` training samples, held out and never trained on. With
`val_size=0` there is no validation split: the test loader is also the one scored during training, and
`val_name` is "test" so that curves and reports say so.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..engine.distributed import DistInfo
from .loader import TensorLoader


class Splits(NamedTuple):
    train: TensorLoader
    val: TensorLoader
    test: TensorLoader
    val_name: str  # "val", or "test" when the test split stands in for a validation split


def in_memory_splits(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                     batch_size: int, seed: int = 0, dist: DistInfo | None = None, val_size: int = 0,
                     subset: int = 0, drop_last: bool = False) -> Splits:
    """Loaders over in-memory tensors; `subset` > 0 keeps the first `subset` samples of each split (smoke mode)."""
    dist = dist or DistInfo()
    if subset:
        x_train, y_train = x_train[:subset], y_train[:subset]
        x_test, y_test = x_test[:subset], y_test[:subset]
        val_size = min(val_size, len(x_train) // 5)
    if val_size:
        x_val, y_val = x_train[-val_size:], y_train[-val_size:]
        x_train, y_train = x_train[:-val_size], y_train[:-val_size]
    else:
        x_val, y_val = x_test, y_test
    eval_bs = max(batch_size, 1000)
    train = TensorLoader(x_train, y_train, batch_size=batch_size, shuffle=True, seed=seed, drop_last=drop_last,
                         rank=dist.rank, world_size=dist.world_size)
    val = TensorLoader(x_val, y_val, batch_size=eval_bs, shuffle=False)
    test = TensorLoader(x_test, y_test, batch_size=eval_bs, shuffle=False)
    return Splits(train, val, test, "val" if val_size else "test")
