"""Depth estimation: an image in, a depth map out (Notes: 002 §6; Eigen et al. 2014 for the metrics).

Contract: `model(images [B, C, H, W]) -> depth [B, 1, H, W]`, positive (e.g. a softplus or a scaled sigmoid
output); a batch is (images, depth [B, 1, H, W] or [B, H, W]) where a target pixel outside (`min_depth`,
`max_depth`) (0 for "no measurement", as in KITTI's sparse maps) is ignored by the loss and the metrics. The
supervised loss is pluggable, `loss(pred, target, valid_mask) -> scalar`: "l1" (mean |d - d*| over valid pixels,
the default) or "silog" (Eigen's scale-invariant log loss). Stereo and self-supervised training (Monodepth's
photometric losses, §6.1.1) keep this contract for inference and plug their own loss and batch layout in with
the depth issue. Evaluation: the standard error metrics of `DepthMetrics`, each computed per image over its valid
pixels and averaged over images (the Eigen/KITTI protocol), as sums that add up across DDP ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data.loader import to_device
from ..engine.task import Task
from ..errors import ConfigError
from ..metrics.meter import Mean, Metric
from .optimization import build_optimizers


def l1_depth_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean |d - d*| over the valid pixels."""
    return (pred - target).abs()[valid].mean()


def silog_loss(pred: Tensor, target: Tensor, valid: Tensor, lam: float = 0.5, min_depth: float = 1e-3) -> Tensor:
    """Eigen et al. 2014: with g = log d - log d* over the n valid pixels, `mean(g^2) - lam mean(g)^2`
    (lam = 1: fully scale-invariant; 0: the log-depth MSE)."""
    g = torch.log(pred[valid].clamp(min=min_depth)) - torch.log(target[valid])
    return g.pow(2).mean() - lam * g.mean().pow(2)


LOSSES = {"l1": l1_depth_loss, "silog": silog_loss}


class DepthMetrics(Metric):
    """Eigen et al. 2014 errors averaged over images, each over its valid pixels (target in (min_depth,
    max_depth); predictions clamped to that range, as the KITTI evaluation does): abs_rel = mean |d - d*| / d*,
    sq_rel = mean (d - d*)^2 / d*, rmse = sqrt(mean (d - d*)^2), rmse_log = sqrt(mean (log d - log d*)^2),
    delta<1.25^k = fraction with max(d / d*, d* / d) < 1.25^k for k = 1, 2, 3. Notes: 002 §6.
    """

    NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")

    def __init__(self, min_depth: float = 1e-3, max_depth: float | None = None):
        super().__init__()
        self.min_depth, self.max_depth = min_depth, max_depth
        self.add_state("sums", torch.zeros(len(self.NAMES), dtype=torch.float64))
        self.add_state("images", torch.zeros((), dtype=torch.int64))

    def valid(self, target: Tensor) -> Tensor:
        """The pixels with a usable measurement."""
        ok = target > self.min_depth
        return ok & (target < self.max_depth) if self.max_depth is not None else ok

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        pred, target = _as_maps(pred, target)
        hi = self.max_depth if self.max_depth is not None else float("inf")
        for d, t, m in zip(pred.double(), target.double(), self.valid(target)):
            if not m.any():
                continue
            d, t = d[m].clamp(self.min_depth, hi), t[m]
            ratio = torch.maximum(d / t, t / d)
            row = torch.stack([((d - t).abs() / t).mean(), ((d - t).pow(2) / t).mean(), (d - t).pow(2).mean().sqrt(),
                               (d.log() - t.log()).pow(2).mean().sqrt(), *[(ratio < 1.25**k).double().mean()
                                                                           for k in (1, 2, 3)]])
            self.sums = self.sums.to(row.device) + row
            self.images = self.images.to(row.device) + 1

    def compute(self) -> dict[str, float]:
        n = self.synced("images").item()
        if n == 0:
            raise ConfigError("DepthMetrics.compute() before any image with a valid depth pixel")
        return dict(zip(self.NAMES, (self.synced("sums") / n).tolist()))


def _as_maps(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """pred and target as [B, H, W] (a channel dimension of 1 dropped), or a clear error."""
    if target.dim() == 4:
        target = target[:, 0]
    if pred.dim() == 4 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if pred.shape != target.shape:
        raise ConfigError(f"a depth model must return [B, 1, H, W] matching the target; got {tuple(pred.shape)} "
                          f"for a target of {tuple(target.shape)}")
    return pred, target


class DepthTask(Task):
    """Supervised depth regression with a pluggable loss; Eigen's metrics. Notes: 002 §6.

    `loss`: "l1", "silog" or a callable(pred, target, valid_mask); pixels outside (`min_depth`, `max_depth`) are
    ignored. Optimizer and schedule from `cfg` (`tasks.optimization.build_optimizers`).
    """

    def __init__(self, model: nn.Module, cfg, loss: str | Callable = "l1", min_depth: float = 1e-3,
                 max_depth: float | None = None):
        if isinstance(loss, str) and loss not in LOSSES:
            raise ConfigError(f"depth loss must be one of {sorted(LOSSES)} or a callable; got {loss!r}")
        super().__init__(model)
        self.cfg, self.loss = cfg, LOSSES[loss] if isinstance(loss, str) else loss
        self.min_depth, self.max_depth = min_depth, max_depth

    def configure_optimizers(self, plan):
        return build_optimizers(self.model.parameters(), self.cfg, plan)

    def _metrics(self) -> DepthMetrics:
        return DepthMetrics(self.min_depth, self.max_depth)

    def training_step(self, model, batch, ctx):
        images, depth = batch
        pred, depth = _as_maps(model(images).float(), depth.float())
        valid = self._metrics().valid(depth)
        if not valid.any():
            raise ConfigError("a depth batch without any valid target pixel (all outside (min_depth, max_depth))")
        return {"loss": self.loss(pred, depth, valid)}

    def evaluate(self, model, data):
        metrics, loss = self._metrics(), Mean()
        device = next(model.parameters()).device
        for images, depth in data:
            images, depth = to_device((images, depth), device)
            pred, depth = _as_maps(model(images).float(), depth.float())
            valid = metrics.valid(depth)
            if valid.any():
                loss.update(self.loss(pred, depth, valid), int(valid.sum()))
            metrics.update(pred, depth)
        return {"loss": loss.compute(), **metrics.compute()}

    @torch.no_grad()
    def figures(self, run_dir: Path, model, data) -> list[Path]:
        from ..report.figures import plot_image_grid

        images, depth = next(iter(data))
        device = next(model.parameters()).device
        n = min(8, len(images))
        pred, depth = _as_maps(model(images[:n].to(device)).float().cpu(), depth[:n].float())
        tiles = [t for i in range(n) for t in (images[i].float(), depth[i], pred[i])]
        titles = [s for _ in range(n) for s in ("image", "depth", "predicted")]
        return [plot_image_grid(tiles, run_dir / "figures" / "depth.png", titles=titles, ncols=6)]
