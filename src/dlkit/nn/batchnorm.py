"""Batch normalisation written from the formula (Notes: 000 §3.8, 003 §2.2.5).

y = gamma (x - mu) / sqrt(sigma^2 + eps) + beta, per feature (dense input [N, C] or [N, C, L]) or per
channel (conv input [N, C, H, W], statistics over N, H, W). In training mu and sigma^2 are the batch
mean and the biased batch variance; running estimates are updated as
running = (1 - momentum) running + momentum * batch_stat, with the UNBIASED batch variance for
running_var (as torch). In evaluation the running estimates are used. The notes give no eps or
momentum; the defaults are torch's (eps 1e-5, momentum 0.1; Keras uses 1e-3 and 0.99 = 1 - 0.01).
Buffer and parameter names equal torch's, so state_dicts interchange with nn.BatchNorm1d/2d.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError

_LAYOUTS = {1: "[N, C] or [N, C, L]", 2: "[N, C, H, W]", 3: "[N, C, D, H, W]"}


class BatchNorm(nn.Module):
    """Batch normalisation over `spatial_dims` (1: [N, C] / [N, C, L], 2: [N, C, H, W], 3: [N, C, D, H, W]).

    Notes: 000 §3.8, 003 §2.2.5. momentum=None uses a cumulative average (1 / batches seen), as torch.
    The layer holds 4 C numbers: gamma and beta (trainable), running mean and variance (not trainable).
    """

    def __init__(
        self,
        num_features: int,
        spatial_dims: int = 1,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ):
        super().__init__()
        if spatial_dims not in _LAYOUTS:
            raise ConfigError(f"spatial_dims must be 1, 2 or 3; got {spatial_dims}")
        if num_features < 1:
            raise ConfigError(f"num_features must be positive; got {num_features}")
        if eps <= 0:
            raise ConfigError(f"eps must be > 0; got {eps}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"momentum must be in [0, 1] or None (cumulative average); got {momentum}")
        self.num_features, self.spatial_dims = num_features, spatial_dims
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))  # gamma
            self.bias = nn.Parameter(torch.zeros(num_features))  # beta
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, batch counter 0."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Running statistics reset; gamma = 1, beta = 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def _check_input(self, x: Tensor) -> None:
        allowed = (2, 3) if self.spatial_dims == 1 else (self.spatial_dims + 2,)
        if x.dim() not in allowed or x.shape[1] != self.num_features:
            raise ConfigError(
                f"{type(self).__name__}({self.num_features}) expects input {_LAYOUTS[self.spatial_dims]} "
                f"with C = {self.num_features}; got shape {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        if x.numel() == 0:  # an empty batch (a rank's share of a short last batch): an empty output, stats unchanged
            return x * self.weight.view(shape) + self.bias.view(shape) if self.affine else x.clone()
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            n = x.numel() // x.shape[1]
            if n < 2 and self.training:
                raise ConfigError(
                    f"batch norm in training needs more than 1 value per channel; got input "
                    f"{tuple(x.shape)}. Use a larger batch, or call .eval()."
                )
            mean = x.mean(dim=dims)
            var = ((x - mean.view(shape)) ** 2).mean(dim=dims)  # biased: used for normalising
            if self.training and self.track_running_stats:
                with torch.no_grad():
                    self.num_batches_tracked += 1
                    m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                    unbiased = var * (n / (n - 1))
                    self.running_mean.mul_(1 - m).add_(m * mean)
                    self.running_var.mul_(1 - m).add_(m * unbiased)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, spatial_dims={self.spatial_dims}, eps={self.eps}, "
            f"momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(BatchNorm):
    """Batch normalisation per feature of [N, C] or [N, C, L] input (as nn.BatchNorm1d)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ):
        super().__init__(num_features, 1, eps, momentum, affine, track_running_stats)


class BatchNorm2d(BatchNorm):
    """Batch normalisation per channel of [N, C, H, W] input (as nn.BatchNorm2d)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ):
        super().__init__(num_features, 2, eps, momentum, affine, track_running_stats)
