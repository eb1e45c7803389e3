import pytest
import torch
import torch.nn.functional as F

from dlkit.errors import ConfigError
from dlkit.nn.unpool import MaxPoolWithSwitches, MaxUnpool, max_unpool, unpool_output_size
from dlkit.nn.upsample import bed_of_nails


@pytest.mark.parametrize("k,s,p,hw", [(2, 2, 0, (8, 10)), (3, 3, 0, (9, 12)), (3, 2, 1, (7, 9)), (2, 2, 0, (7, 9))])
def test_forward_and_backward_equal_torch_max_unpool2d(k, s, p, hw):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    v = y.detach().clone().requires_grad_(True)
    v_ref = y.detach().clone().requires_grad_(True)
    out = max_unpool(v, idx, output_size=hw)
    ref = F.max_unpool2d(v_ref, idx, k, s, p, output_size=hw)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(v.grad, v_ref.grad)


def test_default_output_size_inverts_the_pooling_formula():
    x = torch.randn(1, 2, 8, 8)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert unpool_output_size((4, 4), 2) == (8, 8)
    torch.testing.assert_close(max_unpool(y, idx, 2), F.max_unpool2d(y, idx, 2))


def test_unpool_of_pool_holds_the_maxima_at_their_argmax_and_zeros_elsewhere():
    # hand example: one 2x2 window per quadrant of a 4x4 map
    x = torch.tensor([[1., 5., 0., 2.],
                      [3., 4., 7., 1.],
                      [9., 0., 1., 1.],
                      [2., 8., 3., 6.]])[None, None]
    pool, unpool = MaxPoolWithSwitches(2), MaxUnpool(2)
    y, idx = pool(x)
    assert y.flatten().tolist() == [5., 7., 9., 6.]
    expected = torch.tensor([[0., 5., 0., 0.],
                             [0., 0., 7., 0.],
                             [9., 0., 0., 0.],
                             [0., 0., 0., 6.]])[None, None]
    torch.testing.assert_close(unpool(y, idx), expected)


def test_switches_of_our_pool_equal_torch_and_top_left_switches_are_bed_of_nails():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 6, 8)
    y, idx = MaxPoolWithSwitches(2)(x)
    y_ref, idx_ref = F.max_pool2d(x, 2, return_indices=True)
    torch.testing.assert_close(y, y_ref)
    assert torch.equal(idx, idx_ref)
    rows = torch.arange(3).view(-1, 1) * 2 * 8
    cols = torch.arange(4).view(1, -1) * 2
    top_left = (rows + cols).expand(2, 3, 3, 4)
    torch.testing.assert_close(max_unpool(y, top_left, 2), bed_of_nails(y, 2))


def test_bad_input_raises_config_error():
    y = torch.randn(1, 1, 2, 2)
    with pytest.raises(ConfigError, match="same shape"):
        max_unpool(y, torch.zeros(1, 1, 2, 3, dtype=torch.long), 2)
    with pytest.raises(ConfigError, match="output_size"):
        max_unpool(y, torch.zeros(1, 1, 2, 2, dtype=torch.long))
    with pytest.raises(ConfigError, match="lie in"):
        max_unpool(y, torch.full((1, 1, 2, 2), 16, dtype=torch.long), 2)
