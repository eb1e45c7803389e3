"""dlkit's own augmentations (Notes: 003 §3.3.1) against torchvision.transforms.v2 where it has the same operation.

dlkit draws the parameters per sample from a torch.Generator; the tests take the parameters dlkit drew (replayed
from a copy of the generator, or read back from the output) and apply v2's functional kernel with them.
"""

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from dlkit.data.augment import CutMix, Cutout, Mixup, RandomResizedCrop, affine, cutmix, mixup, resized_crop
from dlkit.data.transforms import (
    ColorJitter,
    Compose,
    JointTransform,
    RandomCrop,
    RandomHorizontalFlip,
    RandomVerticalFlip,
    Resize,
)

BILINEAR = TF.InterpolationMode.BILINEAR


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _replay(g: torch.Generator) -> torch.Generator:
    return torch.Generator().set_state(g.get_state())


def test_flips_equal_torchvision_hflip_and_vflip():
    x = torch.rand(3, 2, 5, 7)
    assert torch.equal(RandomHorizontalFlip(1.0)(x), TF.hflip(x))
    assert torch.equal(RandomVerticalFlip(1.0)(x), TF.vflip(x))
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x)


def _find_crop(out: torch.Tensor, padded: torch.Tensor, h: int, w: int, flips=(False,)):
    """The (top, left, flipped) whose v2 crop (and hflip) of `padded` gives `out`; exactly one must match."""
    hits = [(t, left, f) for t in range(padded.shape[-2] - h + 1) for left in range(padded.shape[-1] - w + 1)
            for f in flips if torch.equal(out, (TF.hflip if f else lambda z: z)(TF.crop(padded, t, left, h, w)))]
    assert len(hits) == 1, hits
    return hits[0]


def test_random_crop_equals_torchvision_pad_then_crop_at_the_drawn_offset():
    n, h, w = 6, 5, 6
    x = torch.arange(n * 2 * h * w, dtype=torch.float32).view(n, 2, h, w)  # every pixel distinct
    out = RandomCrop((4, 5), padding=(1, 2, 3, 0), fill=-1.0)(x, generator=_gen(3))
    padded = TF.pad(x, [1, 2, 3, 0], fill=-1.0)  # (left, top, right, bottom), as dlkit's padding
    offsets = {_find_crop(out[i], padded[i], 4, 5)[:2] for i in range(n)}
    assert len(offsets) > 1  # offsets are drawn per sample


def test_joint_transform_moves_the_mask_as_torchvision_moves_a_mask():
    n, h, w, void = 5, 6, 7, 11
    x = torch.arange(n * h * w, dtype=torch.float32).view(n, 1, h, w)
    y = torch.randint(0, 11, (n, h, w), generator=_gen(1))
    joint = JointTransform(Compose([RandomCrop((h, w), padding=2, fill=-1.0), RandomHorizontalFlip()]),
                           Compose([RandomCrop((h, w), padding=2, fill=float(void)), RandomHorizontalFlip()]))
    xo, yo = joint(x, y, generator=_gen(4))
    assert yo.dtype == y.dtype
    for i in range(n):
        top, left, flipped = _find_crop(xo[i], TF.pad(x[i], [2], fill=-1.0), h, w, flips=(False, True))
        m = TF.crop(TF.pad(tv_tensors.Mask(y[i]), [2], fill=void), top, left, h, w)
        m = TF.hflip(m) if flipped else m
        assert isinstance(m, tv_tensors.Mask) and torch.equal(yo[i], m.as_subclass(torch.Tensor))


def test_rotation_equals_torchvision_rotate():
    """Same centre, sense (counter-clockwise) and zero fill: equal up to float rounding (grid_sample vs v2's
    affine kernel), 90 degrees included (cos 90 deg is not exactly 0 in float)."""
    x = torch.rand(2, 3, 9, 9)
    torch.testing.assert_close(affine(x, angle=90.0), TF.rotate(x, 90.0, BILINEAR), rtol=0, atol=1e-5)
    torch.testing.assert_close(affine(x, angle=90.0), torch.rot90(x, 1, dims=(-2, -1)), rtol=0, atol=1e-5)
    x = torch.rand(2, 3, 16, 12)
    for angle in (5.0, -12.5, 30.0):
        torch.testing.assert_close(affine(x, angle=angle), TF.rotate(x, angle, BILINEAR), rtol=0, atol=1e-5)


def test_cutout_equals_torchvision_erase_of_the_drawn_box():
    x = torch.rand(8, 3, 10, 9)
    g = _gen(5)
    boxes = Cutout(4).sample_boxes(8, 10, 9, generator=_replay(g))
    out = Cutout(4, fill=0.5)(x, generator=g)
    for i, (y0, x0, y1, x1) in enumerate(boxes.tolist()):
        assert torch.equal(out[i], TF.erase(x[i], y0, x0, y1 - y0, x1 - x0, torch.tensor(0.5)))
    assert (boxes[:, 2] - boxes[:, 0]).min() < 4  # some squares are clipped at a border


