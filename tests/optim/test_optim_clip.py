"""Gradient clipping (Notes: 003 §2.4) against torch.nn.utils.clip_grad_norm_ / clip_grad_value_."""

import math

import pytest
import torch

from dlkit.errors import TrainingDiverged
from dlkit.optim import clip_grad_norm_, clip_grad_value_


def _params(scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.zeros(s, requires_grad=True) for s in [(4, 3), (3,), (2, 2, 2), (1,)]]
    for p in ps:
        p.grad = scale * torch.randn(p.shape, generator=g)
    ps.append(torch.zeros(2, requires_grad=True))  # no gradient: ignored
    return ps


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.5, math.inf])
@pytest.mark.parametrize("max_norm", [0.1, 1.0, 100.0])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    ours, ref = _params(), _params()
    total = clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type)
    torch.testing.assert_close(total, expected)
    for a, b in zip(ours, ref):
        if b.grad is None:
            assert a.grad is None
        else:
            torch.testing.assert_close(a.grad, b.grad)


def test_clip_grad_norm_caps_the_global_norm_and_keeps_the_direction():
    ps = _params(scale=10.0)
    before = torch.cat([p.grad.flatten() for p in ps if p.grad is not None])
    total = clip_grad_norm_(ps, 1.0)
    after = torch.cat([p.grad.flatten() for p in ps if p.grad is not None])
    assert total.item() == pytest.approx(before.norm().item(), rel=1e-6)
    assert after.norm().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(after, before / before.norm(), rtol=1e-5, atol=1e-7)


def test_clip_grad_norm_of_a_single_tensor_and_of_no_gradients():
    w = torch.zeros(3, requires_grad=True)
    w.grad = torch.tensor([3.0, 4.0, 0.0])
    assert clip_grad_norm_(w, 1.0).item() == pytest.approx(5.0)
    torch.testing.assert_close(w.grad, torch.tensor([0.6, 0.8, 0.0]), rtol=1e-5, atol=0)
    assert clip_grad_norm_([torch.zeros(2, requires_grad=True)], 1.0).item() == 0.0


def test_clip_grad_norm_can_refuse_non_finite_gradients():
    w = torch.zeros(2, requires_grad=True)
    w.grad = torch.tensor([1.0, float("inf")])
    with pytest.raises(TrainingDiverged, match="inf"):
        clip_grad_norm_(w, 1.0, error_if_nonfinite=True)


def test_clip_grad_value_matches_torch():
    ours, ref = _params(scale=3.0), _params(scale=3.0)
    clip_grad_value_(ours, 0.5)
    torch.nn.utils.clip_grad_value_(ref, 0.5)
    for a, b in zip(ours, ref):
        if b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    assert max(p.grad.abs().max().item() for p in ours if p.grad is not None) == 0.5
