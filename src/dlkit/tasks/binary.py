"""Binary classification with one output unit: sigmoid and binary cross-entropy (Notes: 003 §2.2.1.1, 000 §1.2).

Contract: the model maps a batch of inputs to one logit per sample ([N] or [N, 1]); batches are (inputs, 0/1
targets). P(y = 1 | x) = sigmoid(logit); the prediction is 1 where the logit is positive (p > 0.5). For 2-D inputs
(logic gates, XOR) the figures show the decision regions.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.task import Task
from ..errors import ConfigError
from ..metrics.meter import Accuracy, Mean
from .optimization import build_optimizers


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if out.dim() == 2 and out.shape[1] == 1:
        out = out.squeeze(1)
    if out.dim() != 1:
        raise ConfigError(f"a binary classifier returns one logit per sample, [N] or [N, 1]; got {tuple(out.shape)}")
    return out


class BinaryClassificationTask(Task):
    """One sigmoid output trained with binary cross-entropy; evaluates loss and accuracy (Notes: 003 §2.2.1.1)."""

    metric_names = ("loss", "accuracy")

    def __init__(self, model: nn.Module, cfg, title: str = ""):
        super().__init__(model)
        self.cfg, self.title = cfg, title

    def configure_optimizers(self, plan):
        return build_optimizers(self.model.parameters(), self.cfg, plan)

    def training_step(self, model, batch, ctx):
        x, y = batch
        return {"loss": F.binary_cross_entropy_with_logits(_logits(model, x), y.float())}

    def evaluate(self, model, data):
        loss, acc = Mean(), Accuracy()
        device = next(model.parameters()).device
        for x, y in data:
            x, y = x.to(device), y.to(device)
            logits = _logits(model, x).float()
            loss.update(F.binary_cross_entropy_with_logits(logits, y.float()), len(y))
            acc.update((logits > 0).long(), y.long())
        return {"loss": loss.compute(), "accuracy": acc.compute()}

    def figures(self, run_dir: Path, model, data) -> list[Path]:
        """The decision regions P(y = 1 | x) over the data's bounding box, for 2-D inputs."""
        from ..report.figures import plot_decision_regions

        if data is None:
            return []
        xs, ys = zip(*[(x, y) for x, y in data])
        x, y = torch.cat(xs), torch.cat(ys)
        if x.dim() != 2 or x.shape[1] != 2:
            return []
        device = next(model.parameters()).device

        def prob(a):
            with torch.no_grad():
                return torch.sigmoid(_logits(model, torch.as_tensor(a, dtype=x.dtype, device=device))).cpu().numpy()

        return [plot_decision_regions(prob, x.cpu(), y.cpu(), Path(run_dir) / "figures" / "decision_regions.png",
                                      title=self.title or "P(y = 1 | x)")]
