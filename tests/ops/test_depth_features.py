"""Depth-comparison features f(x) = D[x + dp / D[x]] - D[x + dn / D[x]] (Notes: 002 §5.1.1)."""

import numpy as np
import pytest

from dlkit.errors import ConfigError
from dlkit.ops.depth_features import depth_features, random_offsets

BG = 100.0


def test_hand_values_on_a_tiny_depth_map():
    d = np.arange(25, dtype=np.float32).reshape(5, 5) / 10 + 1.0      # 1.0 .. 3.4
    d[2, 2] = 2.0
    offsets = np.array([[[0, 2], [-4, 0]],       # one column right (2 / 2), two rows up (-4 / 2)
                        [[0, 10], [0, 0]],       # five columns right: outside the image -> BG; dn = 0: D[x]
                        [[1.2, -1.2], [0, 0]]])  # (0.6, -0.6) from the centre (2.5, 2.5) -> pixel (3, 1)
    f = depth_features(d, np.array([[2, 2]]), offsets, BG)[0]
    np.testing.assert_allclose(f, [d[2, 3] - d[0, 2], BG - 2.0, d[3, 1] - 2.0], rtol=1e-6)
    # a pixel with depth 1.0 (the corner): the offsets are not shrunk, (0, 2) moves two columns
    g = depth_features(d, np.array([[0, 0]]), np.array([[[0, 2], [2, 0]]]), BG)[0]
    np.testing.assert_allclose(g, [d[0, 2] - d[2, 0]], rtol=1e-6)


def test_constant_plane_gives_zero_and_background_probes_read_the_constant():
    rng = np.random.default_rng(0)
    plane = np.full((2, 30, 40), 2.5, np.float32)
    pixels = np.stack([rng.integers(0, 2, 50), rng.integers(10, 20, 50), rng.integers(15, 25, 50)], 1)
    offsets = random_offsets(30, 10.0, rng)                          # at most 4 pixels at 2.5 m: inside
    np.testing.assert_array_equal(depth_features(plane, pixels, offsets, BG), 0.0)
    far = np.array([[[0.0, 1000.0], [0.0, 0.0]], [[-1000.0, 0.0], [1000.0, 0.0]]])
    f = depth_features(plane, pixels, far, BG)
    np.testing.assert_allclose(f[:, 0], BG - 2.5)
    np.testing.assert_allclose(f[:, 1], 0.0)                          # both probes outside: BG - BG


def test_depth_invariance_scene_nearer_and_image_magnified():
    # the same scene at a third of the depth seen 3x larger: D'[3i+1, 3j+1] = D[i, j] / 3 (every pixel a 3x3
    # block). The offsets divided by the depth cover the same piece of the scene, so every probe reads the
    # corresponding pixel and f' = f / 3 (with the background constant scaled alike), sign pattern included
    rng = np.random.default_rng(1)
    d = rng.uniform(1.0, 3.0, size=(2, 9, 11)).astype(np.float32)
    near = np.repeat(np.repeat(d / 3, 3, axis=1), 3, axis=2)
    pixels = np.stack(np.meshgrid(np.arange(2), np.arange(9), np.arange(11), indexing="ij"), -1).reshape(-1, 3)
    offsets = random_offsets(40, 12.0, rng)                           # some probes leave the image
    f = depth_features(d, pixels, offsets, BG)
    g = depth_features(near, pixels * [1, 3, 3] + [0, 1, 1], offsets, BG / 3)
    np.testing.assert_allclose(g, f / 3, rtol=1e-5, atol=1e-6)
    assert (np.abs(f) > 50).any()                                     # some probes did read the background


def test_random_offsets_lie_in_the_disc_and_bad_input_raises():
    rng = np.random.default_rng(0)
    o = random_offsets(2000, 5.0, rng, unary=0.25)
    assert o.shape == (2000, 2, 2) and np.linalg.norm(o, axis=-1).max() <= 5.0
    assert 0.2 < (np.abs(o[:, 1]).sum(-1) == 0).mean() < 0.3
    with pytest.raises(ConfigError, match="offsets"):
        depth_features(np.ones((4, 4)), np.zeros((1, 2), int), np.zeros((3, 2)), BG)
    with pytest.raises(ConfigError, match="out of range"):
        depth_features(np.ones((4, 4)), np.array([[4, 0]]), np.zeros((1, 2, 2)), BG)
