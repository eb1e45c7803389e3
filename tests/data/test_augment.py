import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.stats
import torch
import torch.nn.functional as F

from dlkit.data.augment import (
    CutMix,
    Cutout,
    GaussianNoise,
    Mixup,
    RandomAffine,
    RandomIntensityShift,
    RandomResizedCrop,
    RandomRotation,
    RandomScale,
    affine,
    mixup,
    mixup_cross_entropy,
    sample_beta,
)
from dlkit.data.transforms import Compose, RandomHorizontalFlip
from dlkit.errors import ConfigError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_rotation_by_90_degrees_equals_rot90():
    x = torch.rand(3, 2, 7, 7)
    torch.testing.assert_close(affine(x, 90.0), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-6, rtol=0)
    torch.testing.assert_close(affine(x, -90.0), torch.rot90(x, -1, dims=(-2, -1)), atol=1e-6, rtol=0)
    y = torch.rand(2, 1, 6, 9)  # 180 degrees on a non-square image: both flips
    torch.testing.assert_close(affine(y, 180.0), y.flip(-2, -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(RandomRotation((90, 90))(x), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-6, rtol=0)


def test_rotation_by_zero_and_eval_mode_are_identity():
    x = torch.rand(4, 3, 5, 8)
    assert torch.equal(RandomRotation(0)(x), x)
    assert torch.equal(RandomAffine()(x), x)
    aug = RandomRotation(45).eval()
    assert torch.equal(aug(x), x) and not aug.training
    assert not torch.equal(aug.train()(x, generator=_gen()), x)


def _scipy_affine(img, angle, translate, scale, shear, cval):
    """Reference: scipy's affine_transform (order 1) with the inverse of M = R Sh scale in (row, col) order."""
    a, k = math.radians(angle), math.tan(math.radians(shear))
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    m = rot @ np.array([[1.0, k], [0.0, 1.0]]) * scale  # acts on (u, v) = (col, row) offsets from the centre
    inv = np.linalg.inv(m)
    inv_rc = inv[::-1, ::-1]  # the same map on (row, col)
    t_rc = np.array(translate[::-1])
    c = np.array([(img.shape[0] - 1) / 2, (img.shape[1] - 1) / 2])
    offset = c - inv_rc @ (c + t_rc)
    return ndi.affine_transform(img, inv_rc, offset=offset, order=1, mode="grid-constant", cval=cval)


@pytest.mark.parametrize("fill", [0.0, 0.3])
def test_affine_matches_scipy_affine_transform(fill):
    x = torch.rand(3, 2, 11, 14, dtype=torch.float64)
    params = [(30.0, (1.5, -2.0), 1.3, 10.0), (-75.0, (0.0, 3.0), 0.7, -20.0), (0.0, (2.0, 1.0), 1.0, 0.0)]
    out = affine(x, angle=torch.tensor([p[0] for p in params], dtype=x.dtype),
                 translate=torch.tensor([p[1] for p in params], dtype=x.dtype),
                 scale=torch.tensor([p[2] for p in params], dtype=x.dtype),
                 shear=torch.tensor([p[3] for p in params], dtype=x.dtype), fill=fill)
    for i, (angle, t, s, sh) in enumerate(params):
        for c in range(2):
            ref = _scipy_affine(x[i, c].numpy(), angle, t, s, sh, fill)
            np.testing.assert_allclose(out[i, c].numpy(), ref, atol=1e-10)


def test_random_scale_by_two_upsamples_the_central_half():
    x = torch.rand(2, 3, 8, 8)
    zoomed = RandomScale((2.0, 2.0))(x)
    ref = F.interpolate(x[..., 2:6, 2:6], scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(zoomed[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-6, rtol=0)


def test_random_affine_is_reproducible_and_samples_in_range():
    x = torch.rand(64, 1, 9, 9)
    aug = RandomAffine(degrees=20, translate=(0.1, 0.2), scale=(0.9, 1.1), shear=(-5, 5))
    assert torch.equal(aug(x, generator=_gen(3)), aug(x, generator=_gen(3)))
    assert not torch.equal(aug(x, generator=_gen(3)), aug(x, generator=_gen(4)))
    p = aug.sample_params(x, _gen())
    assert p["angle"].abs().max() <= 20 and p["angle"].std() > 5
    assert p["translate"][:, 0].abs().max() <= 0.9 and p["translate"][:, 1].abs().max() <= 1.8
    assert 0.9 <= p["scale"].min() and p["scale"].max() <= 1.1 and p["shear"].abs().max() <= 5
    expected = affine(x, **aug.sample_params(x, _gen(7)))
    torch.testing.assert_close(aug(x, generator=_gen(7)), expected)  # apply = affine of the sampled parameters


def test_random_resized_crop_of_the_full_image_is_a_resize():
    x = torch.rand(2, 3, 6, 9)
    for size in [(4, 7), (12, 13)]:
        crop = RandomResizedCrop(size, scale=(1.0, 1.0), ratio=(1.5, 1.5))  # ratio W/H: the whole image
        ref = F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=False)
        torch.testing.assert_close(crop(x, generator=_gen()), ref, atol=1e-6, rtol=0)
    sq = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(RandomResizedCrop(8, scale=(1, 1), ratio=(1, 1))(sq), sq, atol=1e-6, rtol=0)


def test_random_resized_crop_boxes_have_the_requested_area_and_aspect():
    x = torch.rand(500, 1, 40, 50)
    crop = RandomResizedCrop(10, scale=(0.1, 0.5), ratio=(0.75, 1.25))
    x0, y0, bw, bh = crop.sample_boxes(x, _gen()).unbind(1)
    assert x0.min() >= 0 and y0.min() >= 0 and (x0 + bw).max() <= 50 + 1e-4 and (y0 + bh).max() <= 40 + 1e-4
    area = bw * bh / (40 * 50)
    assert area.min() >= 0.1 - 1e-5 and area.max() <= 0.5 + 1e-5
    assert (bw / bh).min() >= 0.75 - 1e-5 and (bw / bh).max() <= 1.25 + 1e-5
    # a box of the output's size is read at unit steps from its (fractional) corner
    pick = RandomResizedCrop((3, 4), scale=(0.12, 0.12), ratio=(4 / 3, 4 / 3))
    img = torch.rand(1, 2, 10, 10)
    boxes = pick.sample_boxes(img, _gen(5))
    assert torch.allclose(boxes[0, 2:], torch.tensor([4.0, 3.0]))
    out = pick(img, generator=_gen(5))
    assert out.shape == (1, 2, 3, 4)
    fx, fy = float(boxes[0, 0]), float(boxes[0, 1])
    ref = ndi.map_coordinates(img[0, 0].numpy(), np.meshgrid(fy + np.arange(3), fx + np.arange(4), indexing="ij"),
                              order=1)
    np.testing.assert_allclose(out[0, 0].numpy(), ref, atol=1e-5)


def test_cutout_zeroes_exactly_one_clipped_square_per_image():
    n, h, w, size = 300, 8, 10, 4
    x = torch.rand(n, 3, h, w) + 1.0  # no zeros before cutout
    out = Cutout(size)(x, generator=_gen())
    boxes = Cutout(size).sample_boxes(n, h, w, _gen())
    clipped = 0
    for i in range(n):
        zero = out[i] == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # same square in every channel
        rows, cols = zero[0].any(1).nonzero().flatten(), zero[0].any(0).nonzero().flatten()
        y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        assert zero[0].sum() == (y1 - y0) * (x1 - x0)  # a full rectangle
        assert boxes[i].tolist() == [y0, x0, y1, x1]
        assert y1 - y0 <= size and x1 - x0 <= size
        assert (y1 - y0 == size or y0 == 0 or y1 == h) and (x1 - x0 == size or x0 == 0 or x1 == w)
        clipped += (y1 - y0) * (x1 - x0) < size * size
        assert torch.equal(out[i][~zero], x[i][~zero])  # nothing else changed
    assert 0 < clipped < n


def test_photometric_noise_and_intensity_shift():
    x = torch.full((4, 3, 64, 64), 0.5)
    noisy = GaussianNoise(0.1)(x, generator=_gen())
    assert abs(float((noisy - x).std()) - 0.1) < 0.005 and abs(float((noisy - x).mean())) < 0.005
    shift = RandomIntensityShift((0.2, 0.2), clip=None)
    torch.testing.assert_close((shift(x) - x).mean((1, 2, 3)), torch.full((4,), 0.2))
    assert RandomIntensityShift((0.7, 0.7))(x).max() == 1.0 and GaussianNoise(1.0)(x).min() == 0.0  # clipped
    assert torch.equal(GaussianNoise(0.1).eval()(x), x)


def test_augmentations_compose_with_transforms_and_accept_one_image():
    img = torch.rand(3, 6, 6)
    pipe = Compose([RandomHorizontalFlip(1.0), RandomRotation((90, 90))])
    torch.testing.assert_close(pipe(img), torch.rot90(img.flip(-1), 1, dims=(-2, -1)), atol=1e-6, rtol=0)
    assert Cutout(2)(img, generator=_gen()).shape == img.shape


def test_mixup_with_lam_one_is_identity_and_follows_the_formula():
    x, y = torch.rand(6, 2, 3, 3), torch.arange(6)
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    same = mixup(x, y, 1.0, perm)
    assert torch.equal(same.x, x) and torch.equal(same.y_a, y)
    m = mixup(x, y, 0.3, perm)
    torch.testing.assert_close(m.x, 0.3 * x + 0.7 * x.flip(0))
    assert torch.equal(m.y_b, y.flip(0))
    targets = m.soft_targets(6)
    torch.testing.assert_close(targets, 0.3 * F.one_hot(y, 6).float() + 0.7 * F.one_hot(y.flip(0), 6).float())
    assert Mixup(alpha=0.0)(x, y).lam == 1.0 and Mixup(1.0).eval()(x, y).x is x


def test_mixup_batch_pairs_samples_with_a_permutation():
    x, y = torch.rand(8, 1, 2, 2), torch.arange(8)
    m = Mixup(0.4)(x, y, generator=_gen())
    assert sorted(m.y_b.tolist()) == list(range(8)) and 0 <= m.lam <= 1
    torch.testing.assert_close(m.x, m.lam * x + (1 - m.lam) * x[m.y_b])
    again = Mixup(0.4)(x, y, generator=_gen())
    assert torch.equal(again.x, m.x)
    ps = Mixup(0.4, per_sample=True)(x, y, generator=_gen(1))
    assert ps.lam.shape == (8,)
    torch.testing.assert_close(ps.x, ps.lam.view(-1, 1, 1, 1) * x + (1 - ps.lam.view(-1, 1, 1, 1)) * x[ps.y_b])


@pytest.mark.parametrize("per_sample", [False, True])
def test_mixup_loss_is_the_mix_of_two_cross_entropies_and_the_soft_target_ce(per_sample):
    logits, y = torch.randn(10, 4), torch.randint(0, 4, (10,))
    m = Mixup(1.0, per_sample=per_sample)(torch.rand(10, 3), y, generator=_gen(2))
    loss = mixup_cross_entropy(logits, m.y_a, m.y_b, m.lam)
    logp = logits - logits.exp().sum(1, keepdim=True).log()
    lam = m.lam if per_sample else torch.full((10,), m.lam)
    by_hand = -(lam * logp[torch.arange(10), m.y_a] + (1 - lam) * logp[torch.arange(10), m.y_b]).mean()
    torch.testing.assert_close(loss, by_hand)
    torch.testing.assert_close(loss, F.cross_entropy(logits, m.soft_targets(4)))


def test_mixup_lambda_follows_beta_alpha_alpha():
    for alpha in (0.2, 1.0, 4.0):
        lam = sample_beta(alpha, 20000, _gen(int(alpha * 10))).numpy()
        assert abs(lam.mean() - 0.5) < 0.01
        assert abs(lam.var() - 1 / (4 * (2 * alpha + 1))) < 0.01  # Var Beta(a, a) = 1 / (4 (2a + 1))
        assert scipy.stats.kstest(lam, scipy.stats.beta(alpha, alpha).cdf).pvalue > 0.01
    assert torch.equal(sample_beta(0.5, 5, _gen(1)), sample_beta(0.5, 5, _gen(1)))


def test_cutmix_pastes_one_box_and_lam_is_the_kept_fraction():
    n, h, w = 6, 10, 12
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 2, h, w) + 0.5  # image i is all i + 0.5
    y = torch.arange(n)
    for seed in range(10):
        m = CutMix(1.0)(x, y, generator=_gen(seed))
        moved = m.y_b != y  # samples paired with another image (image i has only the value i + 0.5)
        assert moved.any()
        box = (m.x != x)[moved][0, 0]  # [H, W]: where the first of them now shows its partner
        torch.testing.assert_close(m.x, torch.where(box, x[m.y_b], x))  # the same box for every sample
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        assert box.sum() == len(rows) * len(cols)  # a rectangle
        assert m.lam == pytest.approx(1 - float(box.float().mean()))
    assert CutMix(1.0).eval()(x, y).lam == 1.0


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError):
        RandomRotation(-3)
    with pytest.raises(ConfigError):
        RandomAffine(translate=(0.5, 2.0))
    with pytest.raises(ConfigError):
        RandomResizedCrop(8, scale=(0.5, 1.5))
    with pytest.raises(ConfigError):
        Cutout(0)
    with pytest.raises(ConfigError):
        Mixup(alpha=-1)
    with pytest.raises(ConfigError):
        RandomRotation(10)(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ConfigError):
        Mixup()(torch.rand(4, 3), torch.arange(5))
