"""Inverted dropout (Notes: 003 §2.3.3, 000 §2.1)."""

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.nn.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_zeros_fraction_p_and_scales_kept_units(p):
    x = torch.rand(100_000, dtype=torch.float64) + 0.5  # strictly positive, so zeros come from the mask
    y = dropout(x, p, generator=torch.Generator().manual_seed(0))
    dropped = y == 0
    assert dropped.double().mean().item() == pytest.approx(p, abs=0.01)
    torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - p))


def test_dropout_preserves_expectation():
    x = torch.randn(20, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    mean = torch.stack([dropout(x, 0.5, generator=g) for _ in range(20000)]).mean(0)
    torch.testing.assert_close(mean, x, atol=0.05 * x.abs().max().item(), rtol=0)


def test_train_expectation_equals_eval_output_of_next_linear_layer():
    # the ensemble view: averaging over masks gives the eval-mode network (weights scaled at test time)
    torch.manual_seed(0)
    lin = torch.nn.Linear(10, 3).double()
    net = torch.nn.Sequential(Dropout(0.3), lin)
    x = torch.randn(1, 10, dtype=torch.float64)
    with torch.no_grad():
        avg = net(x.expand(50000, 10)).mean(0)
        net.eval()
        torch.testing.assert_close(avg, net(x)[0], atol=0.03, rtol=0)


def test_eval_mode_is_identity_like_torch():
    m = Dropout(0.5).eval()
    x = torch.randn(4, 7)
    assert m(x) is x
    torch.testing.assert_close(m(x), torch.nn.Dropout(0.5).eval()(x))
    assert dropout(x, 0.9, training=False) is x


def test_p0_identity_p1_zeros_and_new_mask_each_call():
    x = torch.randn(1000)
    assert torch.equal(dropout(x, 0.0), x)
    assert torch.equal(dropout(x, 1.0), torch.zeros(1000))
    m = Dropout(0.5)
    assert not torch.equal(m(x), m(x))
    assert dropout(x, 1.0).requires_grad == x.requires_grad


def test_gradient_flows_through_kept_units_only():
    x = torch.ones(1000, requires_grad=True)
    y = dropout(x, 0.25, generator=torch.Generator().manual_seed(3))
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y.detach() != 0).float() / 0.75)


@pytest.mark.parametrize("p", [-0.1, 1.5, "half", None])
def test_bad_p_raises_config_error(p):
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        Dropout(p)
    with pytest.raises(ConfigError):
        dropout(torch.ones(3), p)
