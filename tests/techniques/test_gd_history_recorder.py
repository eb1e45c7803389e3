"""Gradient descent through the Trainer (Notes: 002 §1.1): the history a GDHistoryRecorder fills equals the hand-written
`gradient_descent` loop's on the same full-batch problem."""

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from dlkit.data.loader import TensorLoader
from dlkit.engine.trainer import TrainerConfig, fit
from dlkit.tasks.classification import ClassificationTask
from dlkit.techniques.gradient_descent import GDHistory, GDHistoryRecorder, gradient_descent


def test_full_batch_descent_through_the_trainer_records_the_hand_loops_losses():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 5, generator=g), torch.randint(0, 3, (60,), generator=g)
    torch.manual_seed(1)
    ref_model = torch.nn.Linear(5, 3)
    model = torch.nn.Linear(5, 3)
    model.load_state_dict(ref_model.state_dict())
    ref = gradient_descent(ref_model, F.cross_entropy, x, y, batch_size=60, lr=0.3, epochs=6)
    sgd = SimpleNamespace(optimizer="sgd", lr=0.3, weight_decay=0.0, momentum=0.0, fused=False, schedule="none",
                          warmup_steps=-1)
    task = ClassificationTask(model, sgd)
    whole = TensorLoader(x, y, batch_size=60, shuffle=False)
    hist = GDHistory(batch_size=60, mode="full-batch", loss=[task.evaluate(model, whole)["loss"]], time=[0.0])
    config = TrainerConfig(epochs=6, progress=False, tensorboard=False, checkpoint_every_minutes=None)
    fit(task, TensorLoader(x, y, batch_size=60, shuffle=True), whole, config, [GDHistoryRecorder(hist)])
    assert hist.steps == ref.steps == 6 and len(hist.loss) == len(hist.time) == 7
    torch.testing.assert_close(torch.tensor(hist.loss), torch.tensor(ref.loss), rtol=1e-5, atol=1e-6)
    assert all(b >= a for a, b in zip(hist.time, hist.time[1:]))  # cumulative seconds of updates
    torch.testing.assert_close(model.weight, ref_model.weight, rtol=1e-5, atol=1e-6)