def test_resized_crop_equals_torchvision_for_whole_pixel_boxes():
    x = torch.rand(3, 2, 12, 16)
    boxes = torch.tensor([[0, 0, 16, 12], [3, 2, 9, 7], [5, 1, 11, 9]])  # (x0, y0, width, height) >= the output
    out = resized_crop(x, boxes, (7, 9))
    for i, (x0, y0, bw, bh) in enumerate(boxes.tolist()):
        want = TF.resized_crop(x[i], y0, x0, bh, bw, [7, 9], BILINEAR, antialias=False)
        torch.testing.assert_close(out[i], want, rtol=0, atol=1e-5)
    # enlarging a 4x4 box 4 times: equal inside; the outer 2 output pixels (half an input pixel) read around the box
    out = resized_crop(x, torch.tensor([[6, 4, 4, 4]] * 3), (16, 16))
    want = TF.resized_crop(x, 4, 6, 4, 4, [16, 16], BILINEAR, antialias=False)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], want[..., 2:-2, 2:-2], rtol=0, atol=1e-5)
    assert not torch.allclose(out, want)
    full = RandomResizedCrop((6, 8), scale=(1, 1), ratio=(16 / 12, 16 / 12))(x, generator=_gen())
    torch.testing.assert_close(full, TF.resize(x, [6, 8], BILINEAR, antialias=False), rtol=0, atol=1e-5)


@pytest.mark.parametrize("antialias", [True, False])
def test_resize_equals_torchvision_resize(antialias):
    x = torch.rand(2, 3, 17, 23)
    for size in [(8, 11), (30, 40), 9]:
        r = Resize(size, antialias=antialias)
        assert torch.equal(r(x), TF.resize(x, list(r.output_size(17, 23)), BILINEAR, antialias=antialias))
    u = (x * 255).round().to(torch.uint8)  # uint8: resized in float and rounded
    want = TF.resize(u.float(), [8, 11], BILINEAR, antialias=antialias).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(Resize((8, 11), antialias=antialias)(u), want)


def test_color_jitter_equals_torchvision_adjust_with_the_drawn_factors():
    x = torch.rand(6, 3, 5, 4)
    jitter = ColorJitter(brightness=0.4, contrast=(0.5, 1.5), saturation=0.8)
    g = _gen(2)
    r = _replay(g)  # dlkit draws brightness, contrast, saturation factors for all samples, in that order
    fb, fc, fs = (torch.rand(6, generator=r) * (hi - lo) + lo for lo, hi in ((0.6, 1.4), (0.5, 1.5), (0.2, 1.8)))
    out = jitter(x, generator=g)
    for i in range(6):
        want = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i], float(fb[i])), float(fc[i])),
                                    float(fs[i]))
        torch.testing.assert_close(out[i], want, rtol=0, atol=1e-6)


def test_mixup_equals_torchvision_mixup_for_its_lambda_and_pairing():
    """v2.MixUp pairs sample i with i - 1 (a roll of the batch) and draws lam from the global RNG; read lam back
    from its labels and mix with dlkit's formula."""
    x, y = torch.rand(5, 3, 4, 4), torch.tensor([0, 1, 2, 3, 4])
    torch.manual_seed(7)
    xv, yv = v2.MixUp(alpha=1.0, num_classes=5)(x, y)
    lam = float(yv[0, 0])
    mixed = mixup(x, y, lam, torch.arange(5).roll(1))
    torch.testing.assert_close(mixed.x, xv, rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed.soft_targets(5), yv, rtol=0, atol=1e-6)
    assert 0 < lam < 1
    assert Mixup(alpha=1.0)(x, y, generator=_gen()).x.shape == x.shape


def test_cutmix_equals_torchvision_cutmix_for_its_box_and_pairing():
    x, y = torch.rand(4, 3, 12, 10), torch.tensor([0, 1, 2, 3])
    perm = torch.arange(4).roll(1)
    boxes = 0
    for seed in range(6):
        torch.manual_seed(seed)
        xv, yv = v2.CutMix(alpha=1.0, num_classes=4)(x, y)
        changed = (xv != x).any(dim=(0, 1))  # the pasted box, as rows x columns
        if not changed.any():
            continue
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        box = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
        mixed = cutmix(x, y, box, perm)
        assert torch.equal(mixed.x, xv)
        torch.testing.assert_close(mixed.soft_targets(4), yv, rtol=0, atol=1e-6)
        boxes += 1
    assert boxes >= 3
    out = CutMix(alpha=1.0)(x, y, generator=_gen())
    assert out.x.shape == x.shape and 0 <= out.lam <= 1
