"""Diffusion models: an algorithm object around a denoising network (Notes: 002 §8.3.1-§8.3.4).

Contract: the task holds a network `model(x_t, t) -> prediction` (shaped like x_t; t an int64 tensor [B] of
step indices) and an algorithm object that owns every formula (labml's `DenoiseDiffusion` layout):
- `algorithm.q_sample(x0, t, eps)`: the forward (noising) process at step t;
- `algorithm.loss(model, x0, generator=None)`: the training loss of one batch (draws t and the noise itself, from
  `generator` when given: evaluation passes a seeded one, so its loss is a deterministic number);
- `algorithm.sample(model, shape, generator=None, device=None)`: generated samples x0 from pure noise drawn on
  `device` (default the model's).
The task checks these signatures when it is built.
A batch is clean data x0 (or a tuple whose first item is x0). The task minimises `algorithm.loss`; evaluation is
the same loss on held-out data with fixed t and noise (a deterministic number) and, optionally, a metric of real
against sampled data (`gan.FrechetDistance`, FID with Inception features). Samples come from the weights the
Trainer evaluates: with `ema_decay` set those are the exponential moving average of the weights, as DDPM samples
from (Trainer option; `gan.SampleEvery` draws samples during training from the same weights).

`DDPM` is the reference algorithm: linear beta schedule, the epsilon-prediction loss L_simple and ancestral
sampling, with the notes' errata corrected (§8.3.2 Theorem 8.3.4 and §8.3.4 divide by sqrt(1 - alpha_bar_t),
not sqrt(1 - alpha_bar_{t-1}); the last step adds no noise).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.loader import to_device
from ..engine.task import Task
from ..errors import ConfigError
from ..metrics.meter import Mean, Metric
from .optimization import build_optimizers
from .seq2seq import unwrap


class DDPM:
    """Denoising diffusion probabilistic model (Ho et al. 2020). Notes: 002 §8.3.1, §8.3.2, §8.3.4.

    Step index i = 0..T-1 stands for the notes' t = i + 1. `beta_t` linear from `beta_start` to `beta_end`,
    `alpha_bar_t = prod_{s<=t} (1 - beta_s)`; `q_sample`: `x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps`;
    `loss`: `|eps - eps_theta(x_t, t)|^2` averaged (L_simple) with t ~ U{1..T}; `sample`: x_T ~ N(0, I), then
    `x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(1 - beta_t) + sqrt(beta_t) z`,
    without the noise at the last step.
    """

    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if num_steps < 1 or not 0 < beta_start <= beta_end < 1:
            raise ConfigError(f"DDPM needs num_steps >= 1 and 0 < beta_start <= beta_end < 1; got {num_steps}, "
                              f"{beta_start}, {beta_end}")
        self.num_steps = num_steps
        self.betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        self.alpha_bars = torch.cumprod(1 - self.betas, 0)

    @staticmethod
    def _at(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """values[t] shaped [B, 1, ..., 1] to broadcast against `like`, in its dtype and device."""
        return values.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t given x0 and the noise eps (§8.3.1, the closed-form diffusion kernel)."""
        ab = self._at(self.alpha_bars, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) (§8.3.2, with the notes' sign fixed)."""
        ab = self._at(self.alpha_bars, t, x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def loss(self, model: nn.Module, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """L_simple = mean |eps - eps_theta(x_t, t)|^2 with t uniform and eps ~ N(0, I) (§8.3.2)."""
        t = torch.randint(0, self.num_steps, (len(x0),), device=x0.device, generator=generator)
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        return F.mse_loss(model(self.q_sample(x0, t, eps), t).float(), eps.float())

    @torch.no_grad()
    def sample(self, model: nn.Module, shape: tuple[int, ...], generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        """Ancestral sampling from x_T ~ N(0, I) down to x0 (§8.3.4, sigma_t^2 = beta_t)."""
        device = device if device is not None else (generator.device if generator is not None else "cpu")
        x = torch.randn(shape, device=device, generator=generator)
        for i in reversed(range(self.num_steps)):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            eps = model(x, t).float()
            beta, ab = self._at(self.betas, t, x), self._at(self.alpha_bars, t, x)
            x = (x - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()
            if i > 0:
                x = x + beta.sqrt() * torch.randn(shape, device=device, generator=generator)
        return x


class DiffusionTask(Task):
    """Trains `model` with `algorithm.loss`; evaluates the held-out loss and, optionally, a sample metric.

    Notes: 002 §8.3. `sample_shape` is one sample's shape (e.g. (1, 28, 28) or (2,)). `metric`: a factory of a
    metric updated with (real, sampled) batches, e.g. `lambda: FrechetDistance()`; sampling the whole evaluation
    set costs T network calls per batch, so leave it None when that is too slow. Optimizer and schedule from `cfg`
    (`tasks.optimization.build_optimizers`).
    """

    def __init__(self, model: nn.Module, algorithm, cfg, sample_shape: tuple[int, ...],
                 metric: Callable[[], Metric] | None = None, sample_seed: int = 0):
        missing = [m for m in ("q_sample", "loss", "sample") if not callable(getattr(algorithm, m, None))]
        if missing:
            raise ConfigError(f"a diffusion algorithm needs q_sample, loss and sample methods; "
                              f"{type(algorithm).__name__} lacks {missing}")
        for method, keywords in (("loss", ("generator",)), ("sample", ("generator", "device"))):
            signature = inspect.signature(getattr(algorithm, method))
            lacking = [k for k in keywords if k not in signature.parameters
                       and not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())]
            if lacking:
                raise ConfigError(f"{type(algorithm).__name__}.{method} must take the keyword argument(s) "
                                  f"{', '.join(lacking)} (the diffusion contract: module docstring of "
                                  f"dlkit.tasks.diffusion); got {method}{signature}")
        super().__init__(model)
        self.algorithm, self.cfg, self.sample_shape = algorithm, cfg, tuple(sample_shape)
        self.metric, self.sample_seed = metric, sample_seed

    def configure_optimizers(self, plan):
        return build_optimizers(self.model.parameters(), self.cfg, plan)

    def training_step(self, model, batch, ctx):
        x0 = batch[0] if isinstance(batch, list | tuple) else batch
        return {"loss": self.algorithm.loss(model, x0)}

    @torch.no_grad()
    def draw(self, model: nn.Module, n: int, seed: int | None = None) -> Tensor:
        """`n` samples from the noise of `seed` (default `sample_seed`), on the CPU."""
        device = next(unwrap(model).parameters()).device
        g = torch.Generator(device=device).manual_seed(self.sample_seed if seed is None else seed)
        return self.algorithm.sample(model, (n, *self.sample_shape), generator=g, device=device).float().cpu()

    def evaluate(self, model, data):
        device = next(unwrap(model).parameters()).device
        loss = Mean()
        metric = self.metric() if self.metric is not None else None
        g = torch.Generator(device=device).manual_seed(self.sample_seed)
        for batch in data:
            x0 = to_device(batch[0] if isinstance(batch, list | tuple) else batch, device)
            loss.update(self.algorithm.loss(model, x0, generator=g), len(x0))
            if metric is not None:
                metric.update(x0.float(), self.algorithm.sample(model, tuple(x0.shape), generator=g, device=device))
        out = {"loss": loss.compute()}
        if metric is not None:
            value = metric.compute()
            out.update(value if isinstance(value, dict) else {type(metric).__name__.lower(): value})
        return out

    def figures(self, run_dir: Path, model, data) -> list[Path]:
        if len(self.sample_shape) != 3:  # points, not images: no grid
            return []
        from ..report.figures import plot_image_grid

        return [plot_image_grid(self.draw(model, 64), run_dir / "figures" / "samples.png")]
