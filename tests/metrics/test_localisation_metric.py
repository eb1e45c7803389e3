"""LocalisationAccuracy (Notes: 002 §4.3.1, §4.1): accuracy against scikit-learn, IoU against torchvision, hand
examples, the top-scored detection, batches and DDP ranks adding up, and the names DetectionTask declares."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score
from torchvision.ops import box_iou as tv_box_iou

from dlkit.errors import ConfigError
from dlkit.metrics.detection.localisation import LocalisationAccuracy
from dlkit.tasks.detection import DetectionTask


def random_case(n: int, seed: int, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    true_xy = torch.rand(n, 2, generator=g) * 50
    true = torch.cat([true_xy, true_xy + 5 + torch.rand(n, 2, generator=g) * 30], 1)
    pred = true + torch.randn(n, 4, generator=g) * 8  # jittered: IoUs spread over 0..1, some boxes inverted
    true_labels = torch.randint(1, classes + 1, (n,), generator=g)
    pred_labels = torch.where(torch.rand(n, generator=g) < 0.7, true_labels,
                              torch.randint(1, classes + 1, (n,), generator=g))
    preds = [{"boxes": pred[i:i + 1], "scores": torch.rand(1, generator=g), "labels": pred_labels[i:i + 1]}
             for i in range(n)]
    targets = [{"boxes": true[i:i + 1], "labels": true_labels[i:i + 1]} for i in range(n)]
    return preds, targets


def reference(preds, targets, threshold=0.5):
    """Accuracy by scikit-learn, IoU by torchvision (inverted boxes clipped to empty, as ours counts them)."""
    y_true = [t["labels"].item() for t in targets]
    y_pred = [p["labels"].item() for p in preds]
    pred = torch.cat([p["boxes"] for p in preds])
    pred = torch.cat([pred[:, :2], torch.maximum(pred[:, 2:], pred[:, :2])], 1)  # x2 >= x1, y2 >= y1
    iou = tv_box_iou(pred, torch.cat([t["boxes"] for t in targets])).diagonal().double().numpy()
    right = np.array(y_true) == np.array(y_pred)
    return {"accuracy": accuracy_score(y_true, y_pred), "mean_iou": iou.mean(),
            "loc_accuracy": np.mean(right & (iou >= threshold))}


def test_scores_equal_sklearn_accuracy_and_torchvision_iou_on_random_cases():
    for seed in range(3):
        preds, targets = random_case(40, seed)
        metric = LocalisationAccuracy()
        metric.update(preds[:13], targets[:13])  # in batches: the sums add up
        metric.update(preds[13:], targets[13:])
        got, ref = metric.compute(), reference(preds, targets)
        assert list(got) == list(LocalisationAccuracy.names)
        assert 0.05 < ref["loc_accuracy"] < ref["accuracy"] < 1  # the case exercises every branch
        for key in ref:
            assert got[key] == pytest.approx(ref[key], abs=1e-9), key
    # another threshold changes only loc_accuracy
    strict = LocalisationAccuracy(iou_threshold=0.75)
    strict.update(preds, targets)
    ref = reference(preds, targets, 0.75)
    assert strict.compute() == pytest.approx(ref, abs=1e-9)


def test_hand_example_and_the_top_scored_detection_and_images_without_detections():
    metric = LocalisationAccuracy()
    targets = [{"boxes": torch.tensor([[1.0, 0.0, 3.0, 2.0]]), "labels": torch.tensor([2])}] * 3
    preds = [
        # IoU([0,0,2,2], [1,0,3,2]) = 2 / (4 + 4 - 2) = 1/3, right class: correct but not localised
        {"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([2])},
        # two detections: the top-scored one (exact box, right class) counts, not the first one
        {"boxes": torch.tensor([[10.0, 10.0, 12.0, 12.0], [1.0, 0.0, 3.0, 2.0]]), "scores": torch.tensor([0.2, 0.8]),
         "labels": torch.tensor([1, 2])},
        # no detection: wrong, IoU 0
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    metric.update(preds, targets)
    assert metric.compute() == pytest.approx({"accuracy": 2 / 3, "mean_iou": (1 / 3 + 1 + 0) / 3,
                                              "loc_accuracy": 1 / 3})
    metric.reset()
    with pytest.raises(ConfigError, match="before any image"):
        metric.compute()


def test_bad_inputs_get_one_line_errors():
    metric = LocalisationAccuracy()
    preds, targets = random_case(3, 0)
    targets[1] = {"boxes": torch.zeros(2, 4), "labels": torch.tensor([1, 2])}
    with pytest.raises(ConfigError, match="exactly one object; image 1 of the batch has 2 boxes"):
        metric.update(preds, targets)
    with pytest.raises(ConfigError, match="one per image"):
        metric.update(preds[:2], targets)
    with pytest.raises(ConfigError, match=r"iou_threshold must be in \[0, 1\]"):
        LocalisationAccuracy(iou_threshold=1.5)


def test_ranks_add_up_to_the_whole_under_ddp(monkeypatch):
    """Each rank scores its shard; compute() inside ranks_synced() sums the states (all_reduce) over the ranks."""
    import torch.distributed as dist

    from dlkit.metrics.meter import ranks_synced

    preds, targets = random_case(30, 5)
    ranks = [LocalisationAccuracy(), LocalisationAccuracy()]
    ranks[0].update(preds[:11], targets[:11])
    ranks[1].update(preds[11:], targets[11:])
    states = list(ranks[1]._states)
    values = [getattr(ranks[1], s) for s in states]
    assert len({(v.dtype, v.item()) for v in values}) == len(values)  # each state recognisable by its value

    def all_reduce(t):  # the sum over both ranks of the state `t` is a copy of
        name = next(s for s, v in zip(states, values) if v.dtype == t.dtype and torch.equal(v, t))
        t.add_(getattr(ranks[0], name))

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    with ranks_synced():
        gathered = ranks[1].compute()
    assert gathered == pytest.approx(reference(preds, targets), abs=1e-9)
    assert ranks[1].compute() == pytest.approx(reference(preds[11:], targets[11:]), abs=1e-9)  # outside: own shard


def test_detection_task_declares_the_metric_names_and_evaluates_with_it():
    preds, targets = random_case(6, 1)

    class Replay(torch.nn.Module):  # returns the stored detections of the images it is given (by index)
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, images, targets=None):
            return [preds[int(i)] for i in images[:, 0, 0, 0]]

    task = DetectionTask(Replay(), SimpleNamespace(), metric=LocalisationAccuracy)
    assert task.metric_names == ("accuracy", "mean_iou", "loc_accuracy")
    data = [(torch.arange(i, i + 3).float().view(3, 1, 1, 1), targets[i:i + 3]) for i in (0, 3)]
    assert task.evaluate(task.model, data) == pytest.approx(reference(preds, targets), abs=1e-9)
