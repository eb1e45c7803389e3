"""Panoptic figures (Notes: 002 §5.3): the PNG is written and segments are told apart by colour."""

import numpy as np
import pytest
import torch
from PIL import Image

from dlkit.errors import ConfigError
from dlkit.report.panoptic_figures import VOID_COLOUR, panoptic_rgb, plot_panoptic, segment_colours

# 6 x 8: sky (category 0, stuff) on the top rows, two cars (category 1) side by side, a person (2), void at (5, 7)
IDS = torch.tensor([[1] * 8] * 3 + [[2, 2, 2, 3, 3, 3, 4, 4]] * 3)
IDS[5, 7] = 0
SEGS = [{"id": 1, "category": 0}, {"id": 2, "category": 1}, {"id": 3, "category": 1}, {"id": 4, "category": 2}]


def test_every_segment_gets_its_own_colour_and_void_is_black():
    rgb = panoptic_rgb(IDS, SEGS)
    assert rgb.shape == (6, 8, 3)
    pixel = {sid: tuple(rgb[tuple((IDS == sid).nonzero()[0].tolist())]) for sid in (1, 2, 3, 4)}
    assert len(set(pixel.values())) == 4  # the two cars too differ
    assert tuple(rgb[5, 7]) == VOID_COLOUR
    for sid in (1, 2, 3, 4):  # each segment is uniformly its colour
        assert (rgb[IDS.numpy() == sid] == np.array(pixel[sid], dtype=np.float32)).all()
    # a category keeps its hue in another image: the first car of any image has one colour
    assert segment_colours([{"id": 9, "category": 1}])[9] == segment_colours(SEGS)[2]
    colours = segment_colours([{"id": i, "category": i % 3} for i in range(1, 40)])
    assert len(set(colours.values())) == 39


def test_plot_panoptic_writes_a_png_showing_the_segment_colours(tmp_path):
    pred = (IDS.clone(), SEGS)
    gt_ids = IDS.clone()
    gt_ids[3:, 3:6] = 2  # in the ground truth one car covers both
    path = plot_panoptic(pred, (gt_ids, SEGS[:2] + SEGS[3:]), tmp_path / "fig" / "panoptic.png",
                         category_names=["sky", "car", "person"], thing_categories=(1, 2))
    with Image.open(path) as im:
        assert im.format == "PNG"
        png = np.asarray(im.convert("RGB")).astype(int)
    rgb = panoptic_rgb(IDS, SEGS)
    for sid in (1, 2, 3, 4):  # every segment colour appears in the figure (within rounding)
        target = np.round(np.array(rgb[IDS.numpy() == sid][0]) * 255)
        assert (np.abs(png - target).max(-1) <= 2).sum() > 20


def test_bad_input_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="id_map, segments"):
        plot_panoptic(IDS, (IDS, SEGS), tmp_path / "x.png")
    with pytest.raises(ConfigError, match=r"\[H, W\]"):
        panoptic_rgb(IDS[None], SEGS)


def test_instance_masks_figure_draws_the_confident_detections_against_the_ground_truth(tmp_path, monkeypatch):
    from dlkit.report import panoptic_figures

    seen = {}
    monkeypatch.setattr(panoptic_figures, "plot_panoptic_grid",
                        lambda preds, targets, path, names, images=None: seen.update(
                            preds=preds, targets=targets, names=names) or path)
    masks = torch.zeros(2, 1, 4, 4)
    masks[0, 0, :2] = 0.9
    masks[1, 0, 2:] = 0.8  # scored 0.3: not drawn
    pred = {"masks": masks, "labels": torch.tensor([2, 1]), "scores": torch.tensor([0.9, 0.3])}
    gt_masks = torch.zeros(1, 4, 4, dtype=torch.uint8)
    gt_masks[0, 1:3] = 1
    target = {"masks": gt_masks, "labels": torch.tensor([2])}
    panoptic_figures.plot_instance_masks([torch.zeros(3, 4, 4)], [target], [pred], tmp_path / "m.png", ["a", "b"])
    (ids, segments), = seen["preds"]
    assert ids.tolist() == [[1] * 4] * 2 + [[0] * 4] * 2 and [s["category"] for s in segments] == [2]
    (gt_ids, gt_segments), = seen["targets"]
    assert gt_ids.tolist() == [[0] * 4, [1] * 4, [1] * 4, [0] * 4] and gt_segments[0]["category"] == 2
    assert seen["names"] == ["background", "a", "b"]
