import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlkit.errors import ConfigError
from dlkit.techniques.shift_and_stitch import shift_and_stitch


class StridedNet(nn.Module):
    """conv 3x3 -> ReLU -> max pool f (stride f) -> conv 3x3 -> ReLU -> conv 2x2: total stride f (valid convs)."""

    def __init__(self, f: int, dense: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.f, self.dense = f, dense
        self.conv1 = nn.Conv2d(2, 4, 3)
        self.conv2 = nn.Conv2d(4, 5, 3)
        self.conv3 = nn.Conv2d(5, 3, 2)

    def forward(self, x):
        f = self.f
        x = F.relu(self.conv1(x))
        if not self.dense:
            x = F.max_pool2d(x, f)
            return self.conv3(F.relu(self.conv2(x)))
        # filter rarefaction: pooling stride 1, every later filter dilated by f
        x = F.max_pool2d(x, f, stride=1)
        x = F.relu(F.conv2d(x, self.conv2.weight, self.conv2.bias, dilation=f))
        return F.conv2d(x, self.conv3.weight, self.conv3.bias, dilation=f)


@pytest.mark.parametrize("f,hw", [(2, (16, 20)), (3, (18, 17)), (4, (21, 24))])
def test_equals_the_dense_rarefied_network_it_emulates(f, hw):
    torch.manual_seed(f)
    x = torch.randn(2, 2, *hw, dtype=torch.float64)
    coarse, dense = StridedNet(f).double(), StridedNet(f, dense=True).double()
    out = shift_and_stitch(coarse, x, f)
    h, w = coarse(x).shape[-2:]
    assert out.shape == (2, 3, f * h, f * w)
    ref = dense(F.pad(x, (0, f - 1, 0, f - 1)))[..., :f * h, :f * w]
    torch.testing.assert_close(out, ref)


def test_runs_f_squared_passes_and_interleaves_each_shift():
    calls = []

    def net(x):  # a pure stride-2 sub-sampling, recording its inputs
        calls.append(x.clone())
        return x[..., ::2, ::2]

    x = torch.arange(2 * 6 * 8, dtype=torch.float32).view(1, 2, 6, 8)
    out = shift_and_stitch(net, x, 2)
    assert len(calls) == 4
    torch.testing.assert_close(out, x)  # stitching a stride-2 sub-sampling gives the image back
    # shift (dy, dx) = (1, 0) is the input moved up one row with a zero row at the bottom
    torch.testing.assert_close(calls[2][..., :-1, :], x[..., 1:, :])
    assert (calls[2][..., -1, :] == 0).all()
    # out[f i + dy, f j + dx] is shift (dy, dx)'s map at (i, j)
    torch.testing.assert_close(out[..., 1::2, 1::2], net(calls[3]))


def test_same_padded_fully_convolutional_net_keeps_the_input_resolution():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
    out = shift_and_stitch(net, torch.randn(1, 3, 32, 48), 4)
    assert out.shape == (1, 4, 32, 48)


def test_bad_input_raises_config_error():
    with pytest.raises(ConfigError, match="stride"):
        shift_and_stitch(nn.Identity(), torch.randn(1, 1, 4, 4), 0)
    with pytest.raises(ConfigError, match="N, C, H, W"):
        shift_and_stitch(nn.Identity(), torch.randn(4, 4), 2)
