"""CamVid segmentation recipes: class balancing, the segmentation task's metrics and figures."""

import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score
from torch import nn

from dlkit.data.loader import TensorLoader
from dlkit.recipes.segmentation import median_frequency_weights
from dlkit.tasks.segmentation import SegmentationTask


def test_median_frequency_weights_by_hand():
    # image 0: 3 px of class 0, 1 px of class 1; image 1: 2 px of class 1, 1 px of class 2, 1 void (9).
    # f_0 = 3/4 (only image 0 has class 0), f_1 = 3/7 (1 + 2 of the 4 + 3 valid pixels), f_2 = 1/3;
    # median = 3/7, so w = (3/7)/(3/4), 1, (3/7)/(1/3); class 3 is never seen: weight 0.
    masks = torch.tensor([[[0, 0], [0, 1]], [[1, 1], [2, 9]]], dtype=torch.uint8)
    w = median_frequency_weights(masks, 4, ignore_index=9)
    assert torch.allclose(w, torch.tensor([4 / 7, 1.0, 9 / 7, 0.0]))


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


def test_lite0_pyramid_gives_strides_8_16_32_and_keeps_frozen_batch_norms_in_eval_mode():
    from dlkit import create_model
    from dlkit.recipes.segmentation import Lite0Pyramid

    backbone = Lite0Pyramid(create_model("efficientnet_lite0"), frozen_bn=True).train()
    maps = backbone(torch.randn(2, 3, 64, 96))
    assert {k: tuple(v.shape[1:]) for k, v in maps.items()} == {"pool3": (40, 8, 12), "pool4": (112, 4, 6),
                                                                  "pool5": (1280, 2, 3)}
    assert backbone.out_chans == {"pool3": 40, "pool4": 112, "pool5": 1280}
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and backbone.stem.training  # BN frozen, the rest trains
    assert not any(m.training for m in Lite0Pyramid(create_model("efficientnet_lite0"), False).eval().modules())
    assert all(m.training for m in Lite0Pyramid(create_model("efficientnet_lite0"), False).train().modules())
