import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dlkit.errors import ConfigError
from dlkit.report.detection_figures import (
    CURVE_COLOUR,
    GT_COLOUR,
    PRED_COLOUR,
    detection_figures,
    plot_detections,
    plot_pr_curves,
    plot_proposals,
)

GREY = 0.5


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB")).astype(int)


def _panel(png: np.ndarray):
    """The rectangle of the PNG showing the uniform grey image: (top, left, bottom, right) pixel rows/cols."""
    grey = (np.abs(png - round(GREY * 255)) <= 1).all(-1)
    rows, cols = np.flatnonzero(grey.sum(1) > 20), np.flatnonzero(grey.sum(0) > 20)
    return rows[0], cols[0], rows[-1] + 1, cols[-1] + 1


def _near(png, y, x, colour, r=2) -> bool:
    """Some pixel within r of (y, x) has `colour` (to antialiasing)."""
    want = np.round(np.asarray(colour) * 255)
    patch = png[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
    return bool((np.abs(patch - want) <= 40).all(-1).any())


def test_boxes_are_drawn_in_their_colours_at_their_edges(tmp_path):
    h, w = 100, 160
    image = torch.full((3, h, w), GREY)
    gt = {"boxes": torch.tensor([[20.0, 30, 80, 90]]), "labels": torch.tensor([1])}
    pred = {"boxes": torch.tensor([[100.0, 10, 150, 40], [10.0, 5, 60, 20]]), "scores": torch.tensor([0.9, 0.2]),
            "labels": torch.tensor([1, 1])}
    path = plot_detections([image], [gt], [pred], tmp_path / "det.png", class_names=["cat"], score_threshold=0.5)
    png = _png(path)
    top, left, bottom, right = _panel(png)
    sx, sy = (right - left) / w, (bottom - top) / h
    assert abs(sx - sy) < 0.02 * sx  # the image is shown with square pixels

    def at(x, y):
        return int(round(top + y * sy)), int(round(left + x * sx))

    for x, y in ((20, 60), (80, 60), (50, 30), (50, 90)):  # middles of the ground truth's four edges
        assert _near(png, *at(x, y), GT_COLOUR) and not _near(png, *at(x, y), PRED_COLOUR)
    for x, y in ((100, 25), (150, 25), (125, 40)):  # the confident prediction's left, right and bottom edges
        assert _near(png, *at(x, y), PRED_COLOUR) and not _near(png, *at(x, y), GT_COLOUR)
    assert not _near(png, *at(35, 20), PRED_COLOUR)  # the box scored 0.2 is not drawn
    assert not _near(png, *at(50, 60), GT_COLOUR) and not _near(png, *at(50, 60), PRED_COLOUR)  # inside: grey


def test_pr_curves_draw_one_panel_per_class(tmp_path):
    from matplotlib.colors import to_rgb

    curves = {"a": (np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 0.67])), "b": (np.array([0.25]), np.array([1.0]))}
    png = _png(plot_pr_curves(curves, tmp_path / "pr.png", ap={"a": 0.83, "b": 0.25}))
    blue = (np.abs(png - np.round(np.asarray(to_rgb(CURVE_COLOUR)) * 255)) <= 30).all(-1)
    cols = np.flatnonzero(blue.any(0))
    half = png.shape[1] // 2
    assert (cols < half).any() and (cols >= half).any()  # a curve in each of the two panels
    with pytest.raises(ConfigError, match="recall and precision"):
        plot_pr_curves({"a": ([0.1, 0.2], [1.0])}, tmp_path / "bad.png")


class _FixedDetector(nn.Module):
    """Predicts each ground-truth box of the first image shifted by `shift` pixels, plus one false positive."""

    def __init__(self, boxes):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.boxes = boxes

    def forward(self, images, targets=None):
        out = []
        for _ in images:
            b = torch.cat([self.boxes, torch.tensor([[0.0, 0, 5, 5]])])
            out.append({"boxes": b, "scores": torch.tensor([0.9, 0.8, 0.95]), "labels": torch.tensor([1, 2, 1])})
        return out


