import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment as scipy_lsa

from dlkit.errors import ConfigError
from dlkit.metrics.segmentation import mean_iou, segmentation_confusion
from dlkit.techniques.kmeans_segmentation import (
    cluster_confusion,
    kmeans_segmentation,
    match_clusters_to_classes,
    pixel_features,
    relabel,
)


def two_regions(n=3, h=24, w=32, seed=0):
    """Noisy images: a dark-blue disc (class 1) on a bright-orange background (class 0)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mask = (((yy - h / 2) ** 2 + (xx - w / 3) ** 2) < (h / 3) ** 2).long()
    colours = torch.tensor([[0.9, 0.6, 0.2], [0.1, 0.2, 0.7]])
    img = colours[mask].permute(2, 0, 1)
    images = (img + 0.08 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)
    return images, mask.expand(n, h, w)


@pytest.mark.parametrize("features,per_image", [("rgb", False), ("rgbxy", False), ("rgb", True)])
def test_two_noisy_regions_are_recovered_up_to_a_permutation(features, per_image):
    images, target = two_regions()
    clusters = kmeans_segmentation(images, 2, features, per_image=per_image, xy_weight=0.2)
    assert clusters.shape == target.shape
    for i in range(len(images)):  # per image: cluster ids of per-image k-means are arbitrary
        mapping = match_clusters_to_classes(cluster_confusion(clusters[i], target[i], 2, 2))
        pred = relabel(clusters[i], mapping)
        assert mean_iou(segmentation_confusion(pred, target[i], 2)) > 0.95


def test_hungarian_matching_equals_scipy_on_random_counts():
    g = torch.Generator().manual_seed(0)
    for classes, k in [(5, 5), (4, 6), (11, 11)]:
        conf = torch.randint(0, 1000, (classes, k), generator=g)
        mapping = match_clusters_to_classes(conf)
        rows, cols = scipy_lsa(conf.numpy(), maximize=True)
        assert int(conf[mapping[cols], torch.as_tensor(cols)].sum()) == int(conf.numpy()[rows, cols].sum())
        assert (mapping >= 0).sum() == min(classes, k)
        matched = mapping[mapping >= 0]
        assert len(set(matched.tolist())) == len(matched)  # one-to-one


def test_matching_hand_example_and_confusion_counts():
    # cluster 0 is mostly class 2, cluster 1 class 0, cluster 2 class 1; the void pixel (9) is not counted
    target = torch.tensor([[2, 2, 0, 1], [2, 0, 0, 9]])
    clusters = torch.tensor([[0, 0, 1, 2], [0, 1, 1, 2]])
    conf = cluster_confusion(clusters, target, 3, 3, ignore_index=9)
    np.testing.assert_array_equal(conf.numpy(), [[0, 3, 0], [0, 0, 1], [3, 0, 0]])
    assert match_clusters_to_classes(conf).tolist() == [2, 0, 1]


def test_features_and_bad_input():
    images = torch.full((1, 3, 2, 3), 255, dtype=torch.uint8)
    f = pixel_features(images, "rgbxy", xy_weight=2.0)
    assert f.shape == (1, 6, 5)
    torch.testing.assert_close(f[0, :, :3], torch.ones(6, 3, dtype=torch.float64))
    torch.testing.assert_close(f[0, -1, 3:], torch.tensor([2.0, 2.0], dtype=torch.float64))  # bottom-right
    with pytest.raises(ConfigError, match="features"):
        pixel_features(images, "hsv")
    with pytest.raises(ConfigError, match="RGB images"):
        kmeans_segmentation(torch.rand(3, 8, 8), 2)
