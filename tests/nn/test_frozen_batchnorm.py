"""Frozen batch norm equals torchvision.ops.FrozenBatchNorm2d and BatchNorm2d in eval mode (Notes: 000 §3.8)."""

import pytest
import torch
from torch import nn

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.nn.batchnorm import BatchNorm2d
from dlkit.nn.frozen_batchnorm import FrozenBatchNorm2d, freeze_batchnorm

D = torch.float64


def _random_buffers(m, gen):
    with torch.no_grad():
        m.weight.copy_(torch.rand(m.weight.shape, generator=gen, dtype=D) * 2 + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=gen, dtype=D))
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen, dtype=D))
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen, dtype=D) * 3 + 0.1)
    return m


def test_equals_torchvision_frozen_batchnorm_on_random_buffers():
    tv_ops = pytest.importorskip("torchvision.ops")
    gen = torch.Generator().manual_seed(0)
    ref = _random_buffers(tv_ops.FrozenBatchNorm2d(6, eps=1e-3).double(), gen)
    ours = FrozenBatchNorm2d(6, eps=1e-3).double()
    ours.load_state_dict(ref.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert list(ours.parameters()) == []
    x = torch.randn(3, 6, 5, 4, generator=gen, dtype=D)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-12)


def test_loads_a_batchnorm_state_dict_like_torchvision_dropping_num_batches_tracked():
    tv_ops = pytest.importorskip("torchvision.ops")
    bn = _random_buffers(nn.BatchNorm2d(4).double(), torch.Generator().manual_seed(1))
    state = bn.state_dict()
    assert "num_batches_tracked" in state
    ref, ours = tv_ops.FrozenBatchNorm2d(4).double(), FrozenBatchNorm2d(4).double()
    assert ref.load_state_dict(dict(state), strict=True) == ours.load_state_dict(dict(state), strict=True)
    for key in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(ours.state_dict()[key], bn.state_dict()[key])
    with pytest.raises(RuntimeError, match="Missing key"):  # a missing statistic is still an error (as torchvision)
        ours.load_state_dict({k: v for k, v in state.items() if k != "running_var"})


@pytest.mark.parametrize("bn_cls", [nn.BatchNorm2d, BatchNorm2d], ids=["torch", "dlkit"])
def test_from_batchnorm_equals_the_batchnorm_in_eval_mode(bn_cls):
    gen = torch.Generator().manual_seed(2)
    bn = _random_buffers(bn_cls(5, eps=1e-4).double(), gen).eval()
    frozen = FrozenBatchNorm2d.from_batchnorm(bn)
    assert frozen.eps == 1e-4 and frozen.running_var.dtype == D
    x = torch.randn(2, 5, 3, 3, generator=gen, dtype=D)
    torch.testing.assert_close(frozen(x), bn(x), rtol=0, atol=1e-12)


def test_from_batchnorm_refuses_a_batchnorm_without_running_statistics():
    with pytest.raises(ConfigError, match="tracks no running statistics"):
        FrozenBatchNorm2d.from_batchnorm(nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(ConfigError, match="expects nn.BatchNorm2d"):
        FrozenBatchNorm2d.from_batchnorm(nn.BatchNorm1d(3))


def test_freeze_batchnorm_of_a_resnet_keeps_eval_outputs_and_ignores_the_batch():
    torch.manual_seed(0)
    model = create_model("resnet_cifar20").double()
    model.train()
    with torch.no_grad():  # a few training batches give the running statistics non-trivial values
        for _ in range(2):
            model(torch.randn(8, *model.default_input_shape, dtype=D))
    model.eval()
    x = torch.randn(4, *model.default_input_shape, dtype=D)
    with torch.no_grad():
        expected = model(x)
    keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn > 0

    frozen = freeze_batchnorm(model)
    assert frozen is model
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()) == n_bn
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert list(model.state_dict()) == keys
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            assert list(m.parameters(recurse=False)) == []
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-12)
        model.train()  # training mode: still the frozen statistics, so a sample's output ignores the rest of the batch
        torch.testing.assert_close(model(x)[:1], model(x[:1]), rtol=0, atol=1e-12)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-12)