def test_detection_figures_write_both_pictures_and_restore_the_mode(tmp_path):
    boxes = torch.tensor([[10.0, 10, 30, 30], [40, 40, 60, 60]])
    model = _FixedDetector(boxes).train()
    target = {"boxes": boxes, "labels": torch.tensor([1, 2])}
    data = [(torch.full((2, 3, 64, 64), GREY), [target, target])]
    paths = detection_figures(model, data, tmp_path, class_names=["circle", "square"])
    assert [p.name for p in paths] == ["detections.png", "pr_curves.png"] and model.training
    for p in paths:
        assert _png(p).shape[0] > 100


def test_detection_task_figures_land_in_the_run_folder(tmp_path):
    from dlkit.tasks.detection import DetectionTask

    boxes = torch.tensor([[10.0, 10, 30, 30], [40, 40, 60, 60]])
    model = _FixedDetector(boxes)
    data = [(torch.full((1, 3, 64, 64), GREY), [{"boxes": boxes, "labels": torch.tensor([1, 2])}])]
    paths = DetectionTask(model, None, class_names=["circle", "square"]).figures(tmp_path, model, data)
    assert paths == [tmp_path / "figures" / "detections.png", tmp_path / "figures" / "pr_curves.png"]
    assert all(p.is_file() for p in paths)


class _TwoStage(_FixedDetector):
    """A detector with region proposals: the ground truth's boxes, widened by 4 pixels on each side."""

    def proposals(self, images):
        self.calls = getattr(self, "calls", 0) + len(images)
        return [self.boxes + torch.tensor([-4.0, -4, 4, 4]) for _ in images]


def test_a_two_stage_detector_also_gets_its_proposals_drawn(tmp_path):
    boxes = torch.tensor([[10.0, 10, 30, 30], [40, 40, 60, 60]])
    model = _TwoStage(boxes)
    target = {"boxes": boxes, "labels": torch.tensor([1, 2])}
    data = [(torch.full((3, 3, 64, 64), GREY), [target] * 3)]
    paths = detection_figures(model, data, tmp_path, class_names=["circle", "square"], n_images=2)
    assert [p.name for p in paths] == ["detections.png", "proposals.png", "pr_curves.png"] and model.calls == 2


def test_proposals_are_drawn_where_they_are(tmp_path):
    h, w = 100, 160
    proposals = torch.tensor([[100.0, 10, 150, 40], [10.0, 50, 60, 90]])
    png = _png(plot_proposals([torch.full((3, h, w), GREY)], [proposals], tmp_path / "p.png", top=1))
    top, left, bottom, right = _panel(png)
    sx, sy = (right - left) / w, (bottom - top) / h

    def coloured(x, y):  # not grey: some box edge passes within 2 pixels
        y, x = int(round(top + y * sy)), int(round(left + x * sx))
        return bool((np.abs(png[y - 2:y + 3, x - 2:x + 3] - round(GREY * 255)) > 40).any())

    assert coloured(100, 25) and coloured(150, 25) and coloured(125, 40)  # the first proposal's edges
    assert not coloured(10, 70) and not coloured(35, 90)  # the second is not among the top 1
    with pytest.raises(ConfigError, match="one proposal set"):
        plot_proposals([torch.zeros(3, 8, 8)], [], tmp_path / "bad.png")


def test_a_float_image_lifted_above_one_by_rounding_is_shown_as_is_and_uint8_is_scaled():
    from dlkit.report.detection_figures import _image_hwc

    image = torch.full((3, 8, 8), 0.5)
    image[0, 0, 0] = 1.0000001  # what letterboxing a photo produced: once read as uint8, the panel was black
    shown = _image_hwc(image)
    assert shown.shape == (8, 8, 3) and shown.max() == 1.0 and abs(float(shown.mean()) - 0.5) < 1e-2
    assert _image_hwc(torch.full((1, 4, 4), 255, dtype=torch.uint8)).tolist() == [[1.0] * 4] * 4
