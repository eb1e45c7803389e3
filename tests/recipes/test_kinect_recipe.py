"""The kinect-bodyparts-synthetic recipe (Notes: 002 §5.1.1): its pixel sampling, and its report in smoke mode."""

import json

import numpy as np

from dlkit.recipes import run_recipe
from dlkit.recipes.kinect import body_pixels


def test_body_pixels_samples_only_body_pixels_at_most_per_image():
    labels = np.zeros((3, 6, 5), np.int64)
    labels[0, 1:4, 1:3] = 2          # 6 body pixels
    labels[2, 5, 4] = 1              # 1 body pixel; image 1 is empty
    rng = np.random.default_rng(0)
    every = body_pixels(labels, None, rng)
    assert len(every) == 7 and (labels[every[:, 0], every[:, 1], every[:, 2]] > 0).all()
    some = body_pixels(labels, 4, rng)
    assert np.bincount(some[:, 0], minlength=3).tolist() == [4, 0, 1]
    assert len(np.unique(some, axis=0)) == 5 and (labels[some[:, 0], some[:, 1], some[:, 2]] > 0).all()


def test_smoke_run_reports_both_forests_and_draws_the_predicted_parts(tmp_path):
    summary = run_recipe("kinect-bodyparts-synthetic", smoke=True, out=tmp_path)
    m = summary["metrics"]
    assert summary["metric"] == "test/pixel_accuracy" and summary["value"] == m["test/pixel_accuracy"]
    for key in ("test/pixel_accuracy", "test/sklearn_pixel_accuracy", "test/mean_part_accuracy"):
        assert 0.3 < m[key] <= 1.0  # 10 parts: far above chance even on 20 small training images
    assert m["test/joint_error_m"] < 0.5 and m["train/pixel_accuracy"] >= m["test/pixel_accuracy"]
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"]["steps"] == 2
    assert (tmp_path / "figures" / "predicted_parts.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "part_accuracy.png").stat().st_size > 1000
