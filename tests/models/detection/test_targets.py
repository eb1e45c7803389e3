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


@pytest.mark.parametrize("name", [*DETECTORS, "ssd_tiny", "maskformer_tiny", "mask2former_tiny"])
def test_every_detector_refuses_images_it_would_misread_in_one_line(name):
    model = dlkit.create_model(name)
    shown = {"maskrcnn_tiny": "Mask R-CNN", "panoptic_fpn_tiny": "Panoptic FPN"}.get(name)
    images = torch.rand(1, model.in_chans, 64, 64)
    target = [_target([4.0, 4.0, 30.0, 30.0])]
    for training in (True, False) if "former" not in name else (False,):  # MaskFormers: targets of masks
        model.train(training)
        call = (lambda x: model(x, target[:len(x)])) if training else model
        with pytest.raises(ConfigError, match=r"expects float images in \[0, 1\]; got torch.uint8.*/ 255"):
            call((images * 255).to(torch.uint8))  # read_image's uint8 0..255 scored as if in [0, 1]: wrong boxes
        with pytest.raises(ConfigError, match=r"weights are torch.float32 and the images torch.float64"):
            call(images.double())
        with pytest.raises(ConfigError, match=r"at least one image|got a list of \[\]"):
            call([])
        if shown:
            with pytest.raises(ConfigError, match=shown):
                call(images.double())


@pytest.mark.parametrize("name", ["retinanet_tiny", "efficientdet_tiny", "fasterrcnn_tiny"])
def test_float_labels_are_refused_in_one_line(name):
    model = dlkit.create_model(name).train()
    target = _target([4.0, 4.0, 30.0, 30.0])
    with pytest.raises(ConfigError, match=r"target 0: labels must be integer class ids in 1\.\.\d+; got torch.float32"):
        model(torch.rand(1, model.in_chans, 64, 64), [{**target, "labels": torch.tensor([1.0])}])
