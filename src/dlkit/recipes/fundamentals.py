"""Recipes of the fundamentals: the perceptron on logic gates, an MLP learning XOR, vanishing gradients
(Notes: 000 §1.1-1.2, §2.2; 003 §1.1-1.2, §2.4).

`perceptron-nand` (the perceptron and Hebbian rules, no gradient) and `backprop-vanishing-gradient` (a measurement
of one backward pass) are studies; `mlp-xor` trains a network through the Trainer."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import torch

from ..data.loader import TensorLoader
from ..errors import ConfigError
from ..models.classification.perceptron import Perceptron, xor_network
from ..registry import create_model
from ..report.figures import plot_decision_regions, plot_lines
from ..tasks.binary import BinaryClassificationTask
from ..tasks.optimization import OPTIMIZER_OPTIONS
from ..techniques.backprop import layer_gradient_norms
from .registry import Recipe, Setup, Study, register_recipe

GATE_INPUTS = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
GATE_TARGETS = {"nand": [1, 1, 1, 0], "and": [0, 0, 0, 1], "or": [0, 1, 1, 1], "xor": [0, 1, 1, 0]}


def _perceptron_gates(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        g = torch.Generator().manual_seed(cfg.seed)
        metrics, curves = {}, {}
        for gate, targets in GATE_TARGETS.items():
            t = torch.tensor(targets, dtype=torch.float32)
            t_conv = t if cfg.convention == "01" else 2 * t - 1  # the truth table in the convention's codes
            for rule in cfg.rules:
                p = Perceptron(2, convention=cfg.convention)
                history = p.fit(GATE_INPUTS, t_conv, rule=rule, lr=cfg.lr, max_epochs=cfg.max_epochs, generator=g)
                acc = (p(GATE_INPUTS) == t_conv).float().mean().item()
                metrics[f"{gate}/{rule}/accuracy"] = acc
                metrics[f"{gate}/{rule}/epochs"] = len(history)
                curves[f"{gate} ({rule})"] = (np.arange(1, len(history) + 1), history)
                if gate in ("nand", "xor") and rule == cfg.rules[0]:
                    plot_decision_regions(lambda a, p=p: p(torch.as_tensor(a, dtype=torch.float32)).numpy(),
                                          GATE_INPUTS, targets, run_dir / "figures" / f"{gate}_{rule}_regions.png",
                                          title=f"perceptron on {gate.upper()} ({rule} rule)")
        xor_net = xor_network()
        metrics["xor/two_layer_hand_weights/accuracy"] = (
            xor_net(GATE_INPUTS).squeeze(1) == torch.tensor(GATE_TARGETS["xor"], dtype=torch.float32)
        ).float().mean().item()
        plot_lines(curves, run_dir / "figures" / "mistakes_per_epoch.png", "epoch", "misclassified samples",
                   title="perceptron learning: NAND, AND, OR converge; XOR never does")
        metrics["test/accuracy"] = min(metrics[f"nand/{r}/accuracy"] for r in cfg.rules)
        metrics["xor/best_accuracy"] = max(metrics[f"xor/{r}/accuracy"] for r in cfg.rules)
        metrics["steps"] = sum(v for k, v in metrics.items() if k.endswith("/epochs"))
        return metrics
    return Study(run)


register_recipe(Recipe(
    name="perceptron-nand", task="fundamentals", notes="000 §1.1, 003 §1.2.1",
    description="Perceptron and Hebbian rules on NAND (also AND, OR and the impossible XOR); hand-set XOR net",
    build=_perceptron_gates, metric="test/accuracy", threshold=1.0, budget_s=5,
    study=True,
    defaults=dict(rules=["perceptron", "hebbian"], convention="01", lr=0.5, max_epochs=100),
    smoke=dict(max_epochs=20),
))


def _mlp_xor(cfg, dist):
    x, t = GATE_INPUTS, torch.tensor(GATE_TARGETS["xor"])
    data = TensorLoader(x, t, batch_size=len(x), shuffle=False)  # the four points are all there is
    # full-batch gradient descent: every step sees the four points, so the run is counted in steps (an endless
    # stream of that one batch); a 4-sample epoch would write a checkpoint after every step
    full_batch = itertools.repeat((x, t))
    kwargs = {"in_features": 2, "hidden": [cfg.hidden], "num_classes": 1, "activation": cfg.activation}
    model = create_model("mlp", **kwargs)
    task = BinaryClassificationTask(model, cfg, title=f"2-{cfg.hidden}-1 MLP ({cfg.activation}) on XOR: P(y=1)")
    spec = {"name": "mlp", "kwargs": kwargs, "class_names": ["0", "1"], "input": None}
    return Setup(task, full_batch, data, data, val_name="test", model_spec=spec)


register_recipe(Recipe(
    name="mlp-xor", task="fundamentals", notes="000 §1.2, 003 §1.2, 003 §2.2.1.1",
    description="A 2-4-1 MLP (sigmoid output, binary cross-entropy) learns XOR by full-batch gradient descent, "
                "which no single perceptron can represent",
    build=_mlp_xor, metric="test/accuracy", threshold=1.0, budget_s=15,
    defaults=dict(OPTIMIZER_OPTIONS, hidden=4, activation="tanh", optimizer="sgd", lr=0.5, momentum=0.9,
                  max_steps=500, eval_every_steps=50, log_every=10, threads=1),  # one thread: the tensors are tiny
    smoke=dict(max_steps=20, eval_every_steps=10),
    types={"threads": "int | None", "eval_every_steps": "int | None"},
))


def _vanishing_gradient(cfg, dist):
    acts = list(cfg.activations)
    if len(acts) != len(cfg.inits) or len(set(acts)) < len(acts) or not {"sigmoid", "relu"} <= set(acts):
        raise ConfigError(f"activations and inits pair up, one init per activation, each activation once (its curve "
                          f"and metric are named by it), sigmoid and relu among them (the result compares the two); "
                          f"got activations={acts}, inits={list(cfg.inits)}")

    def run(run_dir: Path) -> dict[str, float]:
        norms = {}
        for act, init in zip(cfg.activations, cfg.inits):
            norms[f"{act} ({init})"] = layer_gradient_norms(act, depth=cfg.depth, width=cfg.width, batch=cfg.batch,
                                                            init=init, seed=cfg.seed)
        layers = np.arange(1, cfg.depth + 1)
        plot_lines({k: (layers, v) for k, v in norms.items()}, run_dir / "figures" / "gradient_norms_per_layer.png",
                   "layer (1 = next to the input)", "||dL/dW_l||", logy=True,
                   title=f"vanishing gradients in a {cfg.depth}-layer MLP")
        (run_dir / "gradient_norms.json").write_text(json.dumps({k: v.tolist() for k, v in norms.items()}))
        metrics = {}
        for key, v in norms.items():
            act = key.split(" ")[0]
            metrics[f"{act}/first_over_last"] = float(v[0] / v[-1])
        # the notes' claim: through sigmoid layers the first layer's gradient is orders of magnitude smaller
        # (relative to the last layer's) than through ReLU layers
        metrics["test/orders_of_magnitude"] = float(np.log10(metrics["relu/first_over_last"])
                                                    - np.log10(metrics["sigmoid/first_over_last"]))
        metrics["steps"] = len(norms)  # one backward pass per network
        return metrics
    return Study(run)


register_recipe(Recipe(
    name="backprop-vanishing-gradient", task="fundamentals", notes="000 §2.2, 003 §2.4",
    description="Per-layer gradient norms (by-hand backprop) of a deep sigmoid MLP against a ReLU MLP",
    build=_vanishing_gradient, metric="test/orders_of_magnitude", threshold=6.0, budget_s=10,
    study=True,
    defaults=dict(activations=["sigmoid", "relu", "tanh"], inits=["xavier_normal", "kaiming_normal", "xavier_normal"],
                  depth=20, width=64, batch=128),
    smoke=dict(depth=8, width=16, batch=16),
))
