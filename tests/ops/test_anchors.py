"""Grid anchors equal torchvision's AnchorGenerator; k-means with 1 - IoU recovers anchor shapes (Notes: 002
§4.3.2, §4.3.4; 000 §3.12.1)."""

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from dlkit.errors import ConfigError
from dlkit.ops import AnchorGenerator, cell_anchors, grid_anchors, kmeans_anchors, wh_iou


@pytest.mark.parametrize("sizes,ratios", [
    (((128, 256, 512),), ((0.5, 1.0, 2.0),)),  # Faster R-CNN: k = 9 on one level
    (((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5),  # FPN levels
    (((32, 40, 50), (64, 80, 101)), ((0.5, 1.0, 2.0), (1.0, 3.0))),  # RetinaNet-like sizes, ratios per level
])
def test_anchor_generator_equals_torchvision(sizes, ratios):
    images = torch.zeros(2, 3, 224, 320)
    features = [torch.zeros(2, 8, 224 // s, 320 // s) for s in (4, 8, 16, 32, 64)[:len(sizes)]]
    want = TvAnchorGenerator(sizes, ratios)(ImageList(images, [(224, 320)] * 2), features)
    ours = AnchorGenerator(sizes, ratios)
    got = ours(images, features)
    assert all(torch.equal(got, w) for w in want)
    assert ours.num_anchors_per_location() == TvAnchorGenerator(sizes, ratios).num_anchors_per_location()


def test_anchor_count_centres_areas_and_ratios():
    # 002 §4.3.2: H x W x k anchors, centred on the stride grid, w h = s^2 and h / w = r (unrounded)
    sizes, ratios, stride, (gh, gw) = (16.0, 32.0), (0.5, 1.0, 2.0), 8, (5, 7)
    anchors = grid_anchors(cell_anchors(sizes, ratios, rounded=False), (gh, gw), (stride, stride))
    k = len(sizes) * len(ratios)
    assert anchors.shape == (gh * gw * k, 4)
    a = anchors.view(gh, gw, k, 4)
    centre = (a[..., :2] + a[..., 2:]) / 2
    grid_y, grid_x = torch.meshgrid(torch.arange(gh) * stride, torch.arange(gw) * stride, indexing="ij")
    torch.testing.assert_close(centre, torch.stack([grid_x, grid_y], -1)[:, :, None].expand(-1, -1, k, -1).float())
    w, h = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]
    want_area = torch.tensor([s * s for _ in ratios for s in sizes])
    want_ratio = torch.tensor([r for r in ratios for _ in sizes])
    torch.testing.assert_close(w * h, want_area.expand_as(w))
    torch.testing.assert_close(h / w, want_ratio.expand_as(w))


def test_wh_iou_hand_values():
    # co-centred 2x2 in 4x4: 4 / 16; 2x2 and 4x1 share 2 of 4 + 4 - 2 = 6; 1x4 and 4x1 cross in 1 of 7; itself: 1
    a = torch.tensor([[2.0, 2.0], [1.0, 4.0]])
    b = torch.tensor([[4.0, 4.0], [4.0, 1.0], [1.0, 4.0]])
    torch.testing.assert_close(wh_iou(a, b), torch.tensor([[0.25, 2 / 6, 2 / 6], [4 / 16, 1 / 7, 1.0]]))


def test_kmeans_recovers_three_planted_shape_clusters():
    # 000 §3.12.1 / 002 §4.3.4: boxes drawn around 3 shapes (small square, tall, wide and large) -> 3 anchors
    g = torch.Generator().manual_seed(0)
    planted = torch.tensor([[10.0, 10.0], [30.0, 90.0], [200.0, 120.0]])
    wh = planted.repeat_interleave(200, 0) * (1 + 0.05 * torch.randn(600, 2, generator=g))
    for seed in range(3):
        anchors = kmeans_anchors(wh, 3, seed=seed)
        torch.testing.assert_close(anchors, planted, rtol=0.03, atol=0)


def test_kmeans_result_is_a_fixed_point_and_deterministic():
    wh = torch.rand(300, 2, generator=torch.Generator().manual_seed(1)) * 100 + 2
    anchors = kmeans_anchors(wh, 5, seed=7)
    assert torch.equal(anchors, kmeans_anchors(wh, 5, seed=7))
    # each anchor is the mean of the boxes nearest to it in 1 - IoU (brute force), and they are sorted by area
    nearest = torch.tensor([min(range(5), key=lambda c: 1 - wh_iou(box[None], anchors[c:c + 1]).item())
                            for box in wh.double()])
    for c in range(5):
        torch.testing.assert_close(anchors[c], wh[nearest == c].mean(0))
    assert (anchors.prod(1).diff() > 0).all()


def test_kmeans_with_iou_is_scale_aware():
    # two small shapes (about 5x5 and 10x10) and a large one with a wide spread (100..150): Euclidean k-means
    # (scikit-learn) merges the small ones and splits the large one; 1 - IoU is scale free and finds the 3 groups
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    g = torch.Generator().manual_seed(3)
    planted = torch.tensor([[4.0, 4.0], [8.0, 8.0], [100.0, 100.0]])
    wh = planted.repeat_interleave(100, 0) * (1 + 0.5 * torch.rand(300, 2, generator=g))
    group_means = torch.stack([wh[i * 100:(i + 1) * 100].mean(0) for i in range(3)])
    torch.testing.assert_close(kmeans_anchors(wh, 3, seed=0), group_means)
    euclid = torch.tensor(sklearn_cluster.KMeans(3, n_init=10, random_state=0).fit(wh.numpy()).cluster_centers_)
    assert (euclid.prod(1) < 200).sum() == 1 and (euclid.prod(1) > 5000).sum() == 2


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match=r"\[N, 2\]"):
        kmeans_anchors(torch.rand(10, 4), 3)
    with pytest.raises(ConfigError, match="between 1 and the number of boxes"):
        kmeans_anchors(torch.rand(2, 2) + 1, 3)
    with pytest.raises(ConfigError, match="positive width and height"):
        kmeans_anchors(torch.tensor([[0.0, 1.0], [1.0, 1.0]]), 1)
    with pytest.raises(ConfigError, match="one tuple of sizes"):
        AnchorGenerator(((32,), (64,)), ((1.0,), (1.0,), (2.0,)))
    with pytest.raises(ConfigError, match="positive"):
        cell_anchors((32,), (0.0,))
    with pytest.raises(ConfigError, match="2 feature levels"):
        AnchorGenerator(((32,), (64,)))(torch.zeros(1, 3, 64, 64), [torch.zeros(1, 8, 8, 8)])
    assert math.isclose(cell_anchors((10,), (4.0,), rounded=False)[0, 3].item(), 10.0)  # h = s sqrt(r) = 20
