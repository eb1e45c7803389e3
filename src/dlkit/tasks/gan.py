"""Generative adversarial networks: two networks, two optimizers, stepped in turn (Notes: 002 §8.2, §8.1.2).

Contract: the model is a `GAN` (a generator `G: z [B, latent_dim] -> x` and a discriminator `D: x -> one logit
[B, 1]` held in one module, so one state dict and one checkpoint hold both); a batch is real samples x (or a
tuple whose first item is x). The task sets `automatic_optimization = False` and each step does, with the two
optimizers the Trainer holds (`ctx.optimizers == [opt_d, opt_g]`):

    L_D = -mean log D(x) - mean log(1 - D(G(z)))     (§8.2; BCE with logits)  -> ctx.backward, ctx.optimizer_step(opt_d)
    L_G = -mean log D(G(z))   (non-saturating, the default; or the notes' minimax  mean log(1 - D(G(z))))
                                                      -> ctx.backward, ctx.optimizer_step(opt_g), D frozen

so D's parameters get no gradient from L_G and each optimizer steps (and clips) only its own network. Evaluation
reports the mean D(x) on held-out real data and D(G(z)) on as many generated samples, plus a pluggable metric of
real against generated samples: `FrechetDistance(features)` is FID when `features` is an Inception network (the
generative issue plugs one in); on low-dimensional data the identity features make it the exact Frechet
distance of the two fitted Gaussians. `SampleEvery` draws samples from fixed noise during training.
Under DDP the generator and discriminator would each need their own wrapper: not supported yet (refused).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.loader import to_device
from ..engine.callbacks import Callback
from ..engine.task import Task
from ..errors import ConfigError
from ..metrics.meter import Mean, Metric
from ..optim import create_optimizer
from .seq2seq import unwrap


class GAN(nn.Module):
    """A generator and a discriminator in one module; `forward(z)` generates. Notes: 002 §8.2."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int):
        super().__init__()
        self.generator, self.discriminator, self.latent_dim = generator, discriminator, latent_dim

    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Within the block `module`'s parameters take no gradient (restored afterwards)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class FrechetDistance(Metric):
    """Frechet distance of Gaussians fitted to features of real and generated samples (FID with an Inception net).

    Notes: 002 §8.1.2, `FD = |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))`. `features` maps a batch to
    [B, D] (default: flatten). The states are sums (count, sum of features, sum of outer products) in float64, so
    they add up across DDP ranks; tr((S_r S_g)^(1/2)) is computed as tr((A S_g A)^(1/2)) with A = S_r^(1/2)
    (symmetric, so eigvalsh is stable).
    """

    def __init__(self, features: Callable[[Tensor], Tensor] | None = None, dim: int | None = None):
        super().__init__()
        self.features = features or (lambda x: x.flatten(1))
        self.dim = dim
        self._ready = False

    def _init(self, d: int, device) -> None:
        for side in ("real", "fake"):
            self.add_state(f"n_{side}", torch.zeros((), dtype=torch.float64, device=device))
            self.add_state(f"sum_{side}", torch.zeros(d, dtype=torch.float64, device=device))
            self.add_state(f"outer_{side}", torch.zeros(d, d, dtype=torch.float64, device=device))
        self._ready = True

    @torch.no_grad()
    def update(self, real: Tensor, fake: Tensor) -> None:
        for side, x in (("real", real), ("fake", fake)):
            f = self.features(x).double()
            if not self._ready:
                self._init(f.shape[1], f.device)
            setattr(self, f"n_{side}", getattr(self, f"n_{side}") + len(f))
            setattr(self, f"sum_{side}", getattr(self, f"sum_{side}") + f.sum(0))
            setattr(self, f"outer_{side}", getattr(self, f"outer_{side}") + f.T @ f)

    def compute(self) -> float:
        if not self._ready:
            raise ConfigError("FrechetDistance.compute() before any update: no samples to compare")
        stats = []
        for side in ("real", "fake"):
            n, s, o = self.synced(f"n_{side}"), self.synced(f"sum_{side}"), self.synced(f"outer_{side}")
            if n.item() < 2:
                raise ConfigError("FrechetDistance needs at least 2 real and 2 generated samples")
            mu = s / n
            stats.append((mu, (o - n * torch.outer(mu, mu)) / (n - 1)))
        (mu_r, cov_r), (mu_g, cov_g) = stats
        w, v = torch.linalg.eigh(cov_r)
        root_r = (v * w.clamp(min=0).sqrt()) @ v.T
        cross = torch.linalg.eigvalsh(root_r @ cov_g @ root_r).clamp(min=0).sqrt().sum()
        return ((mu_r - mu_g).pow(2).sum() + cov_r.trace() + cov_g.trace() - 2 * cross).item()


