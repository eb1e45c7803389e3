"""The GAN contract (Notes: 002 §8.2, §8.1.2): two optimizers stepped in turn through the Trainer; the Frechet
distance against scipy."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from dlkit.data.loader import TensorLoader
from dlkit.engine.task import StepContext
from dlkit.engine.trainer import TrainerConfig, fit
from dlkit.errors import ConfigError
from dlkit.tasks.gan import GAN, FrechetDistance, GANTask, SampleEvery

MEAN, STD = torch.tensor([2.0, -1.0]), 0.5


def gaussian(n: int, seed: int) -> torch.Tensor:
    return MEAN + STD * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def toy_gan(seed: int = 0) -> GAN:
    torch.manual_seed(seed)
    g = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 2))
    d = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    return GAN(g, d, latent_dim=2)


def _reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real))


def test_frechet_distance_matches_scipy_and_the_1d_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 3, generator=g) @ torch.randn(3, 3, generator=g)
    b = torch.randn(400, 3, generator=g) * 2 + 1
    m = FrechetDistance()
    for i in range(0, 500, 100):  # in batches: the statistics are sums
        m.update(a[i:i + 100], b[i:i + 100] if i < 400 else b[:0])
    assert m.compute() == pytest.approx(_reference_frechet(a.double().numpy(), b.double().numpy()), rel=1e-9)
    one = FrechetDistance()
    x, y = torch.randn(1000, 1, generator=g), 3 + 2 * torch.randn(1000, 1, generator=g)
    one.update(x, y)
    sx, sy = x.double().std().item(), y.double().std().item()
    expected = (x.double().mean() - y.double().mean()).item() ** 2 + (sx - sy) ** 2  # (m1 - m2)^2 + (s1 - s2)^2
    assert one.compute() == pytest.approx(expected, rel=1e-9)


def test_gan_task_matches_a_2d_gaussian_through_the_trainer():
    train = TensorLoader(gaussian(4096, seed=1), batch_size=128, seed=0)
    val = TensorLoader(gaussian(2048, seed=2), batch_size=512, shuffle=False)
    task = GANTask(toy_gan(), lr_g=1e-3, lr_d=1e-3, metric=FrechetDistance)
    before = task.evaluate(task.model, val)
    sampler = SampleEvery(every_steps=640, n=2000)
    result = fit(task, train, val, TrainerConfig(epochs=60, progress=False, tensorboard=False, log_every=32,
                                                 eval_every_epochs=None), callbacks=[sampler])
    samples = sampler.last  # measured: mean (2.02, -1.05), std (0.49, 0.44)
    assert sampler.steps == [640, 1280, 1920]
    assert (samples.mean(0) - MEAN).abs().max() < 0.2, samples.mean(0)
    assert (samples.std(0) - STD).abs().max() < 0.2, samples.std(0)
    fd = result.metrics["val/frechetdistance"]
    assert fd < 0.15 < before["frechetdistance"] / 10, (before, fd)  # measured 0.024 and 7.0
    assert abs(result.metrics["val/d_real"] - 0.5) < 0.15  # near the equilibrium D = 1/2 (§8.2)


def test_each_optimizer_steps_only_its_network_and_d_gets_no_gradient_from_the_generator_loss():
    gan = toy_gan()
    task = GANTask(gan, lr_g=0.0, lr_d=1e-2)
    opts, _ = task.configure_optimizers(None)
    g0 = [p.clone() for p in gan.generator.parameters()]
    d0 = [p.clone() for p in gan.discriminator.parameters()]
    seen = []

    def step(opt):
        has_grad = [p.grad is not None and p.grad.abs().sum().item() > 0 for p in gan.discriminator.parameters()]
        seen.append((opt, has_grad))
        opt.step()
        opt.zero_grad(set_to_none=True)

    ctx = StepContext(step=0, epoch=0, device=torch.device("cpu"), optimizers=opts, optimizer_step=step)
    out = task.training_step(gan, (gaussian(64, seed=3),), ctx)
    assert [o for o, _ in seen] == opts  # D first, then G
    assert all(seen[0][1]) and not any(seen[1][1])  # D has gradients at its step and none at G's
    assert all(torch.equal(a, b) for a, b in zip(g0, gan.generator.parameters()))  # lr_g = 0
    assert not all(torch.equal(a, b) for a, b in zip(d0, gan.discriminator.parameters()))
    assert set(out) == {"loss_d", "loss_g", "d_real", "d_fake"}


class FixedD(nn.Module):
    """D(x) = 0.9 for x[:, 0] > 100 (the real data below), else 0.2: the notes' hand example of §8.2."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        p = torch.where(x[:, :1] > 100, 0.9, 0.2)
        return torch.log(p / (1 - p)) + self.w * x[:, :1]


@pytest.mark.parametrize("generator_loss,expected_g", [("non_saturating", -math.log(0.2)),
                                                        ("minimax", math.log(1 - 0.2))])
def test_gan_losses_hand_values(generator_loss, expected_g):
    # L_D = -log D(x) - log(1 - D(G(z))) = -ln 0.9 - ln 0.8; L_G = -ln D(G(z)) or ln(1 - D(G(z)))
    gan = GAN(nn.Linear(2, 2), FixedD(), latent_dim=2)
    task = GANTask(gan, lr_g=0.0, lr_d=0.0, generator_loss=generator_loss)
    opts, _ = task.configure_optimizers(None)
    ctx = StepContext(step=0, epoch=0, device=torch.device("cpu"), optimizers=opts)
    out = task.training_step(gan, torch.full((8, 2), 1000.0), ctx)
    assert out["loss_d"].item() == pytest.approx(-math.log(0.9) - math.log(0.8), rel=1e-6)
    assert out["loss_g"].item() == pytest.approx(expected_g, rel=1e-6)


def test_gan_contract_errors():
    with pytest.raises(ConfigError, match="GAN"):
        GANTask(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="generator_loss"):
        GANTask(toy_gan(), generator_loss="wasserstein")
    ctx = StepContext(step=0, epoch=0, device=torch.device("cpu"), world_size=2)
    with pytest.raises(ConfigError, match="DDP"):
        GANTask(toy_gan()).training_step(toy_gan(), gaussian(4, 0), ctx)
