"""Frozen batch normalisation: batch norm at inference as a fixed per-channel affine map (Notes: 000 §3.8,
003 §2.2.5).

At inference batch norm uses the moving averages instead of batch statistics (000 §3.8, 003 §2.2.5), so
y = gamma (x - mu) / sqrt(sigma^2 + eps) + beta is a fixed affine map y = x * scale + shift with
scale = gamma / sqrt(sigma^2 + eps) and shift = beta - mu * scale. FrozenBatchNorm2d keeps gamma, beta,
mu and sigma^2 as buffers (nothing trains, the batch is never looked at, train and eval mode compute the
same thing): the usual choice for detector backbones fine-tuned with small batches. Equal to
torchvision.ops.FrozenBatchNorm2d (same buffer names; a state dict's num_batches_tracked is dropped on load).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .batchnorm import BatchNorm


class FrozenBatchNorm2d(nn.Module):
    """Batch norm on [N, C, H, W] with fixed statistics and affine (buffers, no parameters). Notes: 000 §3.8."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        if num_features < 1:
            raise ConfigError(f"num_features must be positive; got {num_features}")
        if eps <= 0:
            raise ConfigError(f"eps must be > 0; got {eps}")
        self.num_features, self.eps = num_features, eps
        self.register_buffer("weight", torch.ones(num_features))  # gamma
        self.register_buffer("bias", torch.zeros(num_features))  # beta
        self.register_buffer("running_mean", torch.zeros(num_features))  # mu
        self.register_buffer("running_var", torch.ones(num_features))  # sigma^2

    @classmethod
    def from_batchnorm(cls, bn: nn.Module) -> FrozenBatchNorm2d:
        """A frozen copy of a 2-D batch norm (nn.BatchNorm2d or dlkit's BatchNorm2d) holding its statistics.

        A batch norm without affine parameters freezes with gamma = 1, beta = 0; one that tracks no
        running statistics has nothing to freeze and is refused.
        """
        if not _is_batchnorm2d(bn):
            raise ConfigError(f"from_batchnorm expects nn.BatchNorm2d or dlkit's BatchNorm2d; got "
                              f"{type(bn).__name__}")
        if bn.running_mean is None:
            raise ConfigError(f"{type(bn).__name__}({bn.num_features}) tracks no running statistics, so there is "
                              f"nothing to freeze; build it with track_running_stats=True and train it first")
        frozen = cls(bn.num_features, eps=bn.eps).to(device=bn.running_mean.device, dtype=bn.running_mean.dtype)
        with torch.no_grad():  # copied in the batch norm's own dtype, so float64 statistics stay exact
            for name in ("running_mean", "running_var") + (("weight", "bias") if bn.weight is not None else ()):
                getattr(frozen, name).copy_(getattr(bn, name).detach())
        return frozen

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # a BatchNorm2d state dict loads as is: its batch counter means nothing once frozen (as torchvision)
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        """y = x * scale + shift, scale = gamma / sqrt(sigma^2 + eps), shift = beta - mu * scale."""
        if x.dim() != 4:
            raise ConfigError(f"FrozenBatchNorm2d expects [N, C, H, W]; got shape {tuple(x.shape)}")
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _is_batchnorm2d(module: nn.Module) -> bool:
    return isinstance(module, nn.BatchNorm2d) or (isinstance(module, BatchNorm) and module.spatial_dims == 2)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every 2-D batch norm in `module` (in place) by a FrozenBatchNorm2d holding its statistics.

    Returns the module (a batch norm passed itself comes back frozen). State-dict keys stay the same except
    num_batches_tracked, which is dropped; an unfrozen model's state dict still loads into the frozen one.
    """
    if _is_batchnorm2d(module):
        return FrozenBatchNorm2d.from_batchnorm(module)
    for name, child in module.named_children():
        frozen = freeze_batchnorm(child)
        if frozen is not child:
            setattr(module, name, frozen)
    return module
