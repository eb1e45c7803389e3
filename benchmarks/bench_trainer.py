"""Per-step overhead of the Trainer against a bare PyTorch loop on the same model and batches.

Prints the ratio trainer / bare loop (1.00 means no overhead) for a tiny MLP (where Python
overhead is most visible) and for LeNet-5 on MNIST-sized batches.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from dlkit.data.loader import TensorLoader
from dlkit.engine.task import Task
from dlkit.engine.trainer import Trainer, TrainerConfig


class _Task(Task):
    def configure_optimizers(self):
        return [torch.optim.Adam(self.model.parameters(), 1e-3)], []

    def training_step(self, model, batch):
        x, y = batch
        return {"loss": F.cross_entropy(model(x), y)}


def _bare(make, x, y, bs):
    model = make()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    t = time.perf_counter()
    for xb, yb in TensorLoader(x, y, batch_size=bs):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def _trainer(make, x, y, bs):
    trainer = Trainer(_Task(make()), TensorLoader(x, y, batch_size=bs), None,
                      TrainerConfig(progress=False, tensorboard=False))
    t = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    reps = 3 if args.quick else 7
    cases = {
        "tiny MLP (64-32-10), batch 32": (lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
                                          (64,), 32, 300),
        "LeNet-5, batch 256": (lambda: nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10)), (1, 28, 28), 256, 20),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'case':34s} {'bare ms/step':>13s} {'trainer ms/step':>16s} {'ratio':>6s}")
    for name, (make, shape, bs, steps) in cases.items():
        x, y = torch.randn(bs * steps, *shape), torch.randint(0, 10, (bs * steps,))
        bare, eng = [], []
        for _ in range(reps):  # interleaved, medians: robust to a noisy shared machine
            torch.manual_seed(0)
            bare.append(_bare(make, x, y, bs))
            torch.manual_seed(0)
            eng.append(_trainer(make, x, y, bs))
        b, e = statistics.median(bare) / steps * 1e3, statistics.median(eng) / steps * 1e3
        print(f"{name:34s} {b:13.3f} {e:16.3f} {e / b:6.2f}")


if __name__ == "__main__":
    main()
