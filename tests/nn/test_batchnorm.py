"""Batch normalisation equals nn.BatchNorm1d/2d (Notes: 000 §3.8, 003 §2.2.5)."""

import pytest
import torch

from dlkit.errors import ConfigError
from dlkit.nn.batchnorm import BatchNorm, BatchNorm1d, BatchNorm2d

D = torch.float64

CASES = [
    ("1d_NC", BatchNorm1d, torch.nn.BatchNorm1d, (16, 5)),
    ("1d_NCL", BatchNorm1d, torch.nn.BatchNorm1d, (8, 5, 7)),
    ("2d", BatchNorm2d, torch.nn.BatchNorm2d, (4, 5, 6, 3)),
]


def _pair(ours_cls, ref_cls, **kw):
    ours, ref = ours_cls(5, **kw).double(), ref_cls(5, **kw).double()
    if getattr(ref, "weight", None) is not None:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 2)
            ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _step(m, x, w):
    x = x.clone().requires_grad_(True)
    y = m(x)
    params = [p for p in m.parameters()]
    grads = torch.autograd.grad((y * w).sum(), [x, *params])
    return y, grads


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
@pytest.mark.parametrize("name,ours_cls,ref_cls,shape", CASES, ids=[c[0] for c in CASES])
def test_batchnorm_equals_torch_in_train_and_eval(name, ours_cls, ref_cls, shape, momentum):
    ours, ref = _pair(ours_cls, ref_cls, momentum=momentum)
    for _ in range(4):  # several training steps: outputs, gradients and running stats
        x = torch.randn(shape, dtype=D) * 3 + 1
        w = torch.randn(shape, dtype=D)
        (ya, ga), (yb, gb) = _step(ours, x, w), _step(ref, x, w)
        torch.testing.assert_close(ya, yb)
        for a, b in zip(ga, gb):  # d/dx, d/dgamma, d/dbeta
            torch.testing.assert_close(a, b)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, key), getattr(ref, key))
    ours.eval(), ref.eval()
    x, w = torch.randn(shape, dtype=D), torch.randn(shape, dtype=D)
    (ya, ga), (yb, gb) = _step(ours, x, w), _step(ref, x, w)
    torch.testing.assert_close(ya, yb)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kw", [{"affine": False}, {"track_running_stats": False}, {"eps": 1e-3}])
def test_batchnorm_options_equal_torch(kw):
    ours, ref = _pair(BatchNorm2d, torch.nn.BatchNorm2d, **kw)
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(ref, mode)()
        x = torch.randn(4, 5, 3, 3, dtype=D)
        torch.testing.assert_close(ours(x), ref(x))


def test_running_var_uses_unbiased_variance():
    m = BatchNorm1d(3, momentum=1.0)
    x = torch.randn(10, 3, dtype=torch.float32)
    m(x)
    torch.testing.assert_close(m.running_var, x.var(0, unbiased=True))
    torch.testing.assert_close(m.running_mean, x.mean(0))


def test_train_mode_output_has_mean_beta_and_variance_gamma_squared():
    m = BatchNorm2d(5).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5]))
        m.bias.copy_(torch.tensor([0.0, -1.0, 2.0, 0.5, 4.0]))
    y = m(torch.randn(8, 5, 4, 4, dtype=D) * 7 - 3)
    torch.testing.assert_close(y.mean((0, 2, 3)), m.bias.detach())
    torch.testing.assert_close(y.var((0, 2, 3), unbiased=False), m.weight.detach() ** 2, rtol=1e-4, atol=1e-4)


def test_state_dict_interchanges_with_torch_and_has_4c_numbers():
    ours, ref = BatchNorm1d(64), torch.nn.BatchNorm1d(64)
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours(torch.randn(32, 64))
    ref.load_state_dict(ours.state_dict())
    ours.eval(), ref.eval()
    x = torch.randn(4, 64)
    torch.testing.assert_close(ours(x), ref(x))
    trainable = sum(p.numel() for p in ours.parameters())
    total = trainable + ours.running_mean.numel() + ours.running_var.numel()
    assert (trainable, total) == (128, 256)  # the notes' 4 * d_in parameters, half trainable


def test_one_class_parametrised_by_dims():
    m = BatchNorm(3, spatial_dims=3).double()
    ref = torch.nn.BatchNorm3d(3).double()
    x = torch.randn(2, 3, 4, 3, 2, dtype=D)
    torch.testing.assert_close(m(x), ref(x))
    torch.testing.assert_close(m.running_var, ref.running_var)


def test_bad_shapes_and_config_raise():
    with pytest.raises(ConfigError, match=r"\[N, C, H, W\] with C = 3"):
        BatchNorm2d(3)(torch.randn(2, 3, 4))
    with pytest.raises(ConfigError, match="C = 3"):
        BatchNorm1d(3)(torch.randn(2, 4))
    with pytest.raises(ConfigError, match="more than 1 value"):
        BatchNorm1d(3)(torch.randn(1, 3))
    BatchNorm1d(3).eval()(torch.randn(1, 3))  # eval with a single sample is fine
    with pytest.raises(ConfigError, match="momentum"):
        BatchNorm1d(3, momentum=1.5)
    with pytest.raises(ConfigError, match="spatial_dims"):
        BatchNorm(3, spatial_dims=4)


@pytest.mark.parametrize("ours_cls, ref_cls, shape", [(BatchNorm2d, torch.nn.BatchNorm2d, (0, 3, 4, 4)),
                                                      (BatchNorm1d, torch.nn.BatchNorm1d, (0, 3))])
def test_an_empty_batch_gives_an_empty_output_as_torch_and_leaves_the_statistics(ours_cls, ref_cls, shape):
    ours, ref = ours_cls(3), ref_cls(3)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(shape, requires_grad=True)
    for training in (True, False):
        ours.train(training), ref.train(training)
        out = ours(x)
        assert out.shape == ref(x).shape == shape
        out.sum().backward()
    assert torch.equal(ours.weight.grad, torch.zeros(3)) and torch.equal(ours.running_mean, ref.running_mean)
    assert torch.equal(ours.running_var, ref.running_var)
