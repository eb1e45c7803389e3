"""Backpropagation by hand: a NumPy MLP whose backward pass is the notes' delta recursion (Notes: 000 §2.2).

Forward (a_0 = x):  z_l = W_l a_{l-1} + b_l,  a_l = sigma_l(z_l),  W_l in R^{n_l x n_{l-1}}.
Backward:           delta_K = dL/da_K (.) sigma_K'(z_K)
                    delta_l = (W_{l+1}^T delta_{l+1}) (.) sigma_l'(z_l)
                    dL/dW_l = delta_l a_{l-1}^T,   dL/db_l = delta_l (summed over the batch).
The notes write a_l = sigma(W_l^T a_{l-1} + b_l) and delta_l = delta_{l+1}^T W_{l+1}, which contradict the
stated shape of W_l; the shapes above are the consistent (corrected) ones.

Batches are COLUMNS, as in the notes' column-vector equations: X has shape [n_0, B], targets [n_K, B] (or
class indices [B] for cross-entropy), and the deltas are [n_l, B]. The loss is averaged over the batch:
'mse' is mean((a_K - t)^2) over all entries (torch's F.mse_loss), 'softmax_ce' is the mean over samples of
-sum_k t_k log softmax(z_K)_k (F.cross_entropy), whose delta_K simplifies to (softmax(z_K) - t) / B.
Activations and their derivatives come from `dlkit.nn.activations`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..nn import activations as A
from ..nn import init as I

HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "silu", "softplus", "identity")
LOSSES = ("mse", "softmax_ce")


def _act(name: str):
    fn = {
        "sigmoid": A.sigmoid,
        "tanh": A.tanh,
        "relu": A.relu,
        "leaky_relu": A.leaky_relu,
        "elu": A.elu,
        "gelu": A.gelu,
        "silu": A.silu,
        "softplus": A.softplus,
        "identity": A.identity,
    }[name]
    dfn = A.get_derivative(name)
    return (lambda z: fn(torch.from_numpy(z)).numpy()), (lambda z: dfn(torch.from_numpy(z)).numpy())


def _softmax_columns(z: np.ndarray) -> np.ndarray:
    return A.softmax(torch.from_numpy(z), dim=0).numpy()


class NumpyMLP:
    """A dense network in NumPy with a hand-written backward pass (delta recursion). Notes: 000 §2.2.

    sizes = [n_0, n_1, ..., n_K]; `activation` is used in every hidden layer; `loss` is 'mse' (with
    `output_activation`, default identity) or 'softmax_ce' (softmax output + cross-entropy). `init` names
    a `dlkit.nn.init` initializer for the weights (default: Xavier for sigmoid/tanh, He otherwise);
    biases start at zero.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "sigmoid",
        loss: str = "mse",
        output_activation: str = "identity",
        init: str | None = None,
        seed: int = 0,
        dtype: type = np.float64,
    ):
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ConfigError(
                f"sizes must list at least 2 positive widths [n_0, ..., n_K]; got {list(sizes)}"
            )
        for what, name in (("activation", activation), ("output_activation", output_activation)):
            if name not in HIDDEN_ACTIVATIONS:
                raise ConfigError(f"{what} must be one of {HIDDEN_ACTIVATIONS}; got {name!r}")
        if loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}; got {loss!r}")
        self.sizes, self.activation, self.loss = [int(s) for s in sizes], activation, loss
        self.output_activation = output_activation
        self._hidden = _act(activation)
        self._out = _act(output_activation)
        if init is None:
            init = "xavier_normal" if activation in ("sigmoid", "tanh", "identity") else "kaiming_normal"
        init_fn = I.get_initializer(init)
        g = torch.Generator().manual_seed(seed)
        self.weights = [
            init_fn(torch.empty(n_out, n_in, dtype=torch.float64), generator=g).numpy().astype(dtype)
            for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:])
        ]
        self.biases = [np.zeros((n_out, 1), dtype=dtype) for n_out in self.sizes[1:]]
        self.zs: list[np.ndarray] = []
        self.activations: list[np.ndarray] = []
        self.deltas: list[np.ndarray] = []

    @property
    def num_layers(self) -> int:
        """K, the number of weight layers."""
        return len(self.weights)

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] != self.sizes[0]:
            raise ConfigError(
                f"input must be [n_0={self.sizes[0]}, batch] (columns are samples); got shape "
                f"{x.shape}. Transpose a [batch, features] array with x.T."
            )
        return x

    def forward(self, x: np.ndarray) -> np.ndarray:
        """a_K for inputs x [n_0, B]; caches every z_l and a_l for the backward pass."""
        a = self._check_x(x)
        self.zs, self.activations = [], [a]
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = w @ a + b
            last = l == self.num_layers - 1
            if last and self.loss == "softmax_ce":
                a = _softmax_columns(z)
            else:
                a = (self._out if last else self._hidden)[0](z)
            self.zs.append(z)
            self.activations.append(a)
        return a

    def _targets(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t)
        n_k, batch = self.sizes[-1], self.activations[0].shape[1]
        if self.loss == "softmax_ce" and t.ndim == 1 and np.issubdtype(t.dtype, np.integer):
            if t.shape != (batch,) or t.min() < 0 or t.max() >= n_k:
                raise ConfigError(
                    f"class-index targets must be [B={batch}] in [0, {n_k - 1}]; got shape {t.shape}"
                )
            onehot = np.zeros((n_k, batch), dtype=self.zs[-1].dtype)
            onehot[t, np.arange(batch)] = 1.0
            return onehot
        if t.ndim == 1:
            t = t[:, None]
        if t.shape != (n_k, batch):
            raise ConfigError(f"targets must be [n_K={n_k}, B={batch}] (columns are samples); got {t.shape}")
        return t

    def loss_value(self, x: np.ndarray, t: np.ndarray) -> float:
        """The batch-averaged loss at inputs x and targets t (runs forward)."""
        a = self.forward(x)
        t = self._targets(t)
        if self.loss == "mse":
            return float(np.mean((a - t) ** 2))
        logp = A.log_softmax(torch.from_numpy(self.zs[-1]), dim=0).numpy()
        return float(-(t * logp).sum() / a.shape[1])

    def output_delta(self, t: np.ndarray) -> np.ndarray:
        """delta_K = dL/da_K (.) sigma_K'(z_K); for softmax + CE it is (softmax(z_K) - t) / B."""
        t = self._targets(t)
        a_k, z_k = self.activations[-1], self.zs[-1]
        if self.loss == "mse":
            return 2.0 * (a_k - t) / a_k.size * self._out[1](z_k)
        return (a_k - t) / a_k.shape[1]

    def backward(self, t: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(dL/dW_l, dL/db_l) for l = 1..K by the delta recursion; call after `forward`. Caches the deltas."""
        if not self.zs:
            raise ConfigError("backward needs the cached forward pass: call forward(x) first")
        delta = self.output_delta(t)
        deltas = [delta]
        for l in range(self.num_layers - 2, -1, -1):  # hidden layers, last to first
            delta = (self.weights[l + 1].T @ delta) * self._hidden[1](self.zs[l])
            deltas.append(delta)
        self.deltas = deltas[::-1]
        grads_w = [d @ a_prev.T for d, a_prev in zip(self.deltas, self.activations[:-1])]
        grads_b = [d.sum(axis=1, keepdims=True) for d in self.deltas]
        return grads_w, grads_b

    def gradients(self, x: np.ndarray, t: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Forward then backward: the gradients of the batch loss."""
        self.forward(x)
        return self.backward(t)

    def sgd_step(self, x: np.ndarray, t: np.ndarray, lr: float) -> float:
        """One descent step w <- w - lr dL/dw; returns the loss before it.

        Notes: 000 §2.1 (the notes print +lr; descent is the corrected sign).
        """
        loss = self.loss_value(x, t)
        gw, gb = self.backward(t)
        for w, b, dw, db in zip(self.weights, self.biases, gw, gb):
            w -= lr * dw
            b -= lr * db
        return loss


def layer_gradient_norms(
    activation: str = "sigmoid",
    depth: int = 20,
    width: int = 32,
    batch: int = 64,
    init: str | None = None,
    seed: int = 0,
) -> np.ndarray:
    """||dL/dW_l||_F for l = 1..depth of a deep MLP on random data (MSE loss). Notes: 000 §2.2, 003 §2.4.

    The vanishing-gradient figure: with sigmoid (sigma' <= 1/4) the norms shrink towards the input layer
    geometrically; with ReLU (derivative 1 where active) they stay of the same order.
    """
    if depth < 1:
        raise ConfigError(f"depth must be >= 1; got {depth}")
    rng = np.random.default_rng(seed)
    net = NumpyMLP([width] * (depth + 1), activation=activation, init=init, seed=seed)
    x = rng.standard_normal((width, batch))
    t = rng.standard_normal((width, batch))
    grads_w, _ = net.gradients(x, t)
    return np.array([np.linalg.norm(g) for g in grads_w])
