import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from dlkit.errors import ConfigError
from dlkit.ops.kmeans import kmeans, kmeans_plusplus, squared_distances


def blobs(seed=0, n=300, k=4, d=3, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g, dtype=torch.float64) * 3
    return centres[torch.arange(n) % k] + spread * torch.randn(n, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("seed,k", [(0, 4), (1, 6), (2, 3)])
def test_lloyd_equals_sklearn_from_the_same_init(seed, k):
    x = blobs(seed, spread=1.5)  # overlapping blobs: several iterations before convergence
    init = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:k]]
    centres, labels, iters = kmeans(x, k, init=init, max_iter=300)
    ref = KMeans(k, init=init.numpy(), n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(x.numpy())
    assert iters > 2
    np.testing.assert_array_equal(labels.numpy(), ref.labels_)
    np.testing.assert_allclose(centres.numpy(), ref.cluster_centers_, rtol=1e-10, atol=1e-10)
    inertia = squared_distances(x, centres).gather(1, labels[:, None]).sum()
    assert float(inertia) == pytest.approx(ref.inertia_, rel=1e-10)


def test_kmeans_plusplus_picks_data_points_one_per_far_blob_and_is_seeded():
    x = blobs(3, k=5, spread=0.01) * 100  # five tight far-apart blobs
    c = kmeans_plusplus(x, 5, torch.Generator().manual_seed(0))
    assert all((x == row).all(1).any() for row in c)
    blob_of = squared_distances(c, x).argmin(1) % 5  # the blob of the point each centre is
    assert sorted(blob_of.tolist()) == [0, 1, 2, 3, 4]
    torch.testing.assert_close(c, kmeans_plusplus(x, 5, torch.Generator().manual_seed(0)))
    _, labels, _ = kmeans(x, 5, seed=0)
    assert len(set(zip(labels.tolist(), (torch.arange(len(x)) % 5).tolist()))) == 5  # the blobs recovered


def test_bad_input_raises_config_error():
    with pytest.raises(ConfigError, match="k must be"):
        kmeans(torch.randn(3, 2), 4)
    with pytest.raises(ConfigError, match="points"):
        kmeans(torch.arange(6).view(3, 2), 2)
    with pytest.raises(ConfigError, match="init"):
        kmeans(torch.randn(5, 2), 2, init=torch.randn(3, 2))
