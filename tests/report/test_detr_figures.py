"""DETR's attention figure (Notes: 002 §4.3.6 remark): the map is drawn where its grid cells lie on the image, and a
DETR's detection run writes it next to the standard detection figures."""

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.report.detr_figures import ATTENTION_ALPHA, ATTENTION_CMAP, detr_attention_figures, plot_query_attention

GREY = 0.5


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB")).astype(float)


def _blend(value: float) -> np.ndarray:
    """The colour of a map value (0..1) laid over the grey image."""
    rgb = np.asarray(colormaps[ATTENTION_CMAP](value)[:3]) * 255
    return ATTENTION_ALPHA * rgb + (1 - ATTENTION_ALPHA) * GREY * 255


def test_the_attention_of_a_cell_is_drawn_over_that_cell(tmp_path):
    image = torch.full((3, 64, 64), GREY)
    attention = torch.zeros(1, 2, 2)
    attention[0, 0, 1] = 1.0  # all on the top-right cell of the 2 x 2 grid (stride 32)
    path = plot_query_attention([image], [attention], [torch.tensor([[2.0, 2, 6, 6]])], [["query 0"]],
                                tmp_path / "att.png")
    png = _png(path)
    hot = (np.abs(png - _blend(1.0)) <= 12).all(-1)
    cold = (np.abs(png - _blend(0.0)) <= 12).all(-1)
    ys, xs = np.nonzero(hot)
    yc, xc = np.nonzero(cold)
    assert hot.sum() > 200 and cold.sum() > 3 * hot.sum() * 0.9  # one hot cell, three cold ones
    assert xs.min() > xc.min() and abs(xs.max() - xc.max()) <= 2  # hot: right half of the panel
    assert abs(ys.min() - yc.min()) <= 2 and ys.max() < yc.max()  # top half
    assert xs.min() > png.shape[1] / 2  # in the query panel (second column), not the first
    with pytest.raises(ConfigError, match="one each per query"):
        plot_query_attention([image], [attention], [torch.zeros(2, 4)], [["a"]], tmp_path / "bad.png")


def _small_detr():
    torch.manual_seed(0)
    return create_model("detr_tiny", num_classes=2, d_model=32, num_heads=4, dim_feedforward=64, num_queries=5)


def test_detr_attention_figures_and_the_task_hook(tmp_path):
    from dlkit.tasks.detection import DetectionTask

    model = _small_detr().train()
    target = {"boxes": torch.tensor([[8.0, 8, 40, 40]]), "labels": torch.tensor([1])}
    data = [(torch.rand(2, 3, 64, 64), [target, target]), (torch.rand(2, 3, 64, 64), [target, target])]
    paths = detr_attention_figures(model, data, tmp_path, class_names=["a", "b"], n_images=3, top_k=2)
    assert [p.name for p in paths] == ["detr_attention.png"] and model.training  # mode restored
    assert _png(paths[0]).shape[0] > 3 * 150  # three rows of panels
    paths = DetectionTask(model, None, class_names=["a", "b"]).figures(tmp_path / "run", model, data[:1])
    assert [p.name for p in paths] == ["detections.png", "pr_curves.png", "detr_attention.png"]
    assert all(p.is_file() for p in paths)
