"""Box formats, IoU and GIoU equal torchvision.ops and the notes' hand examples (Notes: 002 §4, §4.1; 000 §3.12)."""

import pytest
import torch
import torchvision.ops as tvo

from dlkit.errors import ConfigError
from dlkit.ops import (
    BOX_FORMATS,
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    generalized_box_iou,
    remove_small_boxes,
)


def random_boxes(n, seed, dtype=torch.float32, degenerate=0.2, integer=False):
    """xyxy boxes in a 100 x 100 image; a fraction `degenerate` has zero width or height (or both)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 40
    if integer:
        xy, wh = xy.round(), wh.round()
    flat = torch.rand(n, 2, generator=g) < degenerate
    wh = torch.where(flat, torch.zeros_like(wh), wh)
    return torch.cat([xy, xy + wh], 1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("in_fmt", BOX_FORMATS)
@pytest.mark.parametrize("out_fmt", BOX_FORMATS)
def test_box_convert_equals_torchvision_and_round_trips(in_fmt, out_fmt, dtype):
    for seed in range(5):
        b = tvo.box_convert(random_boxes(50, seed, dtype), "xyxy", in_fmt)
        ours = box_convert(b, in_fmt, out_fmt)
        torch.testing.assert_close(ours, tvo.box_convert(b, in_fmt, out_fmt), rtol=0, atol=0)
        torch.testing.assert_close(box_convert(ours, out_fmt, in_fmt), b)
    assert box_convert(torch.zeros(0, 4), in_fmt, out_fmt).shape == (0, 4)


def test_box_convert_hand_example_and_leading_dims():
    # Notes 002 §4: BB = [x, y, w, h] with (x, y) the centre
    b = torch.tensor([[[50.0, 50.0, 20.0, 10.0]]])
    torch.testing.assert_close(box_convert(b, "cxcywh", "xyxy"), torch.tensor([[[40.0, 45.0, 60.0, 55.0]]]))
    torch.testing.assert_close(box_convert(b, "cxcywh", "xywh"), torch.tensor([[[40.0, 45.0, 20.0, 10.0]]]))


def test_box_iou_notes_hand_examples():
    # 002 §4.1 / 000 §3.12: [0,0,2,2] vs [1,1,3,3] -> 1/7; inside [0,0,4,4] -> 1/4; identical 1; disjoint and
    # touching 0; 003 §6: [0,0,2,2] vs [1,0,3,2] -> 1/3
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 4, 4], [0, 0, 2, 2], [5, 5, 6, 6], [2, 0, 4, 2], [1, 0, 3, 2]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 1 / 4, 1.0, 0.0, 0.0, 1 / 3]]))
    torch.testing.assert_close(box_iou(b, a), box_iou(a, b).T)  # symmetric


def test_giou_hand_example():
    # [0,0,1,1] and [2,0,3,1]: IoU 0, enclosing box 3 x 1, union 2 -> GIoU = -(3 - 2) / 3
    a, b = torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[2.0, 0, 3, 1], [0, 0, 1, 1]])
    torch.testing.assert_close(generalized_box_iou(a, b), torch.tensor([[-1 / 3, 1.0]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("integer", [False, True], ids=["float", "integer-ties"])
def test_box_iou_and_giou_equal_torchvision(dtype, integer):
    for seed in range(20):
        a = random_boxes(30 + seed, seed, dtype, integer=integer)
        b = torch.cat([random_boxes(20, 100 + seed, dtype, integer=integer), a[:5]])  # identical pairs too
        # torchvision divides 0 by 0 for two empty boxes: their IoU is 0 here, so their GIoU is -1 when the box
        # enclosing them has an area, and 0 when that is empty too
        enclosing = (torch.maximum(a[:, None, 2:], b[None, :, 2:]) - torch.minimum(a[:, None, :2], b[None, :, :2]))
        empty_pair_giou = -(enclosing.prod(-1) > 0).to(dtype)
        for ours, ref, at_nan in ((box_iou, tvo.box_iou, torch.zeros_like(empty_pair_giou)),
                                  (generalized_box_iou, tvo.generalized_box_iou, empty_pair_giou)):
            got, want = ours(a, b), ref(a, b)
            defined = ~want.isnan()
            torch.testing.assert_close(got[defined], want[defined])
            torch.testing.assert_close(got[~defined], at_nan[~defined])
            assert got.dtype == want.dtype


def test_empty_box_against_itself_has_iou_zero_where_torchvision_is_nan():
    p = torch.tensor([[1.0, 1, 1, 1]])
    assert tvo.box_iou(p, p).isnan().all()
    assert box_iou(p, p).item() == 0.0 and generalized_box_iou(p, p).item() == 0.0


@pytest.mark.parametrize("fn", [box_iou, generalized_box_iou])
def test_iou_of_empty_sets_has_empty_shape(fn):
    assert fn(torch.zeros(0, 4), torch.rand(3, 4).sort(1).values).shape == (0, 3)
    assert fn(torch.tensor([[0.0, 0, 1, 1]]), torch.zeros(0, 4)).shape == (1, 0)


def test_box_area_clip_and_remove_small_equal_torchvision():
    for seed in range(5):
        b = random_boxes(40, seed) - 20  # some leave the image on the left/top, some on the right/bottom
        torch.testing.assert_close(box_area(b), tvo.box_area(b))
        torch.testing.assert_close(clip_boxes_to_image(b, (70, 90)), tvo.clip_boxes_to_image(b, (70, 90)))
        assert torch.equal(remove_small_boxes(b, 10.0), tvo.remove_small_boxes(b, 10.0))


def test_wrong_shapes_and_formats_are_refused_with_the_expected_layout():
    with pytest.raises(ConfigError, match=r"\[N, 4\].*got \(4,\)"):
        box_iou(torch.tensor([0.0, 0, 1, 1]), torch.zeros(0, 4))
    with pytest.raises(ConfigError, match="floating-point"):
        box_iou(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="in_fmt must be one of"):
        box_convert(torch.zeros(2, 4), "xyhw", "xyxy")
    with pytest.raises(ConfigError, match=r"\[\.\.\., 4\]"):
        box_convert(torch.zeros(2, 5), "xyxy", "cxcywh")
    with pytest.raises(ConfigError, match="inverted"):
        generalized_box_iou(torch.tensor([[2.0, 0, 1, 1]]), torch.tensor([[0.0, 0, 1, 1]]))


def test_giou_gradient_equals_torchvision():
    # DETR's box loss 1 - GIoU (002 §4.3) trains through it
    a = random_boxes(8, 1, torch.float64, degenerate=0).requires_grad_(True)
    b = random_boxes(6, 2, torch.float64, degenerate=0)
    w = torch.randn(8, 6, dtype=torch.float64)
    (ours,) = torch.autograd.grad((generalized_box_iou(a, b) * w).sum(), a)
    (ref,) = torch.autograd.grad((tvo.generalized_box_iou(a, b) * w).sum(), a)
    torch.testing.assert_close(ours, ref)
