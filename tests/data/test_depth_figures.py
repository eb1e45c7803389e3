"""Synthetic depth images of articulated figures (Notes: 002 §5.1.1): determinism, shapes, z-buffer depths by hand."""

import numpy as np
import pytest

from dlkit.data.depth_figures import BACKGROUND, CAPSULES, JOINTS, PARTS, render_capsules, render_figures
from dlkit.errors import ConfigError


def test_figures_are_deterministic_under_a_seed_and_have_matching_shapes():
    a, b, c = render_figures(3, seed=5), render_figures(3, seed=5), render_figures(3, seed=6)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.depth, c.depth)
    assert a.depth.shape == a.labels.shape == (3, 96, 72) and a.depth.dtype == np.float32
    assert a.joints.shape == (3, len(JOINTS), 3) and a.part_centres.shape == (3, len(CAPSULES), 3)
    assert a.labels.min() == 0 and a.labels.max() <= len(PARTS) - 1
    np.testing.assert_array_equal(a.depth == BACKGROUND, a.labels == 0)  # background removed: a large constant
    body = a.depth[a.labels > 0]
    assert body.min() > 1.5 and body.max() < 5.0  # figures at 2.2-4 m, a few tens of centimetres thick
    for i in range(3):  # the torso is seen in every image
        assert (a.labels[i] == PARTS.index("torso")).any()


def test_sphere_depth_and_silhouette_by_hand():
    # a sphere of radius 0.5 m centred 3 m in front of the camera; odd image: the centre pixel's ray is the axis
    c, r, f = np.array([0.2, 0.0, 3.0]), 0.5, 40.0
    depth, labels = render_capsules(c[None], c[None], np.array([r]), 21, 21, f)
    rows, cols = np.meshgrid(np.arange(21) - 10.0, np.arange(21) - 10.0, indexing="ij")
    d = np.stack([cols / f, rows / f, np.ones_like(rows)], -1)          # rays through the pixel centres
    # distance of each ray (a line through the origin) from the centre, by hand
    dist = np.linalg.norm(np.cross(d, c), axis=-1) / np.linalg.norm(d, axis=-1)
    np.testing.assert_array_equal(labels == 1, dist < r)
    hit = labels == 1
    points = d[hit] * depth[hit][:, None]
    np.testing.assert_allclose(np.linalg.norm(points - c, axis=1), r, rtol=1e-5)  # on the near surface
    assert (points[:, 2] <= c[2] + 1e-6).all()
    # the centre pixel's ray is the optical axis: |(0, 0, z) - c| = r -> z = 3 - sqrt(0.5^2 - 0.2^2)
    assert depth[10, 10] == pytest.approx(3.0 - np.sqrt(0.25 - 0.04), rel=1e-6)
    assert (depth[~hit] == BACKGROUND).all()


def test_horizontal_cylinder_reads_a_constant_depth_along_its_axis_row():
    # a capsule along x at y = 0, z = 2 (radius 0.1): on the middle row each ray (x, 0, 1) meets it at z = 2 - 0.1
    depth, labels = render_capsules(np.array([[-0.5, 0.0, 2.0]]), np.array([[0.5, 0.0, 2.0]]), np.array([0.1]),
                                    11, 41, 20.0)
    x = (np.arange(41) - 20) / 20.0 * 1.9                              # the hit's x on the middle row
    inside = np.abs(x) <= 0.5
    np.testing.assert_allclose(depth[5, inside], 1.9, rtol=1e-6)
    cap = (np.abs(x) > 0.5) & (labels[5] == 1)                          # beyond the axis ends: the end spheres
    assert (depth[5, cap] > 1.9).all()
    assert labels[5, np.abs(x) > 0.75].max() == 0


def test_nearer_surface_occludes_the_farther_one():
    # a small sphere (part 2) at 2 m in front of a large one (part 1) at 4 m, both on the optical axis
    a = np.array([[0.0, 0.0, 4.0], [0.0, 0.0, 2.0]])
    depth, labels = render_capsules(a, a, np.array([1.0, 0.2]), 31, 31, 30.0)
    assert labels[15, 15] == 2 and depth[15, 15] == pytest.approx(1.8, rel=1e-6)
    assert labels[15, 15 + 6] == 1 and depth[15, 15 + 6] > 3.0           # only the far sphere behind this ray
    both = labels == 2
    assert 0 < both.sum() < (labels == 1).sum()
    # swap the order of the capsules: the z-buffer, not the drawing order, decides
    d2, l2 = render_capsules(a[::-1], a[::-1], np.array([0.2, 1.0]), 31, 31, 30.0)
    np.testing.assert_array_equal(d2, depth)
    np.testing.assert_array_equal(np.where(l2 > 0, 3 - l2, 0), labels)


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match="focal"):
        render_figures(2, focal=-1.0)
    with pytest.raises(ConfigError, match="radius"):
        render_capsules(np.zeros((2, 3)), np.zeros((2, 3)), np.ones(3), 5, 5, 10.0)
