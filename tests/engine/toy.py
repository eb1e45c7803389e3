"""Small tasks and data shared by the engine tests."""

import torch
import torch.nn.functional as F
from torch import nn

from dlkit.data.loader import TensorLoader
from dlkit.engine.checkpoint import list_checkpoints, load_checkpoint_file
from dlkit.engine.task import Task


class ToyClassifier(Task):
    """Cross-entropy on a tiny MLP with dropout (so the global RNG matters for resuming). By default torch's Adam
    with StepLR; `optim` (a dict of the recipes' optimizer options, e.g. {"optimizer": "sgd", "schedule":
    "onecycle"}) builds dlkit's optimizer and schedule as a recipe would."""

    def __init__(self, model, lr=1e-2, nan_at_step=None, optim=None):
        super().__init__(model)
        self.lr, self.nan_at_step, self.calls, self.optim = lr, nan_at_step, 0, optim

    def configure_optimizers(self, plan):
        if self.optim is not None:
            from types import SimpleNamespace

            from dlkit.tasks.optimization import OPTIMIZER_OPTIONS, build_optimizers

            return build_optimizers(self.model.parameters(),
                                    SimpleNamespace(**{**OPTIMIZER_OPTIONS, "lr": self.lr, **self.optim}), plan)
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


def toy_cnn(seed=0):
    """A tiny CNN on 1x4x4 "images" (toy_data reshaped), for channels-last."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.2), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


def toy_data(n=96):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def toy_loaders(batch_size=16, images=False, rank=0, world_size=1):
    """Training (shuffled, 6 batches of 16) and validation loaders of toy_data; `images`: x as 1x4x4 images (the
    8 features twice); `rank`/`world_size`: this rank's share of each training batch under DDP."""
    x, y = toy_data()
    if images:
        x = x.repeat(1, 2).reshape(-1, 1, 4, 4)
    return (TensorLoader(x, y, batch_size=batch_size, seed=3, rank=rank, world_size=world_size),
            TensorLoader(x, y, batch_size=48, shuffle=False))


class Stream:
    """An endless stream of random mini-batches of the toy data, with a resumable generator state."""

    def __init__(self, batch_size=16, seed=5):
        self.x, self.y = toy_data()
        self.batch_size, self.g = batch_size, torch.Generator().manual_seed(seed)
        self.drawn = 0

    def __iter__(self):
        return self

    def __next__(self):
        idx = torch.randint(0, len(self.x), (self.batch_size,), generator=self.g)
        self.drawn += 1
        return self.x[idx], self.y[idx]

    def state_dict(self):
        return {"generator": self.g.get_state()}

    def load_state_dict(self, state):
        self.g.set_state(state["generator"])


def differences(a, b, where="") -> list[str]:
    """Where two nested checkpoint states differ: tensors by dtype and torch.equal, other values by ==. The
    trainer's `seconds` (a clock reading of the time trained, not a state that training depends on) is left out."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        # torch's Optimizer.__setstate__ adds differentiable=False (autograd through step(), not state) on loading
        a, b = ({k: v for k, v in d.items() if not (k == "differentiable" and v is False)
                 and not (k == "seconds" and where == ".trainer")} for d in (a, b))
        if a.keys() != b.keys():
            return [f"{where} keys {sorted(map(str, a))} != {sorted(map(str, b))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}.{i}")]
    return [] if a == b or (a != a and b != b) else [f"{where}: {a!r} != {b!r}"]


def final_state(run_dir):
    """The newest checkpoint of a run folder, loaded."""
    return load_checkpoint_file(list_checkpoints(run_dir / "checkpoints")[-1])
