"""ModelEMA (torch.optim.swa_utils.AveragedModel underneath) against an EMA computed by hand."""

import pytest
import torch
from torch import nn

from dlkit.engine.ema import ModelEMA
from dlkit.errors import ConfigError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))


def _train_steps(model: nn.Module, ema: ModelEMA, steps: int, seed: int = 1):
    """SGD steps with an EMA update after each; returns the model's state (float64) after every step."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    states = []
    for _ in range(steps):
        x = torch.randn(5, 2, 4, 4, generator=g)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        ema.update(model)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return states


def test_ema_of_weights_and_running_statistics_matches_hand_computation():
    model, d = _net(), 0.8
    start = {k: v.detach().double().clone() for k, v in model.state_dict().items()}
    ema = ModelEMA(model, d)
    states = _train_steps(model, ema, steps=6)
    for k, v in ema.state_dict().items():
        if v.is_floating_point():  # weights, BatchNorm's running mean and variance
            expected = start[k]
            for s in states:
                expected = d * expected + (1 - d) * s[k].double()
            torch.testing.assert_close(v.double(), expected, rtol=1e-6, atol=1e-7)
        else:  # the batch counter is copied, not averaged
            assert torch.equal(v, states[-1][k]) and int(v) == 6
    assert set(ema.state_dict()) == set(model.state_dict())  # checkpoints keep the model's keys


def test_ema_starts_at_the_weights_it_was_created_with():
    model = nn.Linear(3, 2)
    ema = ModelEMA(model, decay=0.9)
    w0 = model.weight.detach().clone()
    assert torch.equal(ema.module.weight, w0) and not ema.module.weight.requires_grad and not ema.module.training
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # not a copy of the new weights (AveragedModel's first call would copy)
    torch.testing.assert_close(ema.module.weight, 0.9 * w0 + 0.1 * (w0 + 1.0))


def test_tied_weights_are_averaged_once_per_step():
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    model[1].weight = model[0].weight  # two state-dict keys, one tensor
    w0 = model[0].weight.detach().clone()
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.add_(2.0)
    ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, w0 + 1.0)
    assert ema.module[1].weight is ema.module[0].weight


def test_ema_resumes_bit_exactly_from_its_state_dict():
    model, d = _net(), 0.9
    ema = ModelEMA(model, d)
    _train_steps(model, ema, steps=3)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_ema = {k: v.clone() for k, v in ema.state_dict().items()}
    _train_steps(model, ema, steps=3, seed=2)

    other = _net()
    other.load_state_dict(saved_model)
    resumed = ModelEMA(_net(), d)
    resumed.load_state_dict(saved_ema)
    _train_steps(other, resumed, steps=3, seed=2)
    for k, v in ema.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_ema_rejects_a_decay_outside_the_open_interval(decay):
    with pytest.raises(ConfigError, match=r"decay must be in \(0, 1\)"):
        ModelEMA(nn.Linear(2, 2), decay)
