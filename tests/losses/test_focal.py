"""The focal loss equals torchvision.ops.sigmoid_focal_loss and the notes' table (Notes: 002 §4.3.4)."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.ops as tvo

from dlkit.errors import ConfigError
from dlkit.losses import FocalLoss, sigmoid_focal_loss


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.75, 1.5), (-1.0, 0.0)])
def test_focal_loss_value_and_gradient_equal_torchvision(alpha, gamma, reduction):
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x = (torch.randn(16, 5, generator=g, dtype=torch.float64) * 4).requires_grad_(True)
        y = (torch.rand(16, 5, generator=g) < 0.3).double()
        if seed == 2:
            y = torch.rand(16, 5, generator=g, dtype=torch.float64)  # soft targets, as torchvision allows
        a = sigmoid_focal_loss(x, y, alpha, gamma, reduction)
        b = tvo.sigmoid_focal_loss(x, y, alpha, gamma, reduction)
        torch.testing.assert_close(a, b)
        (ga,) = torch.autograd.grad(a.sum(), x)
        (gb,) = torch.autograd.grad(b.sum(), x)
        torch.testing.assert_close(ga, gb)


def test_defaults_are_retinanet_and_torchvision():
    x, y = torch.randn(4, 3), (torch.rand(4, 3) > 0.5).float()
    torch.testing.assert_close(sigmoid_focal_loss(x, y), tvo.sigmoid_focal_loss(x, y))
    torch.testing.assert_close(FocalLoss()(x, y), tvo.sigmoid_focal_loss(x, y, reduction="mean"))


def test_gamma_zero_is_bce_and_half_alpha_is_half_bce():
    # 002 §4.3.4: gamma = 0 gives BCE; alpha = 0.5 weighs both classes by 1/2
    x, y = torch.randn(50, dtype=torch.float64) * 3, (torch.rand(50) > 0.5).double()
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(x, y, alpha=-1, gamma=0), bce)
    torch.testing.assert_close(sigmoid_focal_loss(x, y, alpha=0.5, gamma=0), 0.5 * bce)


def test_notes_down_weighting_table():
    # 002 §4.3.4, gamma = 2: p_t = 0.9 -> 0.01, 0.6 -> 0.16, 0.4 -> 0.36, 0.1 -> 0.81 times -ln(p_t)
    p_t = torch.tensor([0.9, 0.6, 0.4, 0.1], dtype=torch.float64)
    logits = torch.log(p_t / (1 - p_t))
    loss = sigmoid_focal_loss(logits, torch.ones(4, dtype=torch.float64), alpha=-1, gamma=2)
    factors = loss / -torch.log(p_t)
    torch.testing.assert_close(factors, torch.tensor([0.01, 0.16, 0.36, 0.81], dtype=torch.float64))
    # the same p_t on a negative example (p = 1 - p_t) gives the same loss
    neg = sigmoid_focal_loss(-logits, torch.zeros(4, dtype=torch.float64), alpha=-1, gamma=2)
    torch.testing.assert_close(neg, loss)


def test_large_logits_stay_finite():
    x = torch.tensor([-200.0, -30.0, 30.0, 200.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    loss = sigmoid_focal_loss(x, y, alpha=-1)
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss[[0, 3]], torch.tensor([200.0, 200.0]))  # (1 - p_t)^2 = 1, -ln p_t = 200
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert math.isclose(loss[1].item(), 0.0, abs_tol=1e-12)


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="same shape"):
        sigmoid_focal_loss(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ConfigError, match="reduction must be one of"):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(3), reduction="avg")
    with pytest.raises(ConfigError, match="gamma must be >= 0"):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(3), gamma=-1)
