"""Image and vector classification: cross-entropy training, accuracy, confusion matrix
(Notes: 000 §1-§3; 004 CNN: softmax output with one-hot labels).

Contract: the model maps a batch of inputs to logits [N, classes]; batches are (inputs, class indices). A model
with auxiliary classifiers (GoogLeNet, 002 §2.1) returns (logits, aux logits...) in training: their cross-entropies
are added with weight AUX_WEIGHT, the paper's 0.3.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.task import Task
from ..errors import ConfigError
from ..metrics.classification import confusion_matrix
from ..metrics.meter import Accuracy, Mean
from .optimization import build_optimizers

AUX_WEIGHT = 0.3  # GoogLeNet's auxiliary classifiers' loss weight (Notes: 002 §2.1)


def input_target_pair(batch, who: str):
    """(inputs, targets) of a batch that holds exactly those two, else a one-line error saying what it holds."""
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        got = (f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, tuple | list)
               else type(batch).__name__)
        raise ConfigError(f"{who} trains on batches (inputs, targets); the data gave {got}. Make the dataset "
                          "return (x, y) pairs")
    return batch


class ClassificationTask(Task):
    """Softmax classifier trained with cross-entropy; evaluates loss and accuracy.

    `image_shape` lets vector inputs (e.g. 64 pixels of an 8x8 digit) be drawn as images.
    """

    metric_names = ("loss", "accuracy")

    def __init__(self, model: nn.Module, cfg, class_names: Sequence[str] | None = None,
                 image_shape: tuple[int, ...] | None = None, label_smoothing: float = 0.0):
        super().__init__(model)
        self.cfg, self.class_names, self.image_shape = cfg, class_names, image_shape
        self.label_smoothing = label_smoothing

    def configure_optimizers(self, plan):
        return build_optimizers(self.model.parameters(), self.cfg, plan)

    def training_step(self, model, batch, ctx):
        x, y = input_target_pair(batch, type(self).__name__)
        logits, *aux = out if isinstance(out := model(x), tuple | list) else (out,)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        for a in aux:
            loss = loss + AUX_WEIGHT * F.cross_entropy(a, y, label_smoothing=self.label_smoothing)
        return {"loss": loss, "accuracy": (logits.argmax(1) == y).float().mean()}

    def predict(self, model, loader) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Predicted classes, targets and mean loss over `loader`."""
        preds, targets, loss = [], [], Mean()
        device = next(model.parameters()).device
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss.update(F.cross_entropy(logits.float(), y), len(y))
            preds.append(logits.argmax(1).cpu())
            targets.append(y.cpu())
        return torch.cat(preds), torch.cat(targets), loss.compute()

    def evaluate(self, model, loader):
        loss, acc = Mean(), Accuracy()
        device = next(model.parameters()).device
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x).float()
            loss.update(F.cross_entropy(logits, y), len(y))
            acc.update(logits, y)
        return {"loss": loss.compute(), "accuracy": acc.compute()}

    def figures(self, run_dir: Path, model, loader) -> list[Path]:
        from ..report.figures import plot_confusion_matrix, plot_image_grid

        if loader is None:
            return []
        pred, target, _ = self.predict(model, loader)
        k = int(max(pred.max(), target.max())) + 1
        if self.class_names is not None:
            k = len(self.class_names)
        names = list(self.class_names) if self.class_names is not None else [str(i) for i in range(k)]
        figs = run_dir / "figures"
        paths = [figs / "confusion_matrix.png"]
        plot_confusion_matrix(confusion_matrix(pred, target, k).numpy(), names, paths[0])
        x, _ = next(iter(loader))
        n = min(32, len(x))
        images = x[:n].float().cpu()
        if self.image_shape is not None:
            images = images.reshape(n, *self.image_shape)
        if images.dim() == 4 or (images.dim() == 3 and self.image_shape is not None):
            titles = [f"{names[int(p)]} / {names[int(t)]}" for p, t in zip(pred[:n], target[:n])]
            paths.append(figs / "predictions.png")
            plot_image_grid(images, paths[-1], titles=titles, correct=(pred[:n] == target[:n]).tolist())
        return paths
