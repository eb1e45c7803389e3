"""The detection contract (Notes: 002 §4, §4.1): a toy one-box detector trained through the Trainer."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlkit.data.loader import TensorLoader
from dlkit.engine.callbacks import LambdaCallback
from dlkit.engine.trainer import TrainerConfig, fit
from dlkit.errors import ConfigError
from dlkit.tasks.detection import BoxRecallIoU, DetectionTask, box_iou
from dlkit.tasks.optimization import OPTIMIZER_OPTIONS

SIZE = 16


def squares(n: int, seed: int):
    """Images [n, 1, 16, 16] with one square each: bright (label 1) or dark (label 2), side 4-8 pixels."""
    g = torch.Generator().manual_seed(seed)
    images, targets = torch.zeros(n, 1, SIZE, SIZE), []
    for i in range(n):
        s = int(torch.randint(4, 9, (1,), generator=g))
        x, y = (int(v) for v in torch.randint(0, SIZE - s + 1, (2,), generator=g))
        label = int(torch.randint(1, 3, (1,), generator=g))
        images[i, 0, y:y + s, x:x + s] = 1.0 if label == 1 else -1.0
        targets.append({"boxes": torch.tensor([[x, y, x + s, y + s]], dtype=torch.float32),
                        "labels": torch.tensor([label])})
    return images, targets


class ToyDetector(nn.Module):
    """One box per image: a CNN regresses its corners and classifies it; the detection contract's two modes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                      nn.ReLU(), nn.Flatten(), nn.Linear(8 * SIZE * SIZE, 64), nn.ReLU())
        self.box, self.cls = nn.Linear(64, 4), nn.Linear(64, 2)

    def forward(self, images, targets=None):
        h = self.features(images)
        boxes, logits = torch.sigmoid(self.box(h)) * SIZE, self.cls(h)
        if self.training:
            gt = torch.cat([t["boxes"] for t in targets])
            labels = torch.cat([t["labels"] for t in targets]) - 1
            return {"loss_box_reg": F.l1_loss(boxes / SIZE, gt / SIZE),
                    "loss_classifier": F.cross_entropy(logits, labels)}
        scores, labels = logits.softmax(1).max(1)
        return [{"boxes": boxes[i:i + 1], "scores": scores[i:i + 1], "labels": labels[i:i + 1] + 1}
                for i in range(len(images))]


def opt_cfg(**kw):
    return SimpleNamespace(**{**OPTIMIZER_OPTIONS, **kw})


def test_box_iou_hand_values():
    # Notes 002 §4.1: [0,0,2,2] against [1,1,3,3] overlap in 1 of 4 + 4 - 1 = 7; disjoint: 0; identical: 1
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [5, 5, 6, 6], [0, 0, 2, 2]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 1.0]]))


def test_box_recall_iou_hand_values():
    preds = [{"boxes": torch.tensor([[1.0, 1, 3, 3], [0, 0, 4, 2], [0, 0, 4, 4]]),
              "scores": torch.tensor([0.9, 0.8, 0.1]), "labels": torch.tensor([1, 2, 2])},
             {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    targets = [{"boxes": torch.tensor([[0.0, 0, 2, 2], [0, 0, 4, 4], [0, 0, 4, 4]]), "labels": torch.tensor([1, 2, 1])},
               {"boxes": torch.tensor([[0.0, 0, 1, 1]]), "labels": torch.tensor([1])}]
    m = BoxRecallIoU(score_threshold=0.5)
    m.update(preds, targets)
    # GT 1: IoU 1/7 with the label-1 box; GT 2: 0.5 with [0,0,4,2] (the exact [0,0,4,4] scores 0.1 < 0.5);
    # GT 3: label 1 against [1,1,3,3]: 4/16; GT 4: no detection -> 0
    out = m.compute()
    assert out["mean_iou"] == pytest.approx((1 / 7 + 0.5 + 0.25 + 0) / 4)
    assert out["recall@0.5"] == pytest.approx(1 / 4)


def test_detection_task_trains_a_toy_detector_through_the_trainer():
    images, targets = squares(512, seed=1)
    val_images, val_targets = squares(128, seed=2)
    train = TensorLoader(images, targets, batch_size=32, seed=0)
    val = TensorLoader(val_images, val_targets, batch_size=64, shuffle=False)
    task = DetectionTask(ToyDetector(), opt_cfg(lr=3e-3), metric=BoxRecallIoU)
    task.model.eval()
    with torch.no_grad():
        before = task.evaluate(task.model, val)
    losses = []
    result = fit(task, train, val, TrainerConfig(epochs=12, progress=False, tensorboard=False, log_every=16),
                 callbacks=[LambdaCallback(on_step_end=lambda trainer, out: losses.append(
                     (float(out["loss_box_reg"]), float(out["loss_classifier"]))))])
    first, last = torch.tensor(losses[:16]).mean(0), torch.tensor(losses[-16:]).mean(0)
    assert (last < 0.5 * first).all(), (first, last)  # both terms of the loss dict fall
    assert result.metrics["val/mean_iou"] > 0.6 > before["mean_iou"] + 0.5, (before, result.metrics)  # 0.71, 0.0004
    assert result.metrics["val/recall@0.5"] > 0.75  # 0.88


def test_detection_contract_errors_are_clear():
    task = DetectionTask(ToyDetector(), opt_cfg())
    images, targets = squares(4, seed=3)
    with pytest.raises(ConfigError, match="loss_weights"):
        DetectionTask(ToyDetector(), opt_cfg(), loss_weights={"loss_mask": 1.0}).training_step(
            task.model.train(), (images, targets), None)
    with pytest.raises(ConfigError, match="dict of scalar losses"):
        task.training_step(lambda x, t: torch.tensor(1.0), (images, targets), None)
    with pytest.raises(ConfigError, match="list of 4 dicts"):
        BoxRecallIoU().update([{"boxes": torch.zeros(1, 4)}], targets)
    with pytest.raises(ConfigError, match="missing"):
        BoxRecallIoU().update([{"boxes": torch.zeros(1, 4)}] * 4, targets)


def test_a_model_without_targets_in_its_forward_is_refused_before_training():
    from torch import nn

    from dlkit.errors import ConfigError
    from dlkit.tasks.detection import DetectionTask

    with pytest.raises(ConfigError, match=r"model\(images, targets\).*Linear.forward takes \(input\)"):
        DetectionTask(nn.Linear(2, 2), None)

    class Detector(nn.Module):
        def forward(self, images, targets=None):
            return {}

    assert DetectionTask(Detector(), None).model is not None
