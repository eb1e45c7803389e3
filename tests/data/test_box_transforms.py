import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from dlkit.data import box_transforms as bt
from dlkit.data.transforms import ColorJitter as ImageColorJitter
from dlkit.errors import ConfigError

H, W = 40, 60


def _sample(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, H, W, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([W - 8.0, H - 8.0])
    wh = 2 + torch.rand(n, 2, generator=g) * torch.tensor([30.0, 20.0])
    boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([W, H]))], 1)
    masks = torch.zeros(n, H, W, dtype=torch.uint8)
    for k, b in enumerate(boxes.round().long()):
        masks[k, b[1]:b[3], b[0]:b[2]] = 1
    target = {"boxes": boxes, "labels": torch.arange(1, n + 1), "masks": masks, "image_id": 7}
    return image, target


def _tv(boxes, canvas=(H, W)):
    return tv_tensors.BoundingBoxes(boxes.clone(), format="XYXY", canvas_size=canvas)


def test_horizontal_flip_equals_torchvision():
    image, target = _sample()
    out, t = bt.horizontal_flip(image, target)
    torch.testing.assert_close(t["boxes"], TF.horizontal_flip(_tv(target["boxes"])).as_subclass(torch.Tensor),
                               atol=1e-5, rtol=0)
    assert torch.equal(out, TF.horizontal_flip(image))
    assert torch.equal(t["masks"], TF.horizontal_flip(tv_tensors.Mask(target["masks"])).as_subclass(torch.Tensor))
    assert t["image_id"] == 7 and torch.equal(t["labels"], target["labels"])


def test_resize_equals_torchvision():
    image, target = _sample(1)
    out, t = bt.resize(image, target, (25, 90))
    ref = TF.resize(_tv(target["boxes"]), [25, 90]).as_subclass(torch.Tensor)
    torch.testing.assert_close(t["boxes"], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out, TF.resize(image, [25, 90], antialias=True), atol=1e-5, rtol=0)
    ref_m = TF.resize(tv_tensors.Mask(target["masks"]), [25, 90]).as_subclass(torch.Tensor)
    assert torch.equal(t["masks"], ref_m)


def test_letterbox_equals_torchvision_resize_then_pad():
    image, target = _sample(2)
    out, t = bt.letterbox(image, target, (64, 64), fill=0.5)
    # 40x60 -> r = 64/60, 43x64 (43 = round(42.67)), pad top 10, bottom 11
    rb = TF.resize(_tv(target["boxes"]), [43, 64])
    ref = TF.pad(rb, [0, 10, 0, 11]).as_subclass(torch.Tensor)
    torch.testing.assert_close(t["boxes"], ref, atol=1e-5, rtol=0)
    ref_img = TF.pad(TF.resize(image, [43, 64], antialias=True), [0, 10, 0, 11], fill=0.5)
    torch.testing.assert_close(out, ref_img, atol=1e-5, rtol=0)
    assert out.shape == (3, 64, 64) and t["masks"].shape == (6, 64, 64)
    torch.testing.assert_close(bt.unletterbox_boxes(t["boxes"], t["letterbox"]), target["boxes"], atol=1e-4,
                               rtol=0)


def test_pad_equals_torchvision():
    image, target = _sample(6)
    out, t = bt.pad(image, target, (3, 0, 5, 7), fill=0.25)
    ref = TF.pad(_tv(target["boxes"]), [3, 0, 5, 7]).as_subclass(torch.Tensor)
    torch.testing.assert_close(t["boxes"], ref, atol=1e-5, rtol=0)
    assert torch.equal(out, TF.pad(image, [3, 0, 5, 7], fill=0.25))
    assert torch.equal(t["masks"], TF.pad(tv_tensors.Mask(target["masks"]), [3, 0, 5, 7]).as_subclass(torch.Tensor))


@pytest.mark.parametrize("window", [(5, 10, 20, 30), (0, 0, H, W), (12, 33, 28, 27)])
def test_clip_crop_equals_torchvision_crop_and_sanitize(window):
    image, target = _sample(3, n=12)
    top, left, h, w = window
    out, t = bt.crop(image, target, top, left, h, w, mode="clip", min_area_fraction=0.0, min_size=1.0)
    rb = TF.crop(_tv(target["boxes"]), top, left, h, w)
    rb, labels = v2.SanitizeBoundingBoxes(min_size=1.0)({"boxes": rb, "labels": target["labels"]}).values()
    torch.testing.assert_close(t["boxes"], rb.as_subclass(torch.Tensor), atol=1e-5, rtol=0)
    assert torch.equal(t["labels"], labels)
    assert torch.equal(out, TF.crop(image, top, left, h, w))
    assert t["masks"].shape == (len(labels), h, w)


