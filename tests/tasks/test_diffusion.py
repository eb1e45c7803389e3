"""The diffusion contract (Notes: 002 §8.3): DDPM's formulas against the notes' values and oracles; a toy 1-D
two-mode density learned through the Trainer with EMA weights and samples drawn during training."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dlkit.data.loader import TensorLoader
from dlkit.engine.trainer import TrainerConfig, fit
from dlkit.errors import ConfigError
from dlkit.tasks.diffusion import DDPM, DiffusionTask
from dlkit.tasks.gan import FrechetDistance, SampleEvery
from dlkit.tasks.optimization import OPTIMIZER_OPTIONS


def two_modes(n: int, seed: int) -> torch.Tensor:
    """x in R^1: +2 or -2 with equal probability, plus N(0, 0.3^2)."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, (n, 1), generator=g) * 2.0 - 1.0
    return 2.0 * sign + 0.3 * torch.randn(n, 1, generator=g)


class EpsMLP(nn.Module):
    """eps_theta(x_t, t) for 1-D data: an MLP of x_t and features of t / T."""

    def __init__(self, num_steps: int):
        super().__init__()
        torch.manual_seed(0)
        self.num_steps = num_steps
        self.net = nn.Sequential(nn.Linear(4, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))

    def forward(self, x, t):
        s = (t.float() / self.num_steps)[:, None]
        return self.net(torch.cat([x, s, torch.sin(math.pi * s), torch.cos(math.pi * s)], dim=1))


class Oracle(nn.Module):
    """The exact eps for data concentrated at x_star: eps = (x_t - sqrt(ab_t) x*) / sqrt(1 - ab_t) (§8.3.4 test)."""

    def __init__(self, ddpm: DDPM, x_star: float):
        super().__init__()
        self.ddpm, self.x_star = ddpm, x_star
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        ab = self.ddpm._at(self.ddpm.alpha_bars, t, x)
        return (x - ab.sqrt() * self.x_star) / (1 - ab).sqrt()


def test_ddpm_schedule_and_closed_forms():
    ddpm = DDPM()  # T = 1000, beta 1e-4 .. 0.02 (DDPM)
    assert ddpm.alpha_bars[-1].item() == pytest.approx(4.04e-5, rel=0.01)  # Notes 002 §8.3.1 reference value
    assert (ddpm.alpha_bars.diff() < 0).all()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    t = torch.tensor([0, 1, 10, 100, 500, 999])
    x_t = ddpm.q_sample(x0, t, eps)
    ab = ddpm.alpha_bars[t].float()[:, None]
    torch.testing.assert_close(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * eps)
    torch.testing.assert_close(ddpm.x0_from_eps(x_t, t, eps), x0, atol=1e-4, rtol=1e-4)
    # one forward step at a time (x_t = sqrt(1 - b_t) x_{t-1} + sqrt(b_t) e) reaches the closed form's moments
    x = torch.full((200_000, 1), 1.5)
    for b in ddpm.betas[:50]:
        x = (1 - b).sqrt().float() * x + b.sqrt().float() * torch.randn(x.shape, generator=g)
    ab50 = ddpm.alpha_bars[49].item()
    assert x.mean().item() == pytest.approx(math.sqrt(ab50) * 1.5, abs=0.01)
    assert x.var().item() == pytest.approx(1 - ab50, abs=0.005)


def test_ddpm_oracle_has_zero_loss_and_samples_the_point():
    ddpm = DDPM(num_steps=200, beta_start=1e-4, beta_end=0.05)
    oracle = Oracle(ddpm, x_star=1.25)
    assert ddpm.loss(oracle, torch.full((64, 1), 1.25)).item() == pytest.approx(0.0, abs=1e-8)
    samples = ddpm.sample(oracle, (500, 1), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(samples, torch.full((500, 1), 1.25), atol=1e-3, rtol=0)


def test_diffusion_task_learns_two_modes_through_the_trainer_with_ema_samples():
    ddpm = DDPM(num_steps=100, beta_start=1e-3, beta_end=0.1)
    task = DiffusionTask(EpsMLP(100), ddpm, SimpleNamespace(**{**OPTIMIZER_OPTIONS, "lr": 2e-3}), sample_shape=(1,),
                         metric=FrechetDistance)
    train = TensorLoader(two_modes(8192, seed=1), batch_size=256, seed=0)
    val = TensorLoader(two_modes(1024, seed=2), batch_size=1024, shuffle=False)
    before = task.evaluate(task.model, val)
    sampler = SampleEvery(every_steps=600, n=2000)
    result = fit(task, train, val, TrainerConfig(epochs=60, max_steps=1800, ema_decay=0.99, progress=False,
                                                 tensorboard=False, eval_every_epochs=None, log_every=100),
                 callbacks=[sampler])
    assert sampler.steps == [600, 1200, 1800]
    x = sampler.last[:, 0]  # drawn from the EMA weights; measured: 49% positive, mean |x| 1.98, spread 0.30
    assert 0.4 < (x > 0).float().mean().item() < 0.6  # both modes, equally
    assert (x.abs().mean() - 2).abs() < 0.2 and ((x.abs() - 2).std()) < 0.45, (x.abs().mean(), (x.abs() - 2).std())
    assert result.metrics["val/loss"] < 0.5 * before["loss"], (before, result.metrics)  # measured 1.05 -> 0.31
    assert result.metrics["val/frechetdistance"] < 0.05 < before["frechetdistance"], (before, result.metrics)


def test_diffusion_contract_errors():
    with pytest.raises(ConfigError, match="q_sample, loss and sample"):
        DiffusionTask(nn.Linear(1, 1), object(), SimpleNamespace(**OPTIMIZER_OPTIONS), sample_shape=(1,))
    with pytest.raises(ConfigError, match="beta"):
        DDPM(num_steps=10, beta_start=0.5, beta_end=0.1)


def test_an_algorithm_without_the_contracts_keywords_is_refused_when_the_task_is_built():
    class Bare:  # loss and sample without generator/device: evaluation and SampleEvery would fail after training
        def q_sample(self, x0, t, eps):
            return x0

        def loss(self, model, x0):
            return x0.sum()

        def sample(self, model, shape, generator=None):
            return torch.zeros(shape)

    with pytest.raises(ConfigError, match=r"Bare.loss must take the keyword argument\(s\) generator .*got "
                                          r"loss\(model, x0\)"):
        DiffusionTask(nn.Linear(1, 1), Bare(), SimpleNamespace(**OPTIMIZER_OPTIONS), sample_shape=(1,))
    Bare.loss = lambda self, model, x0, **kw: x0.sum()
    with pytest.raises(ConfigError, match=r"Bare.sample must take the keyword argument\(s\) device"):
        DiffusionTask(nn.Linear(1, 1), Bare(), SimpleNamespace(**OPTIMIZER_OPTIONS), sample_shape=(1,))
    DiffusionTask(nn.Linear(1, 1), DDPM(num_steps=10), SimpleNamespace(**OPTIMIZER_OPTIONS), sample_shape=(1,))
