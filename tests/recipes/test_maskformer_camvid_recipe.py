"""maskformer-camvid (Notes: 002 §5.3.2): the mask-classification segmentation task (targets, evaluation loss and
metrics by hand and against scikit-learn) and the recipe's U-Net comparison in smoke mode."""

import json

import pytest
import torch
from sklearn.metrics import jaccard_score
from torch import nn

from dlkit import create_model
from dlkit.data.loader import TensorLoader
from dlkit.errors import ConfigError
from dlkit.recipes import run_recipe
from dlkit.tasks.segmentation import MaskClassificationSegmentationTask


class _Recorder(nn.Module):
    """Returns fixed losses and keeps the targets it was given."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x, targets=None):
        self.targets = targets
        return {"loss_ce": self.w * 1.0, "loss_mask": self.w * 2.0, "loss_dice": self.w * 0.5}


def test_training_step_gives_one_mask_per_class_present_and_sums_the_losses():
    y = torch.tensor([[[0, 0, 2], [9, 2, 2]], [[1, 1, 1], [1, 9, 9]]], dtype=torch.uint8)  # 9 is void
    model = _Recorder()
    task = MaskClassificationSegmentationTask(model, None, list("abc"), ignore_index=9)
    out = task.training_step(model, (torch.zeros(2, 3, 2, 3), y), None)
    assert out["loss"].item() == pytest.approx(3.5) and out["loss_mask"].item() == 2.0
    first, second = model.targets
    assert first["labels"].tolist() == [1, 3] and second["labels"].tolist() == [2]
    assert first["masks"].int().tolist() == [[[1, 1, 0], [0, 0, 0]], [[0, 0, 1], [0, 1, 1]]]  # void in no mask
    assert second["masks"].int().tolist() == [[[1, 1, 1], [1, 0, 0]]]


def test_evaluation_loss_is_the_cross_entropy_of_the_normalised_scores():
    scores = torch.tensor([[[[0.2]], [[0.6]], [[0.2]]], [[[1.0]], [[0.5]], [[0.5]]]])  # [2, 3, 1, 1]
    target = torch.tensor([[[1]], [[0]]])
    task = MaskClassificationSegmentationTask(_Recorder(), None, list("abc"), ignore_index=9)
    by_hand = -(torch.log(torch.tensor(0.6 / 1.0)) + torch.log(torch.tensor(1.0 / 2.0))) / 2
    assert task.loss(scores, target).item() == pytest.approx(by_hand.item(), rel=1e-6)
    void = torch.tensor([[[1]], [[9]]])
    assert task.loss(scores, void).item() == pytest.approx(-torch.log(torch.tensor(0.6)).item(), rel=1e-6)


def test_maskformer_metrics_equal_sklearn_on_the_argmax_of_its_semantic_scores():
    torch.manual_seed(0)
    model = create_model("maskformer_tiny", num_classes=4, num_queries=6).eval()
    x = torch.rand(5, 3, 64, 64)
    y = torch.randint(0, 4, (5, 64, 64), dtype=torch.uint8)
    y[:, :3] = 9
    task = MaskClassificationSegmentationTask(model, None, list("abcd"), ignore_index=9)
    with torch.no_grad():
        m = task.evaluate(model, TensorLoader(x, y, batch_size=2, shuffle=False))
        pred = model(x).argmax(1)
    keep = y != 9
    assert m["miou"] == pytest.approx(jaccard_score(y[keep].numpy(), pred[keep].numpy(), average="macro",
                                                    labels=range(4)), abs=1e-9)


def _record(path, value, metric="test/miou"):
    path.write_text(json.dumps({"recipe": "unet-camvid", "metric": metric, "value": value, "threshold": 0.38,
                                "passed": True, "seconds": 400.0, "commit": "abc1234", "date": "2026-12-06 18:01"}))


def test_smoke_run_compares_with_the_unet_record(tmp_path, data_root):
    _record(tmp_path / "unet.json", 0.4013)
    summary = run_recipe("maskformer-camvid", smoke=True, out=tmp_path / "run", data_dir=str(data_root),
                         overrides={"compare_unet": "record", "unet_record": str(tmp_path / "unet.json")})
    assert summary["metrics"]["unet/miou"] == 0.4013 and 0 <= summary["metrics"]["test/miou"] <= 1
    assert (tmp_path / "run" / "figures" / "maskformer_vs_unet.png").stat().st_size > 5000
    spec = json.loads((tmp_path / "run" / "model.json").read_text())
    assert spec["name"] == "maskformer_tiny" and spec["kwargs"]["num_classes"] == 11
    assert spec["kwargs"]["image_mean"] == [0.0] * 3 and spec["kwargs"]["num_queries"] == 20


def test_a_missing_record_leaves_the_run_without_comparison(tmp_path, data_root, capsys):
    summary = run_recipe("maskformer-camvid", smoke=True, out=tmp_path / "run", data_dir=str(data_root),
                         overrides={"compare_unet": "record", "unet_record": str(tmp_path / "none.json")})
    assert "unet/miou" not in summary["metrics"] and "no U-Net record" in capsys.readouterr().err


def test_train_comparison_trains_the_unet_on_the_same_data(tmp_path, data_root, monkeypatch):
    from dlkit.recipes import runner
    from dlkit.tasks.segmentation import SegmentationTask

    trained = []
    fit = runner.fit
    monkeypatch.setattr(runner, "fit", lambda task, *a, **kw: trained.append((task, a)) or fit(task, *a, **kw))
    summary = run_recipe("maskformer-camvid", smoke=True, out=tmp_path / "run", data_dir=str(data_root),
                         overrides={"compare_unet": "train"})
    assert 0 <= summary["metrics"]["unet/miou"] <= 1 and summary["metrics"]["unet/train_seconds"] > 0
    assert (tmp_path / "run" / "figures" / "maskformer_vs_unet.png").is_file()
    ((task, (train, test, _)),) = trained  # the unet-camvid model on the run's frames, scored on the test split
    assert type(task) is SegmentationTask and type(task.model).__name__ == "UNet"
    assert train.n == test.n == 8 and tuple(test.fields[0].shape[-2:]) == (48, 64)  # the smoke subset and size


@pytest.mark.parametrize("overrides, match", [({"compare_unet": "both"}, "compare_unet"),
                                              ({"class_balance": "median_frequency"}, "class_balance"),
                                              ({"dice_weight": 0.5}, "dice_weight"),
                                              ({"model": "unet_tiny"}, "mask-classification model.*maskformer_tiny")])
def test_recipe_refuses_options_that_do_not_apply(tmp_path, data_root, overrides, match):
    with pytest.raises(ConfigError, match=match):
        run_recipe("maskformer-camvid", smoke=True, out=tmp_path / "run", data_dir=str(data_root),
                   overrides=overrides)