def test_crop_area_fraction_and_centre_rules_by_hand():
    image = torch.zeros(3, 20, 20)
    boxes = torch.tensor([[0.0, 0, 10, 10], [8, 8, 12, 12], [15, 15, 20, 20]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 2, 3]), "area": torch.tensor([100.0, 16, 25])}
    # crop rows/cols 9..19: box 0 keeps 1x1 of 100 (1 %), box 1 keeps 3x3 of 16 (56 %), box 2 all
    _, t = bt.crop(image, target, 9, 9, 11, 11, mode="clip", min_area_fraction=0.5)
    assert t["labels"].tolist() == [2, 3]
    torch.testing.assert_close(t["boxes"], torch.tensor([[0.0, 0, 3, 3], [6, 6, 11, 11]]))
    torch.testing.assert_close(t["area"], torch.tensor([9.0, 25.0]))
    _, t = bt.crop(image, target, 9, 9, 11, 11, mode="centre")  # centres (5, 5) out, (10, 10) and (17.5, 17.5) in
    assert t["labels"].tolist() == [2, 3]


def test_mosaic_of_four_constant_images_by_hand():
    samples = []
    for k in range(4):
        image = torch.full((1, 10, 10), float(k + 1))
        samples.append((image, {"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([k + 1])}))
    out, t = bt.mosaic(samples, centre=(6, 4), size=(16, 16), fill=0.0, min_size=1.0)
    # image 1: rows 0..6, cols 0..4 (its bottom-right 6x4 part); image 2 rows 0..6 cols 4..14; 3 and 4 below
    want = torch.zeros(16, 16)
    want[0:6, 0:4], want[0:6, 4:14], want[6:16, 0:4], want[6:16, 4:14] = 1, 2, 3, 4
    assert torch.equal(out[0], want)
    # box (1,1,9,9) of image 1 placed at offset (x -6, y -4) -> (-5,-3,3,5) clipped to (0,0,3,5);
    # image 2 at (4, -4) -> (5,-3,13,5) -> (5,0,13,5); image 3 at (-6, 6) -> (0,7,3,15); image 4 at (4,6) -> (5,7,13,15)
    torch.testing.assert_close(t["boxes"], torch.tensor([[0.0, 0, 3, 5], [5, 0, 13, 5], [0, 7, 3, 15],
                                                         [5, 7, 13, 15]]))
    assert t["labels"].tolist() == [1, 2, 3, 4]


def test_random_transforms_follow_the_generator_and_keep_masks_aligned():
    image, target = _sample(4, n=8)
    aug = bt.Compose([bt.RandomHorizontalFlip(0.5), bt.RandomCrop((0.5, 1.0), mode="clip"),
                      bt.ColorJitter(0.3, 0.3, 0.3), bt.Letterbox((48, 48))])
    a = aug(image, target, torch.Generator().manual_seed(5))
    b = aug(image, target, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    outs = [aug(image, target, torch.Generator().manual_seed(s))[1]["boxes"] for s in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    for s in range(6):
        _, t = aug(image, target, torch.Generator().manual_seed(s))
        assert t["masks"].shape[0] == len(t["boxes"]) == len(t["labels"])
        for box, m in zip(t["boxes"], t["masks"]):  # each rectangle mask fills its box (to rounding, x <= 2.4 zoom)
            ys, xs = torch.nonzero(m, as_tuple=True)
            if len(xs):
                got = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
                assert (got - box).abs().max() <= 2.5


def test_colour_jitter_is_the_image_transform_and_leaves_boxes():
    image, target = _sample(5)
    out, t = bt.ColorJitter(0.4, 0.4, 0.4)(image, target, torch.Generator().manual_seed(1))
    assert torch.equal(out, ImageColorJitter(0.4, 0.4, 0.4)(image, torch.Generator().manual_seed(1)))
    assert t["boxes"] is target["boxes"]


def test_mosaic_dataset_and_bad_input():
    data = [_sample(s) for s in range(5)]
    ds = bt.MosaicDataset(data, bt.Mosaic((40, 60)), p=1.0, seed=0)
    image, t = ds[0]
    assert image.shape == (3, 40, 60) and t["masks"].shape == (len(t["boxes"]), 40, 60)
    assert (t["boxes"][:, 2] <= 60).all() and (t["boxes"][:, 3] <= 40).all() and (t["boxes"] >= 0).all()
    with pytest.raises(ConfigError, match="inside"):
        bt.crop(*_sample(), 30, 0, 20, 10)
    with pytest.raises(ConfigError, match="boxes"):
        bt.horizontal_flip(torch.zeros(3, 4, 4), {"boxes": torch.zeros(3)})
    with pytest.raises(ConfigError, match="4"):
        bt.mosaic(data[:3], (5, 5), (10, 10))


def test_letterbox_and_mosaic_fill_uint8_images_with_the_same_grey_as_float_ones():
    target = {"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([1])}
    grey, _ = bt.letterbox(torch.full((3, 20, 40), 200, dtype=torch.uint8), dict(target), 40)
    assert grey.dtype == torch.uint8 and grey[:, 0, 0].tolist() == [114, 114, 114]  # YOLO's grey, not black
    as_float, _ = bt.letterbox(torch.full((3, 20, 40), 200 / 255), dict(target), 40)
    assert as_float[0, 0, 0].item() == pytest.approx(114 / 255)
    samples = [(torch.full((1, 10, 10), 7, dtype=torch.uint8), dict(target)) for _ in range(4)]
    canvas, _ = bt.mosaic(samples, centre=(6, 4), size=(16, 16))
    assert canvas[0, 15, 15].item() == 114  # the canvas outside the four tiles
