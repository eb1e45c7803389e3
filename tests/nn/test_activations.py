"""Activations equal torch's built-ins in value and derivative (Notes: 003 §2.2.1, 000 §2.2)."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlkit.errors import ConfigError, UnknownNameError
from dlkit.nn import activations as A

# a grid with the kinks (0, +-3, 6) and extreme values
GRID = torch.cat([torch.linspace(-8, 8, 161), torch.tensor([-1000.0, -50.0, 50.0, 1000.0])]).double()
SMOOTH_GRID = GRID[(GRID != 0) & (GRID.abs() != 3) & (GRID != 6)]

CASES = [  # name, ours, derivative, reference
    ("sigmoid", A.sigmoid, A.sigmoid_derivative, torch.sigmoid),
    ("tanh", A.tanh, A.tanh_derivative, torch.tanh),
    ("relu", A.relu, A.relu_derivative, F.relu),
    ("leaky_relu", A.leaky_relu, A.leaky_relu_derivative, lambda x: F.leaky_relu(x, 0.01)),
    ("elu", A.elu, A.elu_derivative, F.elu),
    ("elu_alpha2", lambda x: A.elu(x, 2.0), lambda x: A.elu_derivative(x, 2.0), lambda x: F.elu(x, 2.0)),
    ("softplus", A.softplus, A.softplus_derivative, F.softplus),
    ("gelu", A.gelu, A.gelu_derivative, F.gelu),
    (
        "gelu_tanh",
        lambda x: A.gelu(x, "tanh"),
        lambda x: A.gelu_derivative(x, "tanh"),
        lambda x: F.gelu(x, approximate="tanh"),
    ),
    ("silu", A.silu, A.silu_derivative, F.silu),
    ("relu6", A.relu6, A.relu6_derivative, F.relu6),
    ("hard_sigmoid", A.hard_sigmoid, A.hard_sigmoid_derivative, F.hardsigmoid),
    ("hard_swish", A.hard_swish, A.hard_swish_derivative, F.hardswish),
    ("identity", A.identity, A.identity_derivative, lambda x: x.clone()),
]


# torch's hardsigmoid backward multiplies by a float32 1/6, so it is exact only to ~3e-8
RTOL = {"hard_sigmoid": 1e-7}


def _autograd(fn, x):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x).sum(), x)
    return g


@pytest.mark.parametrize("name,fn,dfn,ref", CASES, ids=[c[0] for c in CASES])
def test_activation_values_equal_torch(name, fn, dfn, ref):
    ours, theirs = fn(GRID), ref(GRID)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,fn,dfn,ref", CASES, ids=[c[0] for c in CASES])
def test_derivative_function_equals_torch_autograd(name, fn, dfn, ref):
    torch.testing.assert_close(dfn(GRID), _autograd(ref, GRID), rtol=RTOL.get(name, 1e-12), atol=1e-14)


@pytest.mark.parametrize("name,fn,dfn,ref", CASES, ids=[c[0] for c in CASES])
def test_autograd_through_formula_equals_torch(name, fn, dfn, ref):
    # away from kinks, and at the kinks for the activations that define them like torch
    torch.testing.assert_close(
        _autograd(fn, SMOOTH_GRID), _autograd(ref, SMOOTH_GRID), rtol=RTOL.get(name, 1e-12), atol=1e-14
    )
    torch.testing.assert_close(_autograd(fn, GRID), dfn(GRID), rtol=1e-12, atol=1e-14)


def test_sigmoid_derivative_max_is_quarter_at_zero():
    x = torch.linspace(-10, 10, 2001, dtype=torch.float64)
    d = A.sigmoid_derivative(x)
    assert d.max().item() == pytest.approx(0.25, abs=1e-15)
    assert abs(x[d.argmax()].item()) < 1e-12
    assert A.sigmoid(torch.tensor(0.0)).item() == 0.5
    torch.testing.assert_close(A.sigmoid(-x), 1 - A.sigmoid(x))


def test_sigmoid_and_tanh_stable_at_extremes_in_float32():
    x = torch.tensor([-1000.0, -100.0, 100.0, 1000.0])
    for fn in (A.sigmoid, A.tanh, A.softplus, A.silu, A.elu):
        y = fn(x)
        g = _autograd(fn, x)
        assert torch.isfinite(y).all() and torch.isfinite(g).all()
    torch.testing.assert_close(A.tanh(x), torch.tensor([-1.0, -1.0, 1.0, 1.0]))


def test_relu_examples_and_dead_unit():
    torch.testing.assert_close(A.relu(torch.tensor([-1.0, 0.0, 2.0])), torch.tensor([0.0, 0.0, 2.0]))
    w = torch.randn(5, requires_grad=True)
    b = torch.tensor(-100.0, requires_grad=True)  # large negative bias: the unit is dead for all inputs
    A.relu(torch.randn(64, 5) @ w + b).sum().backward()
    assert w.grad.abs().sum() == 0 and b.grad == 0


def test_leaky_relu_slope_is_001():
    assert A.leaky_relu(torch.tensor(-2.0)).item() == pytest.approx(-0.02)
    assert A.leaky_relu_derivative(torch.tensor([-5.0, -0.1])).tolist() == pytest.approx([0.01, 0.01])


def test_elu_limits_and_continuity():
    assert A.elu(torch.tensor(-1e4), alpha=2.0).item() == pytest.approx(-2.0)
    assert A.elu(torch.tensor(0.0)).item() == 0.0
    eps = torch.tensor([1e-8, -1e-8], dtype=torch.float64)
    assert A.elu_derivative(eps).tolist() == pytest.approx([1.0, 1.0], abs=1e-7)


def test_softplus_zero_is_ln2_and_derivative_is_sigmoid():
    assert A.softplus(torch.tensor(0.0, dtype=torch.float64)).item() == pytest.approx(math.log(2), abs=1e-15)
    torch.testing.assert_close(_autograd(A.softplus, GRID), torch.sigmoid(GRID))


def test_tanh_is_rescaled_sigmoid_and_zero_centred():
    torch.testing.assert_close(A.tanh(GRID), 2 * torch.sigmoid(2 * GRID) - 1)
    assert A.tanh_derivative(torch.tensor(0.0)).item() == 1.0


def test_softmax_rows_sum_to_one_and_shift_invariant():
    x = torch.randn(7, 5, dtype=torch.float64)
    s = A.softmax(x, dim=1)
    torch.testing.assert_close(s.sum(1), torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(s, torch.softmax(x, 1))
    torch.testing.assert_close(A.softmax(x + 123.0, dim=1), s)
    torch.testing.assert_close(A.softmax(x, dim=0), torch.softmax(x, 0))
    assert A.softmax(torch.zeros(4)).tolist() == [0.25] * 4


def test_softmax_stable_for_logits_1000():
    x = torch.tensor([[1000.0, 999.0, -1000.0], [1000.0, 1000.0, 1000.0]])
    s, ls = A.softmax(x), A.log_softmax(x)
    assert torch.isfinite(s).all() and torch.isfinite(ls).all()
    torch.testing.assert_close(s, torch.softmax(x, -1))
    torch.testing.assert_close(ls, torch.log_softmax(x, -1))


def test_log_softmax_and_gradients_equal_torch():
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    for dim in (0, 1, -1):
        torch.testing.assert_close(A.log_softmax(x, dim), torch.log_softmax(x, dim))
        w = torch.randn_like(x)
        g_ours = _autograd(lambda t, d=dim, w=w: A.log_softmax(t, d) * w, x)
        g_ref = _autograd(lambda t, d=dim, w=w: torch.log_softmax(t, d) * w, x)
        torch.testing.assert_close(g_ours, g_ref)
        g_ours = _autograd(lambda t, d=dim, w=w: A.softmax(t, d) * w, x)
        g_ref = _autograd(lambda t, d=dim, w=w: torch.softmax(t, d) * w, x)
        torch.testing.assert_close(g_ours, g_ref)


def test_softmax_jacobian_equals_autograd():
    x = torch.randn(5, dtype=torch.float64)
    ref = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, 0), x)
    torch.testing.assert_close(A.softmax_jacobian(x), ref)


def test_rrelu_train_slope_within_bounds_and_eval_mean_slope():
    m = A.RReLU()
    x = -torch.rand(10000) - 0.1
    y = m(x)
    assert ((y >= x / 3 - 1e-7) & (y <= x / 8 + 1e-7)).all()
    m.eval()
    torch.testing.assert_close(m(x), F.rrelu(x, training=False))


@pytest.mark.parametrize(
    "name,ref",
    [
        ("relu", F.relu),
        ("sigmoid", torch.sigmoid),
        ("tanh", torch.tanh),
        ("leaky_relu", F.leaky_relu),
        ("elu", F.elu),
        ("gelu", F.gelu),
        ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")),
        ("swish", F.silu),
        ("silu", F.silu),
        ("ReLU6", F.relu6),
        ("hard-swish", F.hardswish),
        ("hardsigmoid", F.hardsigmoid),
        ("softplus", F.softplus),
        ("linear", lambda x: x),
        ("softmax", lambda x: torch.softmax(x, -1)),
        ("log_softmax", lambda x: torch.log_softmax(x, -1)),
    ],
)
def test_get_activation_builds_module_equal_to_torch(name, ref):
    m = A.get_activation(name)
    x = torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), ref(x))
    if name not in ("softmax", "log_softmax"):
        torch.testing.assert_close(A.get_derivative(name)(x), _autograd(ref, x))
        torch.testing.assert_close(m.derivative(x), _autograd(ref, x))


def test_get_activation_kwargs_and_unknown_name_suggests():
    assert A.get_activation("leaky_relu", negative_slope=0.2).negative_slope == 0.2
    with pytest.raises(UnknownNameError, match="Did you mean: .*relu"):
        A.get_activation("relux")
    with pytest.raises(ConfigError, match="bad arguments"):
        A.get_activation("relu", alpha=3)
    with pytest.raises(ConfigError):
        A.GELU(approximate="fast")


def test_cheatsheet_output_heads():
    assert A.output_activation_and_loss("multiclass") == ("softmax", "categorical_cross_entropy")
    assert A.output_activation_and_loss("binary") == ("sigmoid", "binary_cross_entropy")
    assert A.output_activation_and_loss("regression") == ("linear", "mse")
    with pytest.raises(ConfigError, match="expected one of"):
        A.output_activation_and_loss("ranking")


@pytest.mark.parametrize("name,fn,dfn,ref", CASES, ids=[c[0] for c in CASES])
def test_module_fast_kernel_equals_formula_values_and_gradients(name, fn, dfn, ref):
    """The modules run torch's fused kernels; they must compute the formula functions exactly (to rounding)."""
    m = A.get_activation("elu", alpha=2.0) if name == "elu_alpha2" else A.get_activation(name)
    x = SMOOTH_GRID.clone()
    torch.testing.assert_close(m(x), fn(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_autograd(m, x), _autograd(fn, x), rtol=RTOL.get(name, 1e-12), atol=1e-12)
