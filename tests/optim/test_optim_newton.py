"""Newton's method (Notes: 002 §1.2) against the closed-form minimum, numpy's solve and autograd."""

import numpy as np
import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.optim import grad_and_hessian, newton_1d, newton_minimize, newton_step


@pytest.mark.parametrize("x0", [-100.0, -3.5, 0.0, 1.9, 2.0, 17.25, 1e4])
def test_newton_1d_reaches_the_minimum_of_a_parabola_in_one_step(x0):
    # f(x) = 3 (x - 2)^2 + 1: f' = 6 (x - 2), f'' = 6
    assert newton_1d(lambda x: 6 * (x - 2), lambda x: 6.0, x0, steps=1) == pytest.approx(2.0, abs=1e-12)


def test_newton_1d_moves_x4_toward_zero():
    # f = x^4: x - 4x^3 / (12 x^2) = 2x/3, so every step shrinks |x| by 1/3
    path = newton_1d(lambda x: 4 * x**3, lambda x: 12 * x**2, 3.0, steps=10, return_path=True)
    assert len(path) == 11
    assert all(abs(b) < abs(a) for a, b in zip(path, path[1:]))
    assert path[-1] == pytest.approx(3.0 * (2 / 3) ** 10, rel=1e-12)


def test_newton_1d_refuses_zero_curvature():
    with pytest.raises(ConfigError, match="f''"):
        newton_1d(lambda x: 1.0, lambda x: 0.0, 1.0)


def _spd(n=5, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, n))
    return q @ q.T + n * np.eye(n), rng.standard_normal(n)


def test_newton_step_solves_a_quadratic_in_one_step():
    # f = 1/2 x^T A x - b^T x: grad = A x - b, H = A, so x1 = x0 - A^{-1}(A x0 - b) = A^{-1} b
    a, b = _spd()
    x0 = torch.randn(5, dtype=torch.float64)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    x1 = newton_step(at @ x0 - bt, at, x0)
    np.testing.assert_allclose(x1.numpy(), np.linalg.solve(a, b), rtol=1e-10, atol=1e-12)


def test_newton_step_with_lr_moves_part_of_the_way():
    a, b = _spd(seed=1)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    x0 = torch.zeros(5, dtype=torch.float64)
    x1 = newton_step(at @ x0 - bt, at, x0, lr=0.25)
    np.testing.assert_allclose(x1.numpy(), 0.25 * np.linalg.solve(a, b), rtol=1e-10, atol=1e-12)


def test_grad_and_hessian_match_the_quadratic_formulas():
    a, b = _spd(seed=2)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    x = torch.randn(5, dtype=torch.float64)
    g, h = grad_and_hessian(lambda v: 0.5 * v @ at @ v - bt @ v, x)
    torch.testing.assert_close(g, at @ x - bt)
    torch.testing.assert_close(h, at)


def test_newton_minimize_by_autograd_solves_the_quadratic_and_shrinks_a_quartic():
    a, b = _spd(seed=3)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    x = newton_minimize(lambda v: 0.5 * v @ at @ v - bt @ v, torch.ones(5, dtype=torch.float64))
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(a, b), rtol=1e-10, atol=1e-12)
    # sum x^4 on a 2x2 tensor: each entry becomes 2/3 of itself per step
    x0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    x3 = newton_minimize(lambda v: (v**4).sum(), x0, steps=3)
    assert x3.shape == (2, 2)
    torch.testing.assert_close(x3, x0 * (2 / 3) ** 3)


def test_newton_step_reports_mismatched_shapes():
    with pytest.raises(ConfigError, match="Hessian"):
        newton_step(torch.zeros(3), torch.eye(2), torch.zeros(3))
