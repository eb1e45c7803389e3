"""The depth contract (Notes: 002 §6): Eigen's metrics and the scale-invariant loss against hand values; a toy
depth network trained through the Trainer until it beats the best constant prediction."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from dlkit.data.loader import TensorLoader
from dlkit.engine.trainer import TrainerConfig, fit
from dlkit.errors import ConfigError
from dlkit.tasks.depth import DepthMetrics, DepthTask, silog_loss
from dlkit.tasks.optimization import OPTIMIZER_OPTIONS


def scenes(n: int, seed: int):
    """Images [n, 1, 16, 16] of a ground plane (depth 1-5 m from bottom to top, random tilt) with a box in front
    (1-2 m); the image is the inverse depth plus noise, and 10% of the target pixels are missing (depth 0)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.linspace(1, 0, 16)[:, None].expand(16, 16)
    depth = torch.empty(n, 1, 16, 16)
    for i in range(n):
        d = 1 + (3 + torch.rand(1, generator=g)) * rows
        x, y = (int(v) for v in torch.randint(0, 10, (2,), generator=g))
        d[y:y + 6, x:x + 6] = 1 + torch.rand(1, generator=g)
        depth[i, 0] = d
    images = 1 / depth + 0.02 * torch.randn(depth.shape, generator=g)
    depth = depth * (torch.rand(depth.shape, generator=g) > 0.1)
    return images, depth


class ToyDepthNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(16, 1, 1), nn.Softplus())

    def forward(self, x):
        return self.net(x) + 0.1


def test_depth_metrics_hand_values():
    # one image, pixels (pred, target): (2, 1), (3, 4), (5, 0 = missing)
    m = DepthMetrics()
    m.update(torch.tensor([[[[2.0, 3.0, 5.0]]]]), torch.tensor([[[[1.0, 4.0, 0.0]]]]))
    out = m.compute()
    d, t = np.array([2.0, 3.0]), np.array([1.0, 4.0])
    expected = {"abs_rel": np.mean(abs(d - t) / t), "sq_rel": np.mean((d - t) ** 2 / t),
                "rmse": math.sqrt(np.mean((d - t) ** 2)), "rmse_log": math.sqrt(np.mean(np.log(d / t) ** 2)),
                # ratios max(d/t, t/d) = 2 and 4/3 against 1.25, 1.5625 and 1.953
                "delta1": 0.0, "delta2": 0.5, "delta3": 0.5}
    assert out == pytest.approx(expected)


def test_depth_metrics_average_over_images():
    m = DepthMetrics()
    m.update(torch.tensor([[[2.0]], [[1.0]]]), torch.tensor([[[1.0]], [[1.0]]]))  # abs_rel 1 and 0
    m.update(torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[1.0, 4.0]]]))  # abs_rel (0 + 0.75) / 2
    assert m.compute()["abs_rel"] == pytest.approx((1 + 0 + 0.375) / 3)


def test_silog_hand_value():
    pred, target = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0])
    valid = torch.tensor([True, True])
    g = np.array([math.log(2), 0.0])
    assert silog_loss(pred, target, valid).item() == pytest.approx(np.mean(g**2) - 0.5 * np.mean(g) ** 2)
    assert silog_loss(2 * target, target, valid, lam=1.0).item() == pytest.approx(0.0, abs=1e-7)  # scale-invariant


def test_depth_task_trains_a_toy_network_through_the_trainer():
    images, depth = scenes(512, seed=1)
    val_images, val_depth = scenes(128, seed=2)
    task = DepthTask(ToyDepthNet(), SimpleNamespace(**{**OPTIMIZER_OPTIONS, "lr": 3e-3}))
    train = TensorLoader(images, depth, batch_size=32, seed=0)
    val = TensorLoader(val_images, val_depth, batch_size=64, shuffle=False)
    before = task.evaluate(task.model, val)
    result = fit(task, train, val, TrainerConfig(epochs=10, progress=False, tensorboard=False))
    constant = DepthMetrics()  # the best constant in L1: the median of the training depths
    median = depth[depth > 0].median()
    constant.update(torch.full_like(val_depth, median.item()), val_depth)
    baseline = constant.compute()
    # measured: loss 1.73 -> 0.12; abs_rel 0.045 against the constant's 0.45; delta1 0.97 against 0.24
    assert result.metrics["val/loss"] < 0.2 * before["loss"], (before, result.metrics)
    assert result.metrics["val/abs_rel"] < 0.25 * baseline["abs_rel"], (baseline, result.metrics)
    assert result.metrics["val/delta1"] > 0.9 > baseline["delta1"]


def test_depth_contract_errors():
    with pytest.raises(ConfigError, match="loss"):
        DepthTask(ToyDepthNet(), SimpleNamespace(**OPTIMIZER_OPTIONS), loss="berhu")
    task = DepthTask(nn.Conv2d(1, 2, 1), SimpleNamespace(**OPTIMIZER_OPTIONS))
    with pytest.raises(ConfigError, match=r"\[B, 1, H, W\]"):
        task.training_step(task.model, scenes(2, seed=0), None)
    with pytest.raises(ConfigError, match="valid"):
        task = DepthTask(ToyDepthNet(), SimpleNamespace(**OPTIMIZER_OPTIONS))
        task.training_step(task.model, (torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)), None)


def test_depth_figures_show_image_truth_and_prediction(tmp_path):
    task = DepthTask(ToyDepthNet(), SimpleNamespace(**OPTIMIZER_OPTIONS))
    paths = task.figures(tmp_path, task.model, TensorLoader(*scenes(4, seed=0), batch_size=4, shuffle=False))
    assert [p.name for p in paths] == ["depth.png"] and paths[0].stat().st_size > 0
