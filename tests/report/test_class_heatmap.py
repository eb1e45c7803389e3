"""Class heat-map overlay (Notes: 003 §4.1.1): the written PNG is red where a hand-made score map is high and blue
elsewhere, at the image's resolution; a convolutionalised classifier's score map feeds it directly."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.image import imread
from torch import nn

from dlkit.errors import ConfigError
from dlkit.report.class_heatmap import class_heatmap, plot_class_heatmap
from dlkit.techniques.transfer import fully_convolutional


def test_hot_region_of_the_png_is_where_the_score_map_is_high(tmp_path):
    scores = torch.zeros(3, 4, 6)
    scores[1, :2, 3:] = 8.0  # class 1 sure in the top-right quarter, elsewhere the 3 classes tie
    image = torch.full((3, 64, 96), 0.5)
    image[:, ::2] = 0.4  # some texture (the overlay rescales the image to 0..1)
    path = plot_class_heatmap(image, scores, 1, tmp_path / "figs" / "heat.png")
    png = imread(path)[..., :3]
    assert png.shape == (64, 96, 3)
    hot, cold = png[4:28, 52:92], png[36:60, 4:44]  # inside the top-right / bottom-left quarters
    assert hot[..., 0].mean() > cold[..., 0].mean() + 0.25  # red where p(class 1) ~ 1
    assert cold[..., 2].mean() > hot[..., 2].mean() + 0.25  # blue where p(class 1) = 1/3


def test_heatmap_is_the_softmax_probability_upsampled_bilinearly():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 3, 5, generator=g)
    heat = class_heatmap(scores, 2, (12, 20))
    want = F.interpolate(scores.softmax(0)[None, 2:3], size=(12, 20), mode="bilinear")[0, 0]
    torch.testing.assert_close(heat, want)
    raw = class_heatmap(scores, 2, (3, 5), softmax=False)
    assert raw.min() == 0 and raw.max() == 1


def test_convolutionalised_classifier_scores_on_a_larger_image(tmp_path):
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 5))
    fcn = fully_convolutional(clf, (3, 16, 16))
    image = torch.rand(3, 48, 64)
    scores = fcn(image[None])[0]
    assert scores.shape == (5, 9, 13)  # (48 / 4 - 4 + 1, 64 / 4 - 4 + 1) windows
    path = plot_class_heatmap(image, scores.detach(), 3, tmp_path / "clf.png")
    assert imread(path).shape[:2] == (48, 64)


def test_bad_input_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="score map"):
        class_heatmap(torch.zeros(1, 3, 4, 4), 0, (8, 8))
    with pytest.raises(ConfigError, match="class_index"):
        class_heatmap(torch.zeros(3, 4, 4), 3, (8, 8))
    with pytest.raises(ConfigError, match="heat map's size"):
        plot_class_heatmap(np.zeros((5, 8, 8)), torch.zeros(3, 4, 4), 0, tmp_path / "x.png")
