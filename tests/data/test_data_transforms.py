import pytest
import torch
import torch.nn.functional as F

from dlkit.data.transforms import (
    ColorJitter,
    Compose,
    JointTransform,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomVerticalFlip,
    Resize,
    ToFloat,
    grayscale,
)
from dlkit.errors import ConfigError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_flip_with_p1_equals_torch_flip_and_p0_is_identity():
    x = torch.rand(5, 3, 4, 6)
    assert torch.equal(RandomHorizontalFlip(1.0)(x), torch.flip(x, dims=[-1]))
    assert torch.equal(RandomVerticalFlip(1.0)(x), torch.flip(x, dims=[-2]))
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x) and torch.equal(RandomVerticalFlip(0.0)(x), x)
    assert torch.equal(RandomHorizontalFlip(1.0)(x[0]), torch.flip(x[0], dims=[-1]))  # single image


def test_flip_chooses_per_sample():
    x = torch.rand(256, 1, 2, 2)
    y = RandomHorizontalFlip(0.5)(x, generator=_gen())
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert torch.all(flipped | (y == x).flatten(1).all(1)) and 80 < int(flipped.sum()) < 176


def test_random_crop_samples_are_slices_of_the_padded_input():
    p, n = 2, 300
    x = torch.rand(n, 2, 5, 6)
    y = RandomCrop((5, 6), padding=p)(x, generator=_gen())
    padded = F.pad(x, (p, p, p, p))
    offsets = set()
    for i in range(n):
        matches = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   if torch.equal(y[i], padded[i, :, dy:dy + 5, dx:dx + 6])]
        assert matches, f"sample {i} is not a crop of its padded input"
        offsets.add(matches[0])
    assert len(offsets) == (2 * p + 1) ** 2  # every offset occurs: offsets vary across samples


def test_random_crop_fill_smaller_size_and_too_large_size():
    x = torch.ones(4, 1, 3, 3)
    y = RandomCrop(2, padding=(1, 0), fill=-1.0)(x, generator=_gen())
    assert y.shape == (4, 1, 2, 2) and set(y.unique().tolist()) <= {-1.0, 1.0}
    with pytest.raises(ConfigError, match="larger than the padded input"):
        RandomCrop(8, padding=1)(x)


def test_normalize_equals_formula_and_inverts():
    x = torch.rand(3, 3, 4, 4)
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]
    t = Normalize(mean, std)
    want = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(t(x), want)
    torch.testing.assert_close(t.inverse(t(x[0])), x[0])
    with pytest.raises(ConfigError, match="channels"):
        t(torch.rand(1, 1, 2, 2))
    with pytest.raises(ConfigError):
        Normalize([0.0], [0.0])


@pytest.mark.parametrize("antialias", [True, False])
def test_resize_equals_interpolate(antialias):
    x = torch.rand(2, 3, 17, 24)
    want = F.interpolate(x, size=(8, 10), mode="bilinear", align_corners=False, antialias=antialias)
    torch.testing.assert_close(Resize((8, 10), antialias=antialias)(x), want)
    assert Resize(8)(x).shape == (2, 3, 8, 11)  # int: shorter side, aspect kept (24 * 8 / 17 = 11.3)


def test_color_jitter_factor_one_is_identity_and_brightness_scales():
    x = torch.rand(6, 3, 4, 4)
    assert torch.equal(ColorJitter()(x), x)
    assert torch.equal(ColorJitter((1, 1), (1, 1), (1, 1))(x), x)
    torch.testing.assert_close(ColorJitter(brightness=(1.7, 1.7))(x), (x * 1.7).clamp(0, 1))


def test_contrast_and_saturation_follow_definitions():
    x = torch.rand(4, 3, 5, 5)
    gray = 0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # torchvision's luma weights
    torch.testing.assert_close(grayscale(x), gray)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(ColorJitter(contrast=(0.5, 0.5))(x), (0.5 * x + 0.5 * mean).clamp(0, 1))
    torch.testing.assert_close(ColorJitter(saturation=(0.0, 0.0))(x), gray.expand_as(x))


def test_color_jitter_draws_one_factor_per_sample():
    x = torch.full((64, 3, 2, 2), 0.25)
    y = ColorJitter(brightness=0.5)(x, generator=_gen())
    f = y[:, 0, 0, 0] / 0.25
    assert torch.allclose(y, f.view(-1, 1, 1, 1).expand_as(y) * 0.25)
    assert f.min() >= 0.5 and f.max() <= 1.5 and f.std() > 0.1


def test_same_generator_seed_gives_same_output():
    t = Compose([ToFloat(), RandomCrop(8, padding=2), RandomHorizontalFlip(), ColorJitter(0.4, 0.4, 0.4),
                 Normalize([0.5] * 3, [0.25] * 3)])
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    a, b, c = t(x, generator=_gen(5)), t(x, generator=_gen(5)), t(x, generator=_gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_to_float_scales_uint8_and_bad_layouts_are_rejected():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 3)
    torch.testing.assert_close(ToFloat()(x), torch.tensor([0.0, 0.2, 1.0]).view(1, 1, 3))
    with pytest.raises(ConfigError, match=r"\[C, H, W\]"):
        RandomHorizontalFlip()(torch.rand(4, 4))
    with pytest.raises(ConfigError, match="ToFloat"):
        ColorJitter(0.5)(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))


def test_joint_transform_moves_the_label_map_with_the_image():
    # The label map is a function of the image (label = pixel value of channel 0), so after any joint flip and
    # crop it must still be that function; the padded border gets the image fill 0 and the mask fill 11 (void).
    x = torch.randint(0, 11, (16, 3, 12, 10)).float()
    y = x[:, 0].to(torch.uint8)
    joint = JointTransform(Compose([RandomHorizontalFlip(), RandomCrop((12, 10), padding=3, fill=-1.0)]),
                           Compose([RandomHorizontalFlip(), RandomCrop((12, 10), padding=3, fill=11.0)]))
    xt, yt = joint(x, y, generator=torch.Generator().manual_seed(0))
    assert yt.dtype == torch.uint8 and yt.shape == y.shape
    pad = xt[:, 0] == -1
    assert pad.any() and (yt[pad] == 11).all() and torch.equal(yt[~pad], xt[:, 0][~pad].to(torch.uint8))
    assert not torch.equal(xt, x)  # something moved
    xt2, yt2 = joint(x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(xt, xt2) and torch.equal(yt, yt2)


def test_joint_transform_refuses_mismatched_shapes():
    with pytest.raises(ConfigError, match=r"label maps \[N, H, W\]"):
        JointTransform(RandomHorizontalFlip(), RandomHorizontalFlip())(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5))
