"""The viola-jones-faces recipe (Notes: 002 §4.2): its data pieces, and its per-stage report in smoke mode."""

import json
import os
from pathlib import Path

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.models.detection.viola_jones import Stage, Stump, ViolaJones, haar_features
from dlkit.recipes import run_recipe
from dlkit.recipes.viola_jones import crop_windows, face_patches, face_split, mine_negatives


def test_face_patches_crop_the_face_square_and_augment_with_shifts_and_mirrors():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 1, 28, 23), generator=g, dtype=torch.uint8)
    plain = face_patches(images)
    assert plain.shape == (3, 24, 24)
    aug = face_patches(images, augment=True)
    assert aug.shape == (30, 24, 24)
    torch.testing.assert_close(aug[:3], plain)
    torch.testing.assert_close(aug[15:], aug[:15].flip(-1))


def test_face_split_by_photos_and_by_people_is_a_partition():
    labels = torch.arange(40).repeat_interleave(10)
    for split, test_people in (("photos", 40), ("people", 10)):
        train, val, test = face_split(labels, split)
        assert bool((train.long() + val.long() + test.long() == 1).all())
        assert len(labels[test].unique()) == test_people
    with pytest.raises(ConfigError, match="photos"):
        face_split(labels, "random")


def test_crop_windows_of_twice_the_window_average_2x2_pixel_blocks():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(100, 120, generator=g) * 255
    got = crop_windows([img], [torch.tensor([[10.0, 20.0, 58.0, 68.0]])])  # x1, y1, x2, y2: a 48 x 48 window
    want = img[20:68, 10:58].reshape(24, 2, 24, 2).mean((1, 3))
    torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-3)


def test_mined_negatives_are_windows_the_cascade_accepts():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(60, 80, generator=g) * 255, torch.rand(70, 50, generator=g) * 255]
    feats = haar_features()
    cascade = ViolaJones(feats, [Stage([Stump(0, 0.0, 1, alpha=1.0), Stump(5000, 0.0, -1, alpha=0.5)], 0.0)])
    neg = mine_negatives(images, 1.25, 1.5)(cascade, 50, g)
    assert 0 < len(neg) <= 50
    assert bool((cascade.passed_stages(neg) == 1).all())


@pytest.mark.data
def test_smoke_run_reports_rates_per_stage_and_draws_the_first_features(tmp_path):
    root = os.environ.get("DLKIT_DATA")
    if not root or not (Path(root) / "att_faces").is_dir():
        pytest.skip("needs the ORL faces (att_faces) under DLKIT_DATA")
    summary = run_recipe("viola-jones-faces", smoke=True, out=tmp_path)
    stages = json.loads((tmp_path / "cascade_stages.json").read_text())["stages"]
    assert len(stages) >= 1
    det = [row["test_detection_rate"] for row in stages]
    fpr = [row["test_false_positive_rate"] for row in stages]
    assert det == sorted(det, reverse=True) and fpr == sorted(fpr, reverse=True)  # a cascade only rejects more
    assert summary["metrics"]["test/detection_rate"] == det[-1]
    assert summary["metrics"]["test/false_positive_rate"] == fpr[-1] < 1
    assert (tmp_path / "figures" / "first_features_on_face.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "rates_per_stage.png").stat().st_size > 1000
