"""CornerNet's corner pooling equals a brute-force max over the explicit ranges (Notes: 002 §4.3.5)."""

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.nn.corner_pool import CornerPool, bottom_pool, corner_pool, left_pool, right_pool, top_pool

D = torch.float64


def brute_force(x: torch.Tensor, direction: str) -> torch.Tensor:
    """y[..., i, j] = max of x over the pixels of the range the direction names, by explicit loops."""
    h, w = x.shape[-2:]
    y = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            window = {"top": x[..., i:, j], "bottom": x[..., :i + 1, j],
                      "left": x[..., i, j:], "right": x[..., i, :j + 1]}[direction]
            y[..., i, j] = window.max(dim=-1).values
    return y


POOLS = {"top": top_pool, "left": left_pool, "bottom": bottom_pool, "right": right_pool}


def test_hand_example():
    x = torch.tensor([[1.0, 3.0, 2.0], [0.0, 5.0, 1.0], [4.0, 2.0, 0.0]])
    # top pooling: each pixel takes the max of its column from its row down
    assert top_pool(x).tolist() == [[4, 5, 2], [4, 5, 1], [4, 2, 0]]
    # left pooling: the max of its row from its column to the right
    assert left_pool(x).tolist() == [[3, 3, 2], [5, 5, 1], [4, 2, 0]]
    assert bottom_pool(x).tolist() == [[1, 3, 2], [1, 5, 2], [4, 5, 2]]
    assert right_pool(x).tolist() == [[1, 3, 3], [0, 5, 5], [4, 4, 4]]
    # the top-left corner map of CornerNet's Fig. 6 style: top(f) + left(f)
    assert corner_pool(x, x).tolist() == [[7, 8, 4], [9, 10, 2], [8, 4, 0]]
    assert corner_pool(x, x, "bottom_right").tolist() == [[2, 6, 5], [1, 10, 7], [8, 9, 6]]


@pytest.mark.parametrize("direction", POOLS)
@pytest.mark.parametrize("seed", range(3))
def test_equals_brute_force_on_random_maps(direction, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (2, 3, int(torch.randint(1, 9, (), generator=g)), int(torch.randint(1, 9, (), generator=g)))
    x = torch.randn(shape, generator=g, dtype=D)
    torch.testing.assert_close(POOLS[direction](x), brute_force(x, direction), rtol=0, atol=0)


@pytest.mark.parametrize("direction", POOLS)
def test_ties_equal_brute_force(direction):
    # small integers: many equal values in every range
    x = torch.randint(0, 3, (2, 2, 6, 7), generator=torch.Generator().manual_seed(4)).to(D)
    assert torch.equal(POOLS[direction](x), brute_force(x, direction))


@pytest.mark.parametrize("direction", POOLS)
def test_gradient_gradcheck(direction):
    # distinct values (a random permutation) so that every range has a unique maximum and the max is differentiable
    x = torch.randperm(30, generator=torch.Generator().manual_seed(5)).to(D).view(1, 2, 3, 5).requires_grad_(True)
    assert torch.autograd.gradcheck(POOLS[direction], (x,))


def test_gradient_reaches_the_maximum_of_each_range():
    x = torch.tensor([[1.0, 3.0, 2.0], [0.0, 5.0, 1.0], [4.0, 2.0, 0.0]], requires_grad=True)
    top_pool(x).sum().backward()
    # column maxima from each row down: col 0 -> 4 (three times), col 1 -> 5 (twice) and 2 (once), col 2 -> 2, 1, 0
    assert x.grad.tolist() == [[0, 0, 1], [0, 2, 1], [3, 1, 1]]


def test_corner_pool_module_shape_gradient_and_corner_choice():
    torch.manual_seed(0)
    m = CornerPool(8, mid_chans=4, corner="bottom_right")
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and (y >= 0).all()  # ends with ReLU
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    # the pooled branch is a bottom/right cumulative max of the two branches' maps
    m.eval()
    with torch.no_grad():
        a, b = m.vertical(x), m.horizontal(x)
        expect = brute_force(a.double(), "bottom") + brute_force(b.double(), "right")
        torch.testing.assert_close(corner_pool(a, b, "bottom_right").double(), expect)


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="corner must be one of"):
        CornerPool(4, corner="top_right")
    with pytest.raises(ConfigError, match="same shape"):
        corner_pool(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ConfigError, match=r"\[N, 4, H, W\]"):
        CornerPool(4)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ConfigError, match="feature map"):
        top_pool(torch.zeros(3))
