"""Regression losses equal torch's in value and gradient (Notes: 003 §2.2.2)."""

import pytest
import torch
import torch.nn.functional as F

from dlkit.errors import ConfigError
from dlkit.losses import regression as R

CASES = [
    ("mse", R.mse_loss, F.mse_loss, {}),
    ("mae", R.mae_loss, F.l1_loss, {}),
    ("smooth_l1", R.smooth_l1_loss, F.smooth_l1_loss, {"beta": 0.7}),
    ("smooth_l1_beta0", R.smooth_l1_loss, F.smooth_l1_loss, {"beta": 0.0}),
    ("huber", R.huber_loss, F.huber_loss, {"delta": 0.7}),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name,ours,ref,kw", CASES, ids=[c[0] for c in CASES])
def test_regression_loss_value_and_gradient_equal_torch(name, ours, ref, kw, reduction):
    y = (torch.randn(6, 5, dtype=torch.float64) * 2).requires_grad_(True)
    t = torch.randn(6, 5, dtype=torch.float64)
    a, b = ours(y, t, reduction=reduction, **kw), ref(y, t, reduction=reduction, **kw)
    torch.testing.assert_close(a, b)
    w = torch.randn_like(a)
    (ga,) = torch.autograd.grad((a * w).sum(), y)
    (gb,) = torch.autograd.grad((b * w).sum(), y)
    torch.testing.assert_close(ga, gb)


def test_mse_hand_example_and_gradient():
    y = torch.tensor([1.0, 2.0], requires_grad=True)
    t = torch.tensor([1.0, 4.0])
    loss = R.mse_loss(y, t)
    assert loss.item() == 2.0
    loss.backward()
    torch.testing.assert_close(y.grad, 2 * (y.detach() - t) / 2)


def test_huber_is_delta_times_smooth_l1():
    y, t = torch.randn(100, dtype=torch.float64) * 3, torch.randn(100, dtype=torch.float64)
    for delta in (0.5, 1.0, 2.5):
        torch.testing.assert_close(R.huber_loss(y, t, delta), delta * R.smooth_l1_loss(y, t, beta=delta))
    # they differ when delta != 1
    assert not torch.allclose(R.huber_loss(y, t, 2.5), R.smooth_l1_loss(y, t, beta=2.5))


def test_modules_equal_functions():
    y, t = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(R.MSELoss()(y, t), torch.nn.MSELoss()(y, t))
    torch.testing.assert_close(R.L1Loss(reduction="sum")(y, t), torch.nn.L1Loss(reduction="sum")(y, t))
    torch.testing.assert_close(R.HuberLoss(delta=0.3)(y, t), torch.nn.HuberLoss(delta=0.3)(y, t))
    torch.testing.assert_close(R.SmoothL1Loss(beta=0.3)(y, t), torch.nn.SmoothL1Loss(beta=0.3)(y, t))


def test_bad_inputs_raise_config_error():
    with pytest.raises(ConfigError, match="same shape"):
        R.mse_loss(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ConfigError, match="reduction"):
        R.mse_loss(torch.zeros(4), torch.zeros(4), reduction="avg")
    with pytest.raises(ConfigError, match="reduction"):
        R.MSELoss(reduction="avg")
    with pytest.raises(ConfigError, match="delta"):
        R.huber_loss(torch.zeros(4), torch.zeros(4), delta=0)
    with pytest.raises(ConfigError, match="beta"):
        R.smooth_l1_loss(torch.zeros(4), torch.zeros(4), beta=-1)
