"""Multi-layer perceptron (Notes: 000 §1.2, §1.2.1).

An MLP composes dense layers a_l = sigma(W_l a_{l-1} + b_l). The notes call it shallow with
exactly one hidden layer and deep with more than one. A dense layer has S_in * S_out + S_out
parameters and about S_in * S_out multiply-adds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.activations import get_activation
from ...nn.conv_arithmetic import dense_flops, dense_params
from ...registry import register_model
from ..backbone import Backbone, FeatureInfo, named_steps


class MLP(Backbone):
    """Dense layers with an activation between them; input is flattened from dim 1 on.

    `hidden` lists the hidden widths (empty: a linear model). Options: dropout after each hidden
    activation, batch normalisation before it.

    Backbone contract (vectors, not maps): a stage per hidden layer, its output after the activation (and dropout),
    `num_chs` its width and `reduction` 1 (a linear model: the flattened input); the classifier is the last dense
    layer, and pre-logits are the last hidden layer's outputs.
    """

    head_modules = ()

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, activation: str = "relu",
                 dropout: float = 0.0, batchnorm: bool = False):
        super().__init__()
        if in_features < 1 or num_classes < 1 or any(h < 1 for h in hidden):
            raise ConfigError(f"MLP widths must be positive; got in_features={in_features}, hidden={list(hidden)}, "
                              f"num_classes={num_classes}")
        self.in_features, self.widths = in_features, [in_features, *hidden, num_classes]
        self.default_input_shape = (in_features,)
        layers: list[nn.Module] = [nn.Flatten()]
        for s_in, s_out in zip(self.widths[:-2], self.widths[1:-1]):
            layers.append(nn.Linear(s_in, s_out))
            if batchnorm:
                layers.append(nn.BatchNorm1d(s_out))
            layers.append(get_activation(activation))
            if dropout:
                layers.append(nn.Dropout(dropout))
        after = 1 + bool(batchnorm) + bool(dropout)  # a hidden layer's output: its activation or dropout
        info = [FeatureInfo.entry(f"layers.{i + after}", m.out_features, 1) for i, m in enumerate(layers)
                if isinstance(m, nn.Linear)] or [FeatureInfo.entry("layers.0", in_features, 1)]
        layers.append(nn.Linear(self.widths[-2], self.widths[-1]))
        self.layers = nn.Sequential(*layers)
        self.classifier_name = f"layers.{len(layers) - 1}"
        self.feature_info = FeatureInfo(info)

    @property
    def num_hidden_layers(self) -> int:
        return len(self.widths) - 2

    @property
    def is_deep(self) -> bool:
        """Deep means more than one hidden layer; one hidden layer is shallow (Notes: 000 §1.2)."""
        return self.num_hidden_layers > 1

    def num_params_formula(self) -> int:
        """Parameter count by the notes' formula (without batch-norm parameters)."""
        return sum(dense_params(a, b) for a, b in zip(self.widths[:-1], self.widths[1:]))

    def flops_formula(self) -> int:
        """Multiply-adds per sample by the notes' formula."""
        return sum(dense_flops(a, b) for a, b in zip(self.widths[:-1], self.widths[1:]))

    def check_input(self, x: torch.Tensor) -> None:
        """in_features values per sample (any shape after dim 0)."""
        if x[0].numel() != self.in_features:
            raise ConfigError(f"MLP expects {self.in_features} features per sample; got input of shape "
                              f"{tuple(x.shape)} ({x[0].numel()} per sample)")

    def feature_path(self):
        return named_steps("layers", self.layers, len(self.layers) - 1)

    def head_path(self):
        return []


@register_model(input_size=(784,), num_params=235_146, params_source="by hand: 200,960 + 32,896 + 1,290")
def mlp(in_features: int = 784, hidden: Sequence[int] = (256, 128), num_classes: int = 10, **kw) -> MLP:
    """A generic MLP (default 784-256-128-10, for 28x28 images). Notes: 000 §1.2."""
    return MLP(in_features, hidden, num_classes, **kw)


@register_model(input_size=(64,), num_params=17_226, params_source="by hand: 8,320 + 8,256 + 650")
def mlp_digits(num_classes: int = 10, **kw) -> MLP:
    """MLP for scikit-learn's 8x8 digits: 64-128-64-10. Notes: 000 §1.2."""
    return MLP(64, kw.pop("hidden", (128, 64)), num_classes, **kw)
