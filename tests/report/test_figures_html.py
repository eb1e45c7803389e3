import csv
import json

import numpy as np
from PIL import Image

from dlkit.report.figures import plot_confusion_matrix, plot_curves, plot_image_grid, read_metrics
from dlkit.report.html import build_report


def _write_metrics(path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "epoch", "wall_time", "name", "value"])
        for s in range(1, 6):
            w.writerow([s, 0, 0.1 * s, "train/loss", 1.0 / s])
            w.writerow([s, 0, 0.1 * s, "train/accuracy", 0.1 * s])
        w.writerow([5, 0, 0.5, "val/loss", 0.3])


def test_curves_group_splits_by_metric(tmp_path):
    _write_metrics(tmp_path / "metrics.csv")
    series = read_metrics(tmp_path / "metrics.csv")
    np.testing.assert_allclose(series["train/loss"][1], [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    paths = plot_curves(tmp_path / "metrics.csv", tmp_path / "figures")
    assert sorted(p.name for p in paths) == ["curve_accuracy.png", "curve_loss.png"]
    assert Image.open(paths[0]).size[0] > 100


def test_report_embeds_figures_and_result(tmp_path):
    (tmp_path / "figures").mkdir()
    plot_confusion_matrix(np.array([[5, 1], [0, 4]]), ["a", "b"], tmp_path / "figures" / "confusion_matrix.png")
    plot_image_grid(np.random.rand(3, 1, 8, 8), tmp_path / "figures" / "samples.png", titles=["x", "y", "z"],
                    correct=[True, False, True])
    (tmp_path / "summary.json").write_text(json.dumps({"recipe": "toy", "metric": "test/accuracy", "value": 0.9,
                                                       "threshold": 0.8, "passed": True, "metrics": {"a": 1.0}}))
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.1}))
    page = build_report(tmp_path).read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "reached" in page and "test/accuracy" in page and "lr" in page
