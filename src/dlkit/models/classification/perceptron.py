"""The perceptron, its learning rules, and a two-layer step network for XOR.

Notes: 000 §1.1-1.2, 003 §1.1-1.2.1.

A perceptron thresholds a linear combination: y = step(w . x + b). The notes use two conventions:
000 §1.1 outputs {0, 1} with y = 1 iff w . x + b >= 0 (a point on the hyperplane gives 1); 003 §1.1
outputs {-1, +1} with y = +1 iff w . x + b > 0 (a point on the hyperplane gives -1). Both are
`convention='01'` and `convention='pm1'` here.

Learning (003 §1.2.1), online and only on misclassified samples: the Hebbian rule
Delta w = eta x t with t in {-1, +1} (for the {0, 1} convention the target is recoded t' = 2t - 1),
and the perceptron rule Delta w = eta (t - y) x. On a misclassified sample t - y equals 2t' in
{-1, +1} coding and t' in {0, 1} coding, so both rules move w the same way. A single perceptron
represents NAND, AND, OR but not XOR (000 §1.1); two layers of them do: XOR = AND(OR, NAND).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...errors import ConfigError

CONVENTIONS = ("01", "pm1")
RULES = ("perceptron", "hebbian")


def step(z: Tensor, convention: str = "01") -> Tensor:
    """Threshold activation: '01' -> 1 if z >= 0 else 0 (000 §1.1); 'pm1' -> 1 if z > 0 else -1 (003 §1.1)."""
    if convention == "01":
        return (z >= 0).to(z.dtype if z.is_floating_point() else torch.float32)
    if convention == "pm1":
        one = torch.ones_like(z, dtype=z.dtype if z.is_floating_point() else torch.float32)
        return torch.where(z > 0, one, -one)
    raise ConfigError(f"convention must be one of {CONVENTIONS}; got {convention!r}")


class Perceptron(nn.Module):
    """A binary threshold unit y = step(w . x + b). Notes: 000 §1.1, 003 §1.1.

    The bias can be folded into the weights as w_0 with x_0 = 1 (`folded_weight`). Weights are not
    trained by gradient (the step has zero derivative) but by `fit`, so they do not require grad.
    """

    def __init__(
        self,
        in_features: int,
        convention: str = "01",
        weight: Tensor | None = None,
        bias: float | Tensor = 0.0,
    ):
        super().__init__()
        if convention not in CONVENTIONS:
            raise ConfigError(f"convention must be one of {CONVENTIONS}; got {convention!r}")
        if in_features < 1:
            raise ConfigError(f"in_features must be positive; got {in_features}")
        self.in_features, self.convention = in_features, convention
        w = (
            torch.zeros(in_features)
            if weight is None
            else torch.as_tensor(weight, dtype=torch.float32).clone()
        )
        if w.shape != (in_features,):
            raise ConfigError(f"weight must have shape ({in_features},); got {tuple(w.shape)}")
        self.weight = nn.Parameter(w, requires_grad=False)
        self.bias = nn.Parameter(
            torch.as_tensor(bias, dtype=torch.float32).clone().reshape(()), requires_grad=False
        )

    def net_input(self, x: Tensor) -> Tensor:
        """The pre-activation w . x + b for x of shape [N, in_features] (or [in_features])."""
        x = torch.as_tensor(x, dtype=self.weight.dtype)
        if x.shape[-1] != self.in_features:
            raise ConfigError(
                f"Perceptron expects inputs [N, {self.in_features}]; got shape {tuple(x.shape)}"
            )
        return x @ self.weight + self.bias

    def forward(self, x: Tensor) -> Tensor:
        return step(self.net_input(x), self.convention)

    @property
    def folded_weight(self) -> Tensor:
        """[b, w_1, ..., w_n]: the bias as weight w_0 for an input x_0 = 1 (003 §1.1)."""
        return torch.cat([self.bias.reshape(1), self.weight])

    def _targets(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=self.weight.dtype)
        allowed = (0.0, 1.0) if self.convention == "01" else (-1.0, 1.0)
        if not ((t == allowed[0]) | (t == allowed[1])).all():
            raise ConfigError(
                f"targets for convention '{self.convention}' must be in {allowed}; got values "
                f"{sorted(set(t.tolist()))}"
            )
        return t

    def fit(
        self,
        x: Tensor,
        t: Tensor,
        rule: str = "perceptron",
        lr: float = 1.0,
        max_epochs: int = 100,
        generator: torch.Generator | None = None,
        shuffle: bool = True,
        init: str = "random",
    ) -> list[int]:
        """Online training, updating only on misclassified samples; returns the mistakes per epoch.

        Notes: 003 §1.2.1. rule='hebbian': Delta w = lr x t (t recoded to {-1, +1}); rule='perceptron':
        Delta w = lr (t - y) x. The bias is updated as a weight with input 1. Stops after an epoch with no
        mistakes or after `max_epochs`. init='random' draws w, b ~ N(0, 1) ("starting from a random
        initialisation"); init='keep' starts from the current weights.
        """
        if rule not in RULES:
            raise ConfigError(f"rule must be one of {RULES}; got {rule!r}")
        if init not in ("random", "keep"):
            raise ConfigError(f"init must be 'random' or 'keep'; got {init!r}")
        x = torch.as_tensor(x, dtype=self.weight.dtype)
        t = self._targets(t)
        if x.dim() != 2 or x.shape != (t.shape[0], self.in_features):
            raise ConfigError(
                f"fit expects x [N, {self.in_features}] and t [N]; got {tuple(x.shape)} and {tuple(t.shape)}"
            )
        with torch.no_grad():
            if init == "random":
                self.weight.copy_(torch.randn(self.in_features, generator=generator))
                self.bias.copy_(torch.randn((), generator=generator))
            history = []
            for _ in range(max_epochs):
                order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
                mistakes = 0
                for i in order.tolist():
                    y = self(x[i])
                    if y == t[i]:
                        continue
                    mistakes += 1
                    if rule == "hebbian":
                        coef = lr * (2 * t[i] - 1 if self.convention == "01" else t[i])
                    else:
                        coef = lr * (t[i] - y)
                    self.weight += coef * x[i]
                    self.bias += coef
                history.append(mistakes)
                if mistakes == 0:
                    break
        return history

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, convention={self.convention!r}"


_GATES = {  # (w, b) in the {0, 1} convention; NAND uses the weights suggested in the spec
    "and": ([1.0, 1.0], -1.5),
    "or": ([1.0, 1.0], -0.5),
    "nand": ([-2.0, -2.0], 3.0),
    "nor": ([-1.0, -1.0], 0.5),
}


def logic_gate(name: str, convention: str = "01") -> Perceptron:
    """A perceptron with hand-set weights for a 2-input gate ('and', 'or', 'nand', 'nor'). Notes: 000 §1.1."""
    if name not in _GATES:
        raise ConfigError(
            f"unknown gate {name!r}; expected one of {sorted(_GATES)} (XOR needs two layers: "
            "use xor_network())"
        )
    w, b = _GATES[name]
    return Perceptron(2, convention, torch.tensor(w), b)


class StepNetwork(nn.Module):
    """Layers of perceptrons: a_l = step(W_l a_{l-1} + b_l) in the {0, 1} convention. Notes: 000 §1.2."""

    def __init__(self, layers: list[tuple[Tensor, Tensor]]):
        super().__init__()
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.as_tensor(w, dtype=torch.float32), requires_grad=False) for w, _ in layers]
        )
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.as_tensor(b, dtype=torch.float32), requires_grad=False) for _, b in layers]
        )

    @property
    def num_hidden_layers(self) -> int:
        return len(self.weights) - 1

    def forward(self, x: Tensor) -> Tensor:
        a = torch.as_tensor(x, dtype=torch.float32)
        for w, b in zip(self.weights, self.biases):
            a = step(a @ w.T + b, "01")
        return a


def xor_network() -> StepNetwork:
    """Two-layer step network with hand-set weights for XOR. Notes: 000 §1.2.

    XOR(x1, x2) = AND(OR(x1, x2), NAND(x1, x2)).
    """
    (w_or, b_or), (w_nand, b_nand), (w_and, b_and) = _GATES["or"], _GATES["nand"], _GATES["and"]
    hidden = (torch.tensor([w_or, w_nand]), torch.tensor([b_or, b_nand]))
    out = (torch.tensor([w_and]), torch.tensor([b_and]))
    return StepNetwork([hidden, out])
