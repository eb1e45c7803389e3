"""The yolov3-shapes recipe (Notes: 000 §3.12.1): anchors fitted by k-means (1 - IoU) on the training boxes, and a
run folder whose model.json rebuilds the trained network."""

import torch

from dlkit import load_run
from dlkit.data.detection_scenes import shapes_scenes
from dlkit.ops import wh_iou
from dlkit.recipes import get_recipe, make_config, run_recipe
from dlkit.recipes.yolov3 import make_yolov3, training_box_shapes


def test_anchors_are_the_k_means_centres_of_the_training_box_shapes_smallest_to_stride_8():
    scenes = shapes_scenes(12, seed=0, height=64, width=64, sizes=(8, 40))
    boxes = torch.cat([scenes[i][1]["boxes"] for i in range(12)])
    wh = training_box_shapes(scenes)
    torch.testing.assert_close(wh, boxes[:, 2:] - boxes[:, :2])
    cfg = make_config(get_recipe("yolov3-shapes"), {"image_size": 64})
    model, kwargs = make_yolov3(cfg, scenes, 5, 3)
    anchors = model.anchors.reshape(9, 2).double()
    area = anchors.prod(dim=1)
    assert torch.all(area[1:] >= area[:-1]) and model.anchors.shape == (3, 3, 2)
    # a k-means fixed point: each anchor is the mean shape of the boxes nearest to it in 1 - IoU
    nearest = (1 - wh_iou(wh.double(), anchors)).argmin(dim=1)
    for k in range(9):
        torch.testing.assert_close(anchors[k], wh.double()[nearest == k].mean(dim=0), atol=0.01, rtol=0)
    assert kwargs["anchors"] == [[round(w, 2), round(h, 2)] for w, h in anchors.tolist()]


def test_smoke_run_rebuilds_the_trained_network_from_model_json(tmp_path):
    summary = run_recipe("yolov3-shapes", smoke=True, out=tmp_path)
    assert summary["steps"] > 0 and 0 <= summary["metrics"]["test/map"] <= summary["metrics"]["test/map_50"] <= 1
    run = load_run(tmp_path)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = run.model(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}
    assert run.model.anchors.shape == (3, 3, 2)
    torch.testing.assert_close(torch.tensor(run.spec["kwargs"]["anchors"]), run.model.anchors.reshape(9, 2))