class GANTask(Task):
    """Alternating discriminator and generator steps (module docstring). Notes: 002 §8.2, §8.2.1.

    Optimizers: Adam(lr_d) for D and Adam(lr_g) for G with `betas` (DCGAN: lr 2e-4, betas (0.5, 0.999)).
    `generator_loss`: "non_saturating" (default) or "minimax" (the notes' form). `metric`: a factory of a metric
    updated with (real, generated) batches, e.g. `lambda: FrechetDistance()`. `sample_seed` fixes the noise of the
    evaluation and of `draw`, so evaluations are comparable from one to the next.
    """

    automatic_optimization = False

    def __init__(self, model: GAN, lr_g: float = 2e-4, lr_d: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
                 generator_loss: str = "non_saturating", metric: Callable[[], Metric] | None = None,
                 sample_seed: int = 0):
        if not isinstance(model, GAN):
            raise ConfigError(f"GANTask needs a dlkit.tasks.gan.GAN(generator, discriminator, latent_dim); got "
                              f"{type(model).__name__}")
        if generator_loss not in ("non_saturating", "minimax"):
            raise ConfigError(f"generator_loss must be 'non_saturating' or 'minimax'; got {generator_loss!r}")
        super().__init__(model)
        self.lr_g, self.lr_d, self.betas, self.generator_loss = lr_g, lr_d, tuple(betas), generator_loss
        self.metric, self.sample_seed = metric, sample_seed

    def configure_optimizers(self, plan):
        opt_d = create_optimizer("adam", self.model.discriminator.parameters(), lr=self.lr_d, betas=self.betas)
        opt_g = create_optimizer("adam", self.model.generator.parameters(), lr=self.lr_g, betas=self.betas)
        return [opt_d, opt_g], []

    def training_step(self, model, batch, ctx):
        if ctx.world_size > 1:
            raise ConfigError("GANTask does not run under DDP yet (the generator and the discriminator need a "
                              "wrapper each); run it in one process")
        gan = unwrap(model)
        real = batch[0] if isinstance(batch, list | tuple) else batch
        opt_d, opt_g = ctx.optimizers
        z = torch.randn(len(real), gan.latent_dim, device=real.device)
        with ctx.autocast():
            fake = gan.generator(z)
            d_real, d_fake = gan.discriminator(real).float(), gan.discriminator(fake.detach()).float()
            loss_d = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + \
                F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        ctx.backward(loss_d)
        ctx.optimizer_step(opt_d)
        with frozen(gan.discriminator), ctx.autocast():
            logits = gan.discriminator(fake).float()
            if self.generator_loss == "non_saturating":
                loss_g = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            else:  # mean log(1 - D(G(z))) = -BCE(logits, 0)
                loss_g = -F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
        ctx.backward(loss_g)
        ctx.optimizer_step(opt_g)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
                "d_real": torch.sigmoid(d_real).mean().detach(), "d_fake": torch.sigmoid(d_fake).mean().detach()}

    @torch.no_grad()
    def draw(self, model: nn.Module, n: int, seed: int | None = None) -> Tensor:
        """`n` samples G(z) from the noise of `seed` (default `sample_seed`), on the CPU."""
        gan = unwrap(model)
        device = next(gan.parameters()).device
        g = torch.Generator(device=device).manual_seed(self.sample_seed if seed is None else seed)
        z = torch.randn(n, gan.latent_dim, device=device, generator=g)
        return gan.generator(z).float().cpu()

    def evaluate(self, model, data):
        gan = unwrap(model)
        device = next(gan.parameters()).device
        d_real, d_fake = Mean(), Mean()
        metric = self.metric() if self.metric is not None else None
        g = torch.Generator(device=device).manual_seed(self.sample_seed)
        for batch in data:
            real = to_device(batch[0] if isinstance(batch, list | tuple) else batch, device)
            fake = gan.generator(torch.randn(len(real), gan.latent_dim, device=device, generator=g))
            d_real.update(torch.sigmoid(gan.discriminator(real).float()))
            d_fake.update(torch.sigmoid(gan.discriminator(fake).float()))
            if metric is not None:
                metric.update(real.float(), fake.float())
        out = {"d_real": d_real.compute(), "d_fake": d_fake.compute()}
        if metric is not None:
            value = metric.compute()
            out.update(value if isinstance(value, dict) else {type(metric).__name__.lower(): value})
        return out

    def figures(self, run_dir: Path, model, data) -> list[Path]:
        samples = self.draw(model, 64)
        if samples.dim() != 4:  # points, not images: no grid
            return []
        from ..report.figures import plot_image_grid

        return [plot_image_grid(samples, run_dir / "figures" / "samples.png")]


class SampleEvery(Callback):
    """Every `every_steps` steps, `task.draw(model, n, seed)` from the weights being evaluated (the EMA's when the
    Trainer keeps one), from fixed noise; keeps the last draw in `last` (and the steps in `steps`) and, for image
    samples in a run folder, writes figures/samples_step<N>.png on rank 0. Used by GANTask and DiffusionTask."""

    def __init__(self, every_steps: int, n: int = 64, seed: int = 0):
        if every_steps < 1 or n < 1:
            raise ConfigError(f"SampleEvery needs every_steps >= 1 and n >= 1; got {every_steps}, {n}")
        self.every_steps, self.n, self.seed = every_steps, n, seed
        self.last: Tensor | None = None
        self.steps: list[int] = []

    def on_step_end(self, trainer, outputs) -> None:
        if trainer.step % self.every_steps:
            return
        model = trainer.eval_model
        was = model.training
        model.eval()
        try:
            with torch.no_grad(), trainer.autocast():
                self.last = trainer.task.draw(model, self.n, self.seed)
        finally:
            model.train(was)
        self.steps.append(trainer.step)
        if trainer.run_dir is not None and trainer.dist.is_main and self.last.dim() == 4:
            from ..report.figures import plot_image_grid

            plot_image_grid(self.last, trainer.run_dir / "figures" / f"samples_step{trainer.step:07d}.png")
