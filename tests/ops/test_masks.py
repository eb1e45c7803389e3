"""Instance-mask helpers (Notes: 002 §5.2.1) against torchvision (masks_to_boxes, Mask R-CNN's
paste_masks_in_image), pycocotools (RLE) and hand values (the semantic map, a pasted all-ones mask)."""

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste
from torchvision.ops import masks_to_boxes as tv_masks_to_boxes

from dlkit.errors import ConfigError
from dlkit.ops.masks import masks_to_boxes, masks_to_panoptic, masks_to_rle, masks_to_semantic, paste_masks_in_image


def _blobs(k=6, h=30, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(k, h, w, generator=g) > 0.93


def test_masks_to_boxes_equals_torchvision():
    masks = _blobs()
    torch.testing.assert_close(masks_to_boxes(masks), tv_masks_to_boxes(masks))
    empty = torch.zeros(1, 5, 5, dtype=torch.uint8)
    assert masks_to_boxes(empty).tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_masks_to_rle_equals_pycocotools():
    masks = _blobs(seed=1).to(torch.uint8)
    want = coco_mask.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy()))
    got = masks_to_rle(masks)
    assert [r["counts"] for r in got] == [r["counts"].decode() for r in want]
    assert all(r["size"] == [30, 40] for r in got)


def test_semantic_map_later_or_more_confident_instance_on_top():
    masks = torch.zeros(2, 3, 4, dtype=torch.uint8)
    masks[0, :2, :3] = 1
    masks[1, 1:, 2:] = 1
    later = masks_to_semantic(masks, torch.tensor([5, 7]))
    assert later.tolist() == [[5, 5, 5, 0], [5, 5, 7, 7], [0, 0, 7, 7]]
    confident = masks_to_semantic(masks, torch.tensor([5, 7]), scores=torch.tensor([0.9, 0.2]))
    assert confident.tolist() == [[5, 5, 5, 0], [5, 5, 5, 7], [0, 0, 7, 7]]
    with pytest.raises(ConfigError, match="one label"):
        masks_to_semantic(masks, torch.tensor([5]))


def test_panoptic_map_gives_each_instance_its_segment_and_drops_hidden_ones():
    masks = torch.zeros(3, 3, 4)
    masks[0, :2, :3] = 0.9
    masks[1, 1:, 2:] = 0.8
    masks[2, 0, 0] = 0.7  # hidden under the more confident instance 0
    ids, segments = masks_to_panoptic(masks, torch.tensor([5, 7, 5]), scores=torch.tensor([0.9, 0.2, 0.1]))
    assert ids.tolist() == [[1, 1, 1, 0], [1, 1, 1, 2], [0, 0, 2, 2]]
    assert segments == [{"id": 1, "category": 5, "iscrowd": 0, "isthing": True},
                        {"id": 2, "category": 7, "iscrowd": 0, "isthing": True}]
    ids, segments = masks_to_panoptic(masks, torch.tensor([5, 7, 5]), threshold=0.85)  # only instance 0 is > 0.85
    assert ids.tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]] and [s["id"] for s in segments] == [1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_paste_masks_in_image_equals_torchvision(dtype):
    g = torch.Generator().manual_seed(2)
    masks = torch.rand(25, 1, 28, 28, generator=g, dtype=dtype)
    xy = torch.rand(25, 2, generator=g) * torch.tensor([60.0, 50.0])
    boxes = torch.cat([xy, (xy + torch.rand(25, 2, generator=g) * 40 + 0.3).minimum(torch.tensor([80.0, 64.0]))], 1)
    got = paste_masks_in_image(masks, boxes.to(dtype), (64, 80))
    torch.testing.assert_close(got, tv_paste(masks, boxes.to(dtype), (64, 80)))
    assert paste_masks_in_image(masks[:0], boxes[:0], (64, 80)).shape == (0, 1, 64, 80)
    with pytest.raises(ConfigError, match=r"\[K, 1, M, M\]"):
        paste_masks_in_image(masks[:, 0], boxes, (64, 80))


def test_an_all_ones_mask_pasted_covers_its_box():
    # a 20 x 20 box: the padded mask fades to 0 over the one-pixel border added around it, so thresholding at 0.5
    # gives exactly the box's 400 pixels (rows 20-39, columns 10-29)
    pasted = paste_masks_in_image(torch.ones(1, 1, 28, 28), torch.tensor([[10.0, 20.0, 30.0, 40.0]]), (64, 64))
    want = torch.zeros(64, 64, dtype=torch.bool)
    want[20:40, 10:30] = True
    assert torch.equal(pasted[0, 0] > 0.5, want)
