"""Multi-scale sliding windows (Notes: 002 §4.2.2, §4.3.1; 003 §6): window counts and coordinates by hand."""

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.ops import sliding_windows, window_count, window_scales


def test_one_size_by_hand():
    # 10 x 12 image (H x W), 4 x 4 windows, stride 3: x in {0, 3, 6} ((12 - 4) // 3 + 1 = 3), y in {0, 3, 6}
    boxes = sliding_windows((10, 12), [4], stride=3)
    expected = [[x, y, x + 4, y + 4] for y in (0, 3, 6) for x in (0, 3, 6)]
    assert boxes.dtype == torch.float32 and boxes.tolist() == expected
    assert window_count((10, 12), (4, 4), 3) == 9


def test_aspect_ratio_is_height_over_width_and_strides_per_size():
    # size 4, ratio 4: h = round(4 * 2) = 8, w = round(4 / 2) = 2; stride 3: y in {0} ((10 - 8) // 3 + 1 = 1),
    # x in {0, 3, 6, 9}; then size 6 (ratio 1) with its own stride 5: y in {0}, x in {0, 5}
    boxes = sliding_windows((10, 12), [4, 6], aspect_ratios=[4.0], stride=[3, 5])
    assert boxes.tolist() == [[0, 0, 2, 8], [3, 0, 5, 8], [6, 0, 8, 8], [9, 0, 11, 8]]
    boxes = sliding_windows((10, 12), [4, 6], aspect_ratios=[1.0, 4.0], stride=[3, 5])
    sizes = (boxes[:, 2:] - boxes[:, :2]).tolist()
    assert sizes == [[4, 4]] * 9 + [[2, 8]] * 4 + [[6, 6]] * 2  # size 6 at ratio 4 (3 x 12) does not fit


def test_window_count_formula_matches_the_windows():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        hh, ww = torch.randint(1, 60, (2,), generator=g).tolist()
        side, stride = torch.randint(1, 30, (2,), generator=g).tolist()
        boxes = sliding_windows((hh, ww), [side], stride=stride)
        assert len(boxes) == window_count((hh, ww), (side, side), stride)
        if len(boxes):
            assert boxes[:, 2].max() <= ww and boxes[:, 3].max() <= hh and boxes.min() >= 0
    # the notes' formula when the stride divides: ((W - w) / s + 1)((H - h) / s + 1) = (32/4 + 1)(16/4 + 1)
    assert len(sliding_windows((40, 56), [24], stride=4)) == 9 * 5


def test_window_scales_as_viola_jones():
    # base 24, factor 1.25, up to 50 pixels: sides round(24 * 1.25^i) = 24, 30, 38 (37.5 rounds to even), 47
    sides = [round(24 * s) for s in window_scales(24, 1.25, 24, 50)]
    assert sides == [24, 30, 38, 47]
    assert [round(24 * s) for s in window_scales(24, 2.0, 10, 100)] == [24, 48, 96]  # never below the base


def test_refuses_bad_arguments():
    with pytest.raises(ConfigError, match="positive"):
        sliding_windows((10, 10), [0])
    with pytest.raises(ConfigError, match="stride"):
        sliding_windows((10, 10), [4, 5], stride=[2])
    with pytest.raises(ConfigError, match="scale_factor"):
        list(window_scales(24, 1.0, 24, 100))
    assert sliding_windows((3, 3), [4]).shape == (0, 4)
