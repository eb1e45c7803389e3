"""Small tasks and data shared by the engine tests."""

import torch
import torch.nn.functional as F
from torch import nn

from dlkit.data.loader import TensorLoader
from dlkit.engine.task import Task


class ToyClassifier(Task):
    """Cross-entropy on a tiny MLP with dropout (so the global RNG matters for resuming)."""

    def __init__(self, model, lr=1e-2, nan_at_step=None):
        super().__init__(model)
        self.lr, self.nan_at_step, self.calls = lr, nan_at_step, 0

    def configure_optimizers(self, plan):
        opt = torch.optim.Adam(self.model.parameters(), self.lr)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, 5, 0.5)]

    def training_step(self, model, batch, ctx):
        x, y = batch
        self.calls += 1
        loss = F.cross_entropy(model(x), y)
        if self.nan_at_step is not None and self.calls >= self.nan_at_step:
            loss = loss * float("nan")
        return {"loss": loss}

    def evaluate(self, model, loader):
        losses = [F.cross_entropy(model(x), y, reduction="sum") for x, y in loader]
        return {"loss": torch.stack(losses).sum().item() / loader.n}


def toy_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def toy_data(n=96):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def toy_loaders(batch_size=16):
    x, y = toy_data()
    return TensorLoader(x, y, batch_size=batch_size, seed=3), TensorLoader(x, y, batch_size=48, shuffle=False)
