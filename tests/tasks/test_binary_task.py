"""The binary classification task (Notes: 003 §2.2.1.1): sigmoid + binary cross-entropy against torch's and
sklearn's, trained through the Trainer on XOR."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss
from torch import nn

from dlkit.data.loader import TensorLoader
from dlkit.engine.trainer import TrainerConfig, fit
from dlkit.errors import ConfigError
from dlkit.tasks.binary import BinaryClassificationTask


def _sgd(lr=0.5, momentum=0.9):
    from types import SimpleNamespace

    return SimpleNamespace(optimizer="sgd", lr=lr, weight_decay=0.0, momentum=momentum, fused=False,
                           schedule="none", warmup_steps=-1)


def test_evaluate_equals_sklearn_log_loss_and_accuracy_over_the_whole_set():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    task = BinaryClassificationTask(model, _sgd())
    with torch.no_grad():
        m = task.evaluate(model, TensorLoader(x, y, batch_size=7, shuffle=False))
        p = torch.sigmoid(model(x)).squeeze(1).double().numpy()
    assert m["loss"] == pytest.approx(log_loss(y.numpy(), p, labels=[0, 1]), rel=1e-5)
    assert m["accuracy"] == pytest.approx(accuracy_score(y.numpy(), p > 0.5))


def test_training_step_is_torchs_bce_with_logits_and_refuses_several_outputs():
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    task = BinaryClassificationTask(model, _sgd())
    loss = task.training_step(model, (x, y), None)["loss"]
    p = torch.sigmoid(model(x).squeeze(1))
    expected = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ConfigError, match="one logit per sample"):
        task.training_step(nn.Linear(2, 2), (x, y), None)


def test_a_2_4_1_mlp_learns_xor_through_the_trainer_and_draws_its_regions(tmp_path):
    torch.manual_seed(0)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1, 0])
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    task = BinaryClassificationTask(model, _sgd())
    data = TensorLoader(x, y, batch_size=4, shuffle=False)
    config = TrainerConfig(epochs=300, eval_every_epochs=None, progress=False, tensorboard=False,
                           checkpoint_every_minutes=None)
    result = fit(task, data, data, config)
    assert result.metrics["val/accuracy"] == 1.0 and result.steps == 300
    paths = task.figures(tmp_path, result.model, data)
    assert [p.name for p in paths] == ["decision_regions.png"] and paths[0].stat().st_size > 5000
    assert np.array_equal((result.model(x).squeeze(1) > 0).long().numpy(), y.numpy())


def test_a_monitor_the_task_declares_it_never_logs_is_refused_before_any_step():
    torch.manual_seed(0)
    x, y = torch.randn(32, 2), torch.randint(0, 2, (32,))
    data = TensorLoader(x, y, batch_size=8, shuffle=False)
    task = BinaryClassificationTask(nn.Linear(2, 1), _sgd())
    before = [p.detach().clone() for p in task.model.parameters()]
    cfg = TrainerConfig(epochs=1, progress=False, early_stopping_patience=2, monitor="val/auc")
    with pytest.raises(ConfigError, match=r"early stopping watches 'val/auc'.*it logs val/accuracy, val/loss"):
        fit(task, data, data, cfg)
    assert all(torch.equal(a, b) for a, b in zip(before, task.model.parameters()))  # refused before training
    ok = fit(task, data, data, TrainerConfig(epochs=1, progress=False, early_stopping_patience=2,
                                             monitor="val/accuracy"))
    assert set(ok.metrics) == {"val/loss", "val/accuracy"}
