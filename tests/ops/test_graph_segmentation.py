"""Felzenszwalb-Huttenlocher over-segmentation (Notes: 002 §4.3.2): a hand example, and the labels of
skimage.segmentation.felzenszwalb (the independent reference) on generated shapes scenes and a Raccoon photo.

Measured agreement (skimage 0.26, numpy 2.4): the label maps are identical pixel for pixel (same segment count,
same numbering, adjusted Rand index 1, variation of information 0) on every image and setting tried: 3 shapes
scenes and skimage's astronaut x (k, sigma, min_size) in {(100, 0.8, 100), (50, 0.5, 20), (300, 0.8, 300)},
and the Raccoon photos. So the tests ask for equality."""

import time

import numpy as np
import pytest
import torch

from dlkit.data.detection_scenes import shapes_scenes
from dlkit.errors import ConfigError
from dlkit.ops import felzenszwalb
from dlkit.ops.graph_segmentation import gaussian_smooth, grid_edges

SETTINGS = [(100, 0.8, 100), (50, 0.5, 20), (300, 0.8, 300)]


def test_hand_example_a_row_of_two_flat_halves():
    # one row [0, 0, 1, 1], no smoothing: the weights are 0, 1, 0 (right neighbours only)
    img = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    # k = 127.5 (k / 255 = 0.5): the 0-edges merge the pairs; then 1 >= min(0 + 0.5 / 2, ...) keeps them apart
    assert felzenszwalb(img, 127.5, 0.0, 0).tolist() == [[0, 0, 1, 1]]
    # k = 765 (k / 255 = 3): after the pairs merge, Int + k/|C| = 0 + 3/2 = 1.5 > 1, so the halves merge too
    assert felzenszwalb(img, 765.0, 0.0, 0).tolist() == [[0, 0, 0, 0]]
    # min_size 3: the first pass keeps two segments of 2 pixels; the second merges them
    assert felzenszwalb(img, 127.5, 0.0, 3).tolist() == [[0, 0, 0, 0]]


def test_grid_edges_are_the_8_neighbours_with_euclidean_colour_distance():
    g = np.random.default_rng(0)
    img = g.random((3, 4, 2))
    edges, costs = grid_edges(img)
    h, w = 3, 4
    assert len(edges) == h * (w - 1) + (h - 1) * w + 2 * (h - 1) * (w - 1)
    flat = img.reshape(-1, 2)
    np.testing.assert_allclose(costs, np.linalg.norm(flat[edges[:, 0]] - flat[edges[:, 1]], axis=1), rtol=1e-12)
    pairs = {tuple(sorted(divmod(int(p), w) for p in e)) for e in edges}
    brute = {tuple(sorted([(y, x), (y + dy, x + dx)])) for y in range(h) for x in range(w)
             for dy, dx in ((0, 1), (1, 0), (1, 1), (-1, 1)) if 0 <= y + dy < h and 0 <= x + dx < w}
    assert pairs == brute


def test_gaussian_smoothing_is_scipys_to_the_bit():
    ndi = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(1).random((37, 29, 3))
    for sigma in (0.5, 0.8, 2.3):
        assert np.array_equal(gaussian_smooth(x, sigma), ndi.gaussian_filter(x, [sigma, sigma, 0], mode="reflect"))


def scene_images():
    ds = shapes_scenes(3, seed=0)
    return [ds[i][0] for i in range(3)]


@pytest.mark.parametrize("scale,sigma,min_size", SETTINGS)
def test_equals_skimage_felzenszwalb_on_shapes_scenes(scale, sigma, min_size):
    skseg = pytest.importorskip("skimage.segmentation")
    for img in scene_images():
        ours = felzenszwalb(img, scale, sigma, min_size)
        ref = skseg.felzenszwalb(img.permute(1, 2, 0).numpy(), scale=scale, sigma=sigma, min_size=min_size)
        assert ours.dtype == torch.int64 and ours.shape == img.shape[1:]
        assert np.array_equal(ours.numpy(), ref)


def test_equals_skimage_felzenszwalb_on_a_raccoon_photo(data_root):
    skseg = pytest.importorskip("skimage.segmentation")
    if not (data_root / "raccoon").is_dir():
        pytest.skip(f"the Raccoon data set is not under {data_root}")
    from dlkit.data.voc import raccoon_detection

    img = raccoon_detection("val", data_root)[0][0]
    for scale, sigma, min_size in SETTINGS[:2]:
        ours = felzenszwalb(img, scale, sigma, min_size).numpy()
        ref = skseg.felzenszwalb(img.permute(1, 2, 0).numpy(), scale=scale, sigma=sigma, min_size=min_size)
        assert ours.max() == ref.max() > 5
        assert np.array_equal(ours, ref)


def test_labels_are_contiguous_and_segments_respect_min_size():
    img = scene_images()[0]
    labels = felzenszwalb(img, 50, 0.8, 40)
    counts = torch.bincount(labels.reshape(-1))
    assert labels.min() == 0 and (counts > 0).all()  # every label 0..n-1 used
    assert counts.min() >= 40
    # segments are numbered by their first pixel in raster order
    first = [int(torch.nonzero(labels.reshape(-1) == i)[0]) for i in range(len(counts))]
    assert first == sorted(first)


def test_uint8_grey_and_float_inputs_agree():
    img = scene_images()[1]
    u8 = (img * 255).round().to(torch.uint8)
    assert torch.equal(felzenszwalb(u8, 100, 0.8, 50), felzenszwalb(u8.double() / 255, 100, 0.8, 50))
    grey = img.mean(0)
    assert torch.equal(felzenszwalb(grey, 100, 0.8, 50), felzenszwalb(grey[None], 100, 0.8, 50))


def test_a_256x256_image_is_fast():
    # measured 0.16-0.25 s on one core of the 2-core machine when quiet (target < 0.5 s), about 1.1 s with the
    # machine three times oversubscribed; the bound only catches a gross slowdown (e.g. a loop not vectorised)
    img = scene_images()[2]
    felzenszwalb(img, 100, 0.8, 100)
    t = time.perf_counter()
    felzenszwalb(img, 100, 0.8, 100)
    assert time.perf_counter() - t < 2.5


def test_refuses_bad_input():
    with pytest.raises(ConfigError, match=r"\[C, H, W\]"):
        felzenszwalb(torch.zeros(1, 2, 3, 4))
    with pytest.raises(ConfigError, match="float image"):
        felzenszwalb(torch.zeros(3, 4, 4, dtype=torch.int32))
    with pytest.raises(ConfigError, match=">= 0"):
        felzenszwalb(torch.zeros(3, 4, 4), scale=-1)
