"""Backprop by hand equals autograd and finite differences (Notes: 000 §2.2, 003 §2.4)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlkit.errors import ConfigError
from dlkit.nn.activations import softmax_jacobian
from dlkit.techniques.backprop import NumpyMLP, layer_gradient_norms

TORCH_ACT = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z}


def _torch_grads(net, x, t):
    """The same network and loss in torch (rows are samples), differentiated by autograd."""
    ws = [torch.tensor(w, requires_grad=True) for w in net.weights]
    bs = [torch.tensor(b[:, 0], requires_grad=True) for b in net.biases]
    a = torch.tensor(x.T)
    for l, (w, b) in enumerate(zip(ws, bs)):
        z = a @ w.T + b
        last = l == len(ws) - 1
        a = (
            z
            if (last and net.loss == "softmax_ce")
            else TORCH_ACT[net.output_activation if last else net.activation](z)
        )
    if net.loss == "mse":
        loss = F.mse_loss(a, torch.tensor(t.T))
    else:
        loss = F.cross_entropy(a, torch.tensor(t))
    grads = torch.autograd.grad(loss, ws + bs)
    return loss.item(), [g.numpy() for g in grads[: len(ws)]], [g.numpy()[:, None] for g in grads[len(ws) :]]


def _data(loss, sizes, batch=7, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((sizes[0], batch))
    t = rng.integers(0, sizes[-1], batch) if loss == "softmax_ce" else rng.standard_normal((sizes[-1], batch))
    return x, t


@pytest.mark.parametrize(
    "loss,out_act", [("mse", "identity"), ("mse", "sigmoid"), ("softmax_ce", "identity")]
)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_delta_recursion_equals_torch_autograd(activation, loss, out_act):
    sizes = [5, 8, 6, 4]
    net = NumpyMLP(sizes, activation=activation, loss=loss, output_activation=out_act, seed=1)
    for b in net.biases:
        b += 0.1
    x, t = _data(loss, sizes)
    gw, gb = net.gradients(x, t)
    ref_loss, rw, rb = _torch_grads(net, x, t)
    assert net.loss_value(x, t) == pytest.approx(ref_loss, abs=1e-12)
    for ours, ref, w in zip(gw, rw, net.weights):
        assert ours.shape == w.shape
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)
    for ours, ref in zip(gb, rb):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)
    assert [d.shape for d in net.deltas] == [(n, x.shape[1]) for n in sizes[1:]]


@pytest.mark.parametrize("activation,loss", [("sigmoid", "mse"), ("tanh", "softmax_ce"), ("relu", "mse")])
def test_gradients_match_central_finite_differences(activation, loss):
    sizes = [3, 4, 3]
    net = NumpyMLP(sizes, activation=activation, loss=loss, seed=2)
    x, t = _data(loss, sizes, batch=5, seed=3)
    gw, gb = net.gradients(x, t)
    h = 1e-6
    for params, grads in ((net.weights, gw), (net.biases, gb)):
        for p, g in zip(params, grads):
            num = np.zeros_like(p)
            for idx in np.ndindex(p.shape):
                old = p[idx]
                p[idx] = old + h
                up = net.loss_value(x, t)
                p[idx] = old - h
                down = net.loss_value(x, t)
                p[idx] = old
                num[idx] = (up - down) / (2 * h)
            rel = np.abs(num - g).max() / max(np.abs(g).max(), 1e-12)
            assert rel < 1e-6


def test_softmax_ce_output_delta_equals_jacobian_form():
    # delta_K = J_softmax(z_K)^T dL/da_K, with dL/da_K = -t / (a_K B): the shortcut (a_K - t)/B is the same
    net = NumpyMLP([4, 5, 3], activation="tanh", loss="softmax_ce", seed=4)
    x, t = _data("softmax_ce", [4, 5, 3], batch=6)
    a = net.forward(x)
    onehot = np.eye(3)[t].T
    dl_da = -onehot / a / a.shape[1]
    jac = softmax_jacobian(torch.tensor(net.zs[-1].T)).numpy()  # [B, K, K]
    general = np.einsum("bij,ib->jb", jac, dl_da)
    np.testing.assert_allclose(net.output_delta(t), general, atol=1e-12)


def test_sgd_on_hand_backprop_lowers_the_loss():
    net = NumpyMLP([2, 8, 2], activation="tanh", loss="softmax_ce", seed=0)
    x = np.array([[0, 0, 1, 1], [0, 1, 0, 1]], dtype=float)
    t = np.array([0, 1, 1, 0])  # XOR
    losses = [net.sgd_step(x, t, lr=1.0) for _ in range(500)]
    assert losses[-1] < 0.1 * losses[0]
    assert (net.forward(x).argmax(0) == t).all()


def test_vanishing_gradient_sigmoid_vs_relu():
    sig = layer_gradient_norms("sigmoid", depth=20, init="xavier_normal")
    relu = layer_gradient_norms("relu", depth=20, init="xavier_normal")  # same init for both
    relu_he = layer_gradient_norms("relu", depth=20, init="kaiming_normal")
    assert sig.shape == (20,)
    assert sig[0] / sig[-1] < 1e-3 * (relu[0] / relu[-1])
    assert sig[0] < 1e-3 * sig[-1]
    assert 0.1 < relu_he[0] / relu_he[-1] < 10
    assert (np.diff(np.log(sig[:-1])) > 0).mean() > 0.9  # norms grow from input towards output


def test_bad_input_raises_config_error():
    with pytest.raises(ConfigError, match="activation"):
        NumpyMLP([2, 3], activation="swish7")
    with pytest.raises(ConfigError, match="loss"):
        NumpyMLP([2, 3], loss="hinge")
    net = NumpyMLP([3, 4, 2])
    with pytest.raises(ConfigError, match="columns are samples"):
        net.forward(np.zeros((5, 3)))
    with pytest.raises(ConfigError, match="call forward"):
        NumpyMLP([3, 2]).backward(np.zeros((2, 1)))
    net.forward(np.zeros((3, 5)))
    with pytest.raises(ConfigError, match="targets"):
        net.backward(np.zeros((5, 2)))
