"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), embedded: no download needed.

The small real data set of the CPU recipes and tests (Notes: 000 §2.1, mini-batch training).
Pixels 0..16 are scaled to [0, 1]; the train/test split is stratified and fixed by `seed`.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError


def load_digits_split(test_size: float = 0.2, seed: int = 0):
    """Digits as (x_train float32 [N, 64] in [0, 1], y_train int64 [N], x_test, y_test), split fixed by seed.

    The split is stratified (same class proportions in both parts); reshape x to [N, 1, 8, 8] for a CNN.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ConfigError(f"test_size must be a fraction in (0, 1); got {test_size}")
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    f = lambda a: torch.from_numpy((a / 16.0).astype(np.float32))
    g = lambda a: torch.from_numpy(a.astype(np.int64))
    return f(x_tr), g(y_tr), f(x_te), g(y_te)
