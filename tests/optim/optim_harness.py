"""Shared by the optimizer tests: a small MLP trained in lock-step by several optimizers, and state comparison."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

_g = torch.Generator().manual_seed(1234)
X = torch.randn(64, 10, generator=_g)
Y = torch.randint(0, 3, (64,), generator=_g)


def mlp() -> nn.Module:
    """The MLP 10-16-3 of the tests, always with the same initial weights."""
    with torch.random.fork_rng():
        torch.manual_seed(7)
        return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))


def loss_of(model: nn.Module, step: int) -> torch.Tensor:
    """Cross-entropy on mini-batch `step % 4` (16 samples), so gradients change from step to step."""
    i = (step % 4) * 16
    return F.cross_entropy(model(X[i:i + 16]), Y[i:i + 16])


def train_together(makers: dict[str, Callable], steps: int = 100, model: nn.Module | None = None,
                   start: int = 0) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
    """Train one copy of `model` (default: `mlp()`) per optimizer maker for `steps` steps on the same batches."""
    base = model if model is not None else mlp()
    runs = {}
    for name, make in makers.items():
        m = copy.deepcopy(base)
        runs[name] = (m, make(m.parameters()))
    continue_training(runs, steps, start)
    return runs


def continue_training(runs: dict, steps: int, start: int = 0) -> None:
    for t in range(start, start + steps):
        for model, opt in runs.values():
            opt.zero_grad(set_to_none=True)
            loss_of(model, t).backward()
            opt.step()


def assert_same(run_a, run_b, tol: float = 1e-6) -> None:
    """Parameters and every optimizer-state entry agree to `tol`; the state holds the same keys."""
    (ma, oa), (mb, ob) = run_a, run_b
    for pa, pb in zip(ma.parameters(), mb.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=tol, atol=tol)
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sb:
        assert sa[i].keys() == sb[i].keys(), (i, sorted(sa[i]), sorted(sb[i]))
        for key in sb[i]:
            torch.testing.assert_close(torch.as_tensor(sa[i][key]), torch.as_tensor(sb[i][key]), rtol=tol, atol=tol,
                                       msg=lambda m, k=key, j=i: f"state[{j}][{k!r}]: {m}")
