import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from dlkit.data.digits import load_digits_split
from dlkit.errors import ConfigError


def test_split_equals_sklearn_stratified_split_scaled_to_unit_range():
    x_tr, y_tr, x_te, y_te = load_digits_split(test_size=0.2, seed=0)
    x, y = load_digits(return_X_y=True)
    a, b, c, d = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64 and x_tr.shape == (1437, 64)
    np.testing.assert_allclose(x_tr.numpy(), a / 16, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y_te.numpy(), d)
    assert float(x_tr.min()) == 0.0 and float(x_tr.max()) == 1.0 and len(x_te) == 360


def test_split_is_stratified_and_reproducible():
    _, y_tr, _, y_te = load_digits_split(seed=3)
    frac = torch.bincount(y_te, minlength=10).float() / torch.bincount(torch.cat([y_tr, y_te])).float()
    assert torch.all((frac - 0.2).abs() < 0.02)
    assert torch.equal(load_digits_split(seed=3)[0], load_digits_split(seed=3)[0])
    assert not torch.equal(load_digits_split(seed=3)[0], load_digits_split(seed=4)[0])


def test_bad_test_size_is_rejected():
    with pytest.raises(ConfigError, match="test_size"):
        load_digits_split(test_size=1.5)
