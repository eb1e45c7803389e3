"""Checks shared by the model tests: a real mini-batch (scikit-learn digits), a short training run,
parameter counting and the every-parameter-gets-a-gradient check."""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits


def digits_batch(n: int, size: int, chans: int, classes: int):
    """The first n scikit-learn digits (8x8) of classes 0..classes-1, resized to size x size and standardised."""
    d = load_digits()
    keep = d.target < classes
    x = torch.tensor(d.images[keep][:n], dtype=torch.float32)[:, None]
    x = F.interpolate(x, size=size, mode="bilinear")
    x = ((x - x.mean()) / x.std()).repeat(1, chans, 1, 1)
    return x, torch.tensor(d.target[keep][:n])


def training_losses(model, x, y, steps: int, lr: float = 3e-3) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_every_parameter_gets_a_gradient(model, x):
    model.train()
    out = model(x)
    outs = out if isinstance(out, tuple) else (out,)  # auxiliary heads (GoogLeNet) return several outputs
    sum(o.sum() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def detector_losses(model, images, targets, steps: int, lr: float = 3e-3) -> list[float]:
    """Train a detector (the detection contract: model(images, targets) -> loss dict) for `steps` Adam steps on one
    batch; the summed loss of every step. The model is left in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses
