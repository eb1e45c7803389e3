"""The toy training loop the segmentation model tests share: Adam on per-pixel cross-entropy for one batch."""

import torch
import torch.nn.functional as F


def fit(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, lr: float, steps: int) -> list[float]:
    """Train `model` on (x, target) for `steps` Adam steps; the loss before each step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
