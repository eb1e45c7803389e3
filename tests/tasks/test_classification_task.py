"""ClassificationTask's training loss: cross-entropy of the logits, plus 0.3 x each auxiliary classifier's for a
model that returns (logits, aux...) in training, as GoogLeNet (Notes: 002 §2.1)."""

import torch
import torch.nn.functional as F
from torch import nn

from dlkit.engine.task import StepContext
from dlkit.tasks.classification import ClassificationTask


class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.main, self.aux = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x):
        return (self.main(x), self.aux(x)) if self.training else self.main(x)


def test_auxiliary_logits_add_their_cross_entropy_weighted_0_3():
    torch.manual_seed(0)
    model, x, y = _TwoHeads(), torch.randn(8, 4), torch.randint(0, 3, (8,))
    task = ClassificationTask(model, cfg=None)
    out = task.training_step(model, (x, y), StepContext(step=0, epoch=0, device=torch.device("cpu")))
    by_hand = F.cross_entropy(model.main(x), y) + 0.3 * F.cross_entropy(model.aux(x), y)
    torch.testing.assert_close(out["loss"], by_hand)
    assert out["accuracy"] == (model.main(x).argmax(1) == y).float().mean()


def test_a_task_takes_its_optimizer_options_as_a_dict_or_none():
    from dlkit.engine.task import TrainingPlan
    from dlkit.optim import SGD, Adam

    model = nn.Linear(4, 3)
    plan = TrainingPlan(total_steps=10, steps_per_epoch=10, epochs=1)
    [opt], scheds = ClassificationTask(model, {"optimizer": "sgd", "lr": 0.1}).configure_optimizers(plan)
    assert isinstance(opt, SGD) and opt.param_groups[0]["lr"] == 0.1 and scheds == []
    [opt], _ = ClassificationTask(model, None).configure_optimizers(plan)  # the defaults: Adam at 1e-3
    assert isinstance(opt, Adam) and opt.param_groups[0]["lr"] == 1e-3


def test_a_batch_that_is_not_an_inputs_targets_pair_is_named_in_one_line():
    import pytest

    from dlkit.errors import ConfigError

    task = ClassificationTask(nn.Linear(4, 3), None)
    x, y = torch.randn(2, 4), torch.tensor([0, 2])
    for batch, got in (((x,), "a tuple of 1"), ((x, y, y), "a tuple of 3"), (x, "Tensor")):
        with pytest.raises(ConfigError, match=rf"trains on batches \(inputs, targets\); the data gave {got}\."):
            task.training_step(task.model, batch, None)
    assert task.training_step(task.model, [x, y], None)["loss"].ndim == 0
