"""Metric learning: an embedding network trained so that same-class items are close (Notes: 002 §7, §7.2.2).

Contract (pytorch-metric-learning's split of the job): the model maps a batch of inputs to embeddings [B, D]
(L2-normalised by the task when `normalize`, as FaceNet does, §7.2.3); a batch is (inputs, class labels [B]).
A miner picks the training tuples from the batch's embeddings, `miner(embeddings, labels) -> (anchors,
positives, negatives)` index tensors, and the loss scores them, `loss(embeddings, labels, indices) -> scalar`.
The defaults are batch-hard mining (each anchor's farthest positive and nearest negative; Hermans et al. 2017)
and the notes' triplet loss `max(0, |f(A) - f(P)|^2 - |f(A) - f(N)|^2 + m)` (§7.2.2, squared distances).
Evaluation is retrieval on the evaluation set: recall@k, the fraction of queries whose k nearest other items
(Euclidean distance between the embeddings) include one of the query's class (`RecallAtK`). Verification ROC
(§7.2) comes with the metric-learning issue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.loader import to_device
from ..engine.task import Task
from ..errors import ConfigError
from ..metrics.meter import Metric
from .optimization import build_optimizers


def batch_hard_triplets(embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(anchor, positive, negative) indices: every item with a positive and a negative in the batch is an anchor,
    with its farthest same-class item and its nearest other-class item (Hermans et al. 2017; Notes: 002 §7.2.2)."""
    d = torch.cdist(embeddings.detach().float(), embeddings.detach().float())
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos, neg = same & ~eye, ~same
    anchors = torch.nonzero(pos.any(1) & neg.any(1)).flatten()
    hardest_pos = d.masked_fill(~pos, float("-inf")).argmax(1)
    hardest_neg = d.masked_fill(~neg, float("inf")).argmin(1)
    return anchors, hardest_pos[anchors], hardest_neg[anchors]


def triplet_margin_loss(embeddings: Tensor, labels: Tensor, indices: tuple[Tensor, Tensor, Tensor],
                        margin: float = 0.2) -> Tensor:
    """Mean over the triplets of max(0, |f(A) - f(P)|^2 - |f(A) - f(N)|^2 + margin) (Notes: 002 §7.2.2; squared
    distances, unlike torch.nn.TripletMarginLoss); 0 (still connected to the graph) when there is no triplet."""
    a, p, n = indices
    if len(a) == 0:
        return embeddings.sum() * 0.0
    ea, ep, en = embeddings[a], embeddings[p], embeddings[n]
    return F.relu((ea - ep).pow(2).sum(1) - (ea - en).pow(2).sum(1) + margin).mean()


class RecallAtK(Metric):
    """recall@k for each k in `ks`: over the queries that have another item of their class, the fraction whose k
    nearest other items (Euclidean) contain one. Notes: 002 §7.1.1 (k-NN retrieval in a gallery).

    It keeps the embeddings (retrieval needs all of them), so under DDP it scores what this process saw: give every
    rank the whole evaluation set rather than a shard.
    """

    def __init__(self, ks: Sequence[int] = (1,)):
        super().__init__()
        if not ks or min(ks) < 1:
            raise ConfigError(f"RecallAtK needs k values >= 1; got {list(ks)}")
        self.ks = sorted(set(int(k) for k in ks))
        self.embeddings: list[Tensor] = []
        self.labels: list[Tensor] = []

    def reset(self) -> None:
        self.embeddings, self.labels = [], []

    @torch.no_grad()
    def update(self, embeddings: Tensor, labels: Tensor) -> None:
        if embeddings.dim() != 2 or len(embeddings) != len(labels):
            raise ConfigError(f"RecallAtK.update expects embeddings [N, D] and labels [N]; got "
                              f"{tuple(embeddings.shape)} and {tuple(labels.shape)}")
        self.embeddings.append(embeddings.detach().float())
        self.labels.append(labels.detach())

    def compute(self) -> dict[str, float]:
        if not self.embeddings:
            raise ConfigError("RecallAtK.compute() before any update: no embeddings to retrieve from")
        e, y = torch.cat(self.embeddings), torch.cat(self.labels)
        d = torch.cdist(e, e).fill_diagonal_(float("inf"))
        k_max = min(max(self.ks), len(e) - 1)
        if k_max < 1:
            raise ConfigError("RecallAtK needs at least 2 embeddings")
        hit = y[d.topk(k_max, dim=1, largest=False).indices] == y[:, None]  # [N, k_max]
        has_pos = (y[:, None] == y[None, :]).sum(1) > 1
        if not has_pos.any():
            raise ConfigError("RecallAtK: no query has another item of its class in the evaluation set")
        hit = hit[has_pos]
        return {f"recall@{k}": hit[:, :min(k, k_max)].any(1).float().mean().item() for k in self.ks}


class MetricLearningTask(Task):
    """Embedding training with a miner and a tuple loss; retrieval evaluation. Notes: 002 §7, §7.2.2.

    `loss(embeddings, labels, indices)` defaults to `triplet_margin_loss` with `margin`; `miner(embeddings,
    labels)` to `batch_hard_triplets`. `ks`: the k of recall@k. Optimizer and schedule from `cfg`.
    """

    def __init__(self, model: nn.Module, cfg, loss: Callable | None = None, miner: Callable | None = None,
                 margin: float = 0.2, ks: Sequence[int] = (1, 5), normalize: bool = True):
        super().__init__(model)
        self.cfg, self.margin, self.ks, self.normalize = cfg, margin, tuple(ks), normalize
        self.loss = loss or (lambda e, y, idx: triplet_margin_loss(e, y, idx, self.margin))
        self.miner = miner or batch_hard_triplets

    def embed(self, model: nn.Module, x: Tensor) -> Tensor:
        """The model's embeddings of x [B, D], L2-normalised when `normalize`."""
        e = model(x).float()
        if e.dim() != 2:
            raise ConfigError(f"a metric-learning model must return embeddings [B, D]; got {tuple(e.shape)}")
        return F.normalize(e, dim=1) if self.normalize else e

    def configure_optimizers(self, plan):
        return build_optimizers(self.model.parameters(), self.cfg, plan)

    def training_step(self, model, batch, ctx):
        x, y = batch
        e = self.embed(model, x)
        indices = self.miner(e.detach(), y)
        return {"loss": self.loss(e, y, indices), "tuples": torch.tensor(float(len(indices[0])))}

    def evaluate(self, model, data):
        recall = RecallAtK(self.ks)
        device = next(model.parameters()).device
        for x, y in data:
            x, y = to_device((x, y), device)
            recall.update(self.embed(model, x), y)
        return recall.compute()
