"""Joint proposals from the local modes of each part's pixels (Notes: 002 §5.1.1, step 3)."""

import numpy as np
import pytest

from dlkit.data.depth_figures import CAPSULES, JOINTS, render_capsules, render_figures
from dlkit.errors import ConfigError
from dlkit.ops.joint_proposals import backproject, mean_shift_modes, part_centres_of_mass


def test_backprojected_pixels_lie_on_the_rendered_sphere():
    c = np.array([0.1, -0.2, 2.5])
    depth, labels = render_capsules(c[None], c[None], np.array([0.4]), 31, 25, 30.0)
    points = backproject(depth, 30.0)[labels == 1]
    np.testing.assert_allclose(np.linalg.norm(points - c, axis=1), 0.4, rtol=1e-5)
    # the centre of mass of the visible (front) half: on the line of sight through c, in front of it
    com = part_centres_of_mass(depth, labels, 1, 30.0)[0]
    assert np.linalg.norm(com[:2] / com[2] - c[:2] / c[2]) < 0.01 and c[2] - 0.4 < com[2] < c[2]


def test_centres_of_mass_of_a_figure_lie_near_the_true_parts():
    fig = render_figures(1, seed=3)
    com = part_centres_of_mass(fig.depth[0], fig.labels[0], len(CAPSULES), fig.focal)
    seen = np.bincount(fig.labels[0].ravel(), minlength=len(CAPSULES) + 1)[1:] >= 15
    assert seen.sum() >= 6
    # the visible surface of a capsule lies within its radius of the axis; its centre of mass near the midpoint
    joints = fig.joints[0]
    half_length = np.array([np.linalg.norm(joints[JOINTS.index(a)] - joints[JOINTS.index(b)]) / 2
                            for a, b, _ in CAPSULES])
    err = np.linalg.norm(com - fig.part_centres[0], axis=1)
    assert (err[seen] < half_length[seen] + 0.16).all()
    assert np.isnan(part_centres_of_mass(fig.depth[0], np.zeros_like(fig.labels[0]), 2, fig.focal)).all()


def test_mean_shift_finds_the_centroid_of_one_blob_and_two_modes_of_two_blobs():
    rng = np.random.default_rng(0)
    blob = rng.normal(size=(200, 3)) * 0.05
    blob -= blob.mean(0)                                              # a blob symmetric about its centroid, roughly
    one = mean_shift_modes(blob + [1.0, 2.0, 3.0], bandwidth=0.2)
    assert one.shape == (1, 3)
    np.testing.assert_allclose(one[0], [1.0, 2.0, 3.0], atol=0.01)
    two = mean_shift_modes(np.concatenate([blob + [0, 0, 2], blob[:100] + [0.6, 0, 2]]), bandwidth=0.1)
    assert two.shape == (2, 3)
    np.testing.assert_allclose(two, [[0, 0, 2], [0.6, 0, 2]], atol=0.02)  # the heavier blob first
    with pytest.raises(ConfigError, match="bandwidth"):
        mean_shift_modes(blob, bandwidth=0.0)
