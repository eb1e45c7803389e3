"""The kmeans-camvid recipe (Notes: 003 §4): a smoke run on CamVid writes its matched mIoU, the cluster-to-class map
and the figure; the mIoU it reports is recomputed from the figure's ingredients (the matched confusion)."""

import json
import os
from pathlib import Path

import pytest

from dlkit.data.camvid import CAMVID_CLASSES
from dlkit.recipes import get_recipe, run_recipe


def test_recipe_is_registered_as_a_study_with_its_metric():
    recipe = get_recipe("kmeans-camvid")
    assert recipe.study and recipe.metric == "test/miou" and recipe.datasets == ("camvid",)


@pytest.mark.data
def test_smoke_run_reports_miou_and_the_matching(tmp_path):
    root = os.environ.get("DLKIT_DATA")
    if not root or not (Path(root) / "camvid").is_dir():
        pytest.skip("needs CamVid under DLKIT_DATA")
    summary = run_recipe("kmeans-camvid", smoke=True, out=tmp_path)
    metrics = summary["metrics"]
    assert 0.02 < metrics["test/miou"] < 1
    ious = [metrics[f"test/iou_{c}"] for c in CAMVID_CLASSES]
    present = [v for v in ious if v == v]
    assert metrics["test/miou"] == pytest.approx(sum(present) / len(present))
    mapping = json.loads((tmp_path / "cluster_to_class.json").read_text())
    assert sorted(mapping.values()) == sorted(CAMVID_CLASSES)  # k = C: one-to-one onto the classes
    assert (tmp_path / "figures" / "kmeans_segmentations.png").stat().st_size > 1000
