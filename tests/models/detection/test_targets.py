"""The detection contract's training targets, checked once for every detector (`models/detection/targets.py`):
a box without positive width and height would give the box regression log(0) = -inf or NaN (torchvision's
detectors refuse it likewise), so each detector refuses it in one line before any loss is computed."""

import pytest
import torch

import dlkit
from dlkit.errors import ConfigError

DETECTORS = ["centernet_tiny", "detr_tiny", "efficientdet_tiny", "fast_rcnn_tiny", "fasterrcnn_tiny", "localiser_tiny",
             "maskrcnn_tiny", "panoptic_fpn_tiny", "rcnn_tiny", "retinanet_tiny", "yolov3_small"]


def _target(box):
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 4:30, 4:30] = 1
    return {"boxes": torch.tensor([box]), "labels": torch.tensor([1]), "masks": mask,
            "semantic": torch.zeros(64, 64, dtype=torch.int64)}


@pytest.mark.parametrize("name", DETECTORS)
def test_every_detector_refuses_a_box_without_area_and_trains_on_a_valid_one(name):
    torch.manual_seed(0)
    model = dlkit.create_model(name).train()
    images = torch.rand(1, model.in_chans, 64, 64)
    losses = model(images, [_target([4.0, 4.0, 30.0, 30.0])])
    assert losses and all(torch.isfinite(v) for v in losses.values())
    for box, shown in (([10.0, 4.0, 10.0, 30.0], r"\[10.0, 4.0, 10.0, 30.0\]"),
                       ([30.0, 4.0, 10.0, 30.0], r"\[30.0, 4.0, 10.0, 30.0\]"),
                       ([float("nan"), 4.0, 30.0, 30.0], r"\[nan, 4.0, 30.0, 30.0\]")):
        with pytest.raises(ConfigError, match=rf"target 0: box 0 {shown} has no positive width and height"):
            model(images, [_target(box)])


def test_retinanet_takes_a_list_of_images_as_the_contract_allows():
    torch.manual_seed(0)
    model = dlkit.create_model("retinanet_tiny").eval()
    images = torch.rand(2, model.in_chans, 64, 64)
    with torch.no_grad():
        as_list, as_batch = model(list(images)), model(images)
    assert len(as_list) == 2 and all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(as_list, as_batch))
