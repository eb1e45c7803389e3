"""Integral images, four-look-up rectangle sums and Haar-like features equal brute-force sums (Notes: 002 §4.2.1,
§4.2.2)."""

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.ops import HAAR_FEATURES, haar_feature, haar_positions, integral_image, rect_sum


def image(seed, shape=(2, 3, 17, 23), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=dtype) if dtype.is_floating_point else torch.randint(
        0, 256, shape, generator=g, dtype=dtype)


def test_integral_image_is_the_notes_recursion():
    # II(i, j) = II(i, j-1) + II(i-1, j) - II(i-1, j-1) + I(i, j), written out pixel by pixel (002 §4.2.2)
    img = image(0, (6, 9))
    want = torch.zeros(7, 10, dtype=img.dtype)
    for i in range(6):
        for j in range(9):
            want[i + 1, j + 1] = want[i + 1, j] + want[i, j + 1] - want[i, j] + img[i, j]
    torch.testing.assert_close(integral_image(img), want)


def test_integral_image_equals_skimage_and_cumsum():
    skimage_transform = pytest.importorskip("skimage.transform")
    img = image(1, (12, 15), torch.uint8)
    ii = integral_image(img)
    assert ii.dtype == torch.int64 and ii.shape == (13, 16)
    assert (ii[0] == 0).all() and (ii[:, 0] == 0).all()
    assert torch.equal(ii[1:, 1:], torch.from_numpy(skimage_transform.integral_image(img.numpy()).astype("int64")))
    batch = image(2)
    torch.testing.assert_close(integral_image(batch)[..., 1:, 1:], batch.cumsum(-2).cumsum(-1))


def test_rect_sum_equals_brute_force_on_random_rectangles():
    img = image(3)
    ii = integral_image(img)
    g = torch.Generator().manual_seed(3)
    y, x = torch.randint(0, 17, (200,), generator=g), torch.randint(0, 23, (200,), generator=g)
    h = (torch.rand(200, generator=g) * (18 - y)).long()  # 0 .. rows - y, empty rectangles included
    w = (torch.rand(200, generator=g) * (24 - x)).long()
    got = rect_sum(ii, y, x, h, w)
    assert got.shape == (2, 3, 200)
    want = torch.stack([img[..., a:a + c, b:b + d].sum((-2, -1)) for a, b, c, d in zip(y, x, h, w)], -1)
    torch.testing.assert_close(got, want)
    assert rect_sum(ii, 0, 0, 17, 23).shape == (2, 3)  # scalars: the whole image
    torch.testing.assert_close(rect_sum(ii, 0, 0, 17, 23), img.sum((-2, -1)))


def brute_force_haar(img, kind, y, x, h, w):
    """The notes' definition: white cells minus black cells, from pixel sums (independent of the lookup code)."""
    patch = img[..., y:y + h, x:x + w]
    if kind == "two_horizontal":
        return patch[..., :, : w // 2].sum((-2, -1)) - patch[..., :, w // 2:].sum((-2, -1))
    if kind == "two_vertical":
        return patch[..., : h // 2, :].sum((-2, -1)) - patch[..., h // 2:, :].sum((-2, -1))
    if kind == "three_horizontal":
        t = w // 3
        return patch.sum((-2, -1)) - 2 * patch[..., :, t:2 * t].sum((-2, -1))
    if kind == "three_vertical":
        t = h // 3
        return patch.sum((-2, -1)) - 2 * patch[..., t:2 * t, :].sum((-2, -1))
    hh, hw = h // 2, w // 2  # four: top-left + bottom-right - top-right - bottom-left
    q = patch.unfold(-2, hh, hh).unfold(-2, hw, hw).sum((-2, -1))
    return q[..., 0, 0] + q[..., 1, 1] - q[..., 0, 1] - q[..., 1, 0]


@pytest.mark.parametrize("kind", list(HAAR_FEATURES))
def test_haar_features_equal_brute_force_sums(kind):
    img = image(4, (2, 24, 24), torch.int32)  # a batch of two 24 x 24 windows (002 §4.2.1)
    ii = integral_image(img)
    positions = haar_positions(kind)
    pick = positions[torch.randperm(len(positions), generator=torch.Generator().manual_seed(0))[:300]]
    got = haar_feature(ii, kind, *pick.T)
    want = torch.stack([brute_force_haar(img, kind, *p.tolist()) for p in pick], -1)
    assert torch.equal(got, want.long())


def test_haar_feature_counts_in_a_24x24_window():
    # every size (a multiple of the cell grid) at every position where it fits, counted by a formula; the five
    # kinds give the 162,336 features usually quoted for Viola-Jones' 24 x 24 window
    counts = {}
    for kind, (cols, rows, _) in HAAR_FEATURES.items():
        counts[kind] = len(haar_positions(kind))
        assert counts[kind] == sum((24 - h + 1) * (24 - w + 1)
                                   for h in range(rows, 25, rows) for w in range(cols, 25, cols))
    assert counts == {"two_horizontal": 43200, "two_vertical": 43200, "three_horizontal": 27600,
                      "three_vertical": 27600, "four": 20736}
    assert sum(counts.values()) == 162336


def test_bad_rectangles_and_kinds_are_refused():
    ii = integral_image(torch.ones(5, 5))
    with pytest.raises(ConfigError, match="leaves the 5 x 5 image"):
        rect_sum(ii, 3, 0, 3, 1)
    with pytest.raises(ConfigError, match="width that is a multiple of 2"):
        haar_feature(ii, "two_horizontal", 0, 0, 2, 3)
    with pytest.raises(ConfigError, match="kind must be one of"):
        haar_feature(ii, "five", 0, 0, 2, 2)
    with pytest.raises(ConfigError, match=r"\[\.\.\., H, W\]"):
        integral_image(torch.ones(5))
