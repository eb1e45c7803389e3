"""Recipes on optimisation: optimizer paths on 2-D functions, an optimizer race on Fashion-MNIST, and
full-batch vs mini-batch vs online gradient descent (Notes: 002 §1, 000 §2.1, 003 §2.2)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.digits import load_digits_split
from ..data.mnist import load_fashion_mnist
from ..data.transforms import normalise_images
from ..engine.gradient_step import gradient_step
from ..errors import ConfigError
from ..optim import create_optimizer
from ..registry import create_model
from ..report.figures import plot_lines, plot_paths_on_contour
from ..techniques.gradient_descent import gradient_descent
from ..techniques.optimizer_paths import FUNCTIONS, distance_to_minimum, trajectory
from .registry import Recipe, Study, register_recipe

# each optimizer runs at the learning rate of LR_GRID that ends lowest on the function (a fair race)
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)
PATH_RUNS = (("sgd", {}), ("momentum", {"momentum": 0.9}), ("nesterov", {"momentum": 0.9}), ("adagrad", {}),
             ("rmsprop", {}), ("adam", {}))
PATH_VIEWS = {"canyon": ((-1.0, 2.5), (-1.3, 1.3), (-1.0, 3.0)), "rosenbrock": ((-1.5, 2.0), (-2.0, 2.0), (-1.0, 3.0))}


def best_lr_trajectory(name: str, options: dict, function: str, start, steps: int, noise: float, seed: int):
    """(lr, path) of the grid learning rate whose last iterate has the lowest function value."""
    f, best = FUNCTIONS[function][0], None
    for lr in LR_GRID:
        try:
            p = trajectory("sgd" if name == "momentum" else name, function, start, steps, lr, noise=noise,
                           seed=seed, **options)
        except ConfigError:  # diverged: too large a step for this optimizer
            continue
        value = float(f(p[-1]))
        if best is None or value < best[0]:
            best = (value, lr, p)
    return best[1], best[2]


def _optimizer_paths(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        metrics = {}
        for fname, (start, xlim, ylim) in PATH_VIEWS.items():
            f = FUNCTIONS[fname][0]
            steps = cfg.steps[fname]
            paths = {}
            for name, options in PATH_RUNS:
                lr, p = best_lr_trajectory(name, options, fname, start, steps, cfg.noise, cfg.seed)
                paths[f"{name} (lr {lr:g})"] = p.numpy()
                metrics[f"{fname}/{name}/loss"] = float(f(p[-1]))
                metrics[f"{fname}/{name}/distance"] = distance_to_minimum(p, fname)
                metrics[f"{fname}/{name}/lr"] = lr
            plot_paths_on_contour(lambda a, f=f: f(torch.as_tensor(a)).numpy(), paths,
                                  run_dir / "figures" / f"paths_{fname}.png", xlim, ylim,
                                  title=f"{steps} steps on the {fname} (best lr of a grid each)",
                                  minimum=FUNCTIONS[fname][1])
        metrics["steps"] = sum(cfg.steps.values()) * len(PATH_RUNS) * len(LR_GRID)
        # 002 §1.3: momentum converges before SGD in a canyon (ratio of final losses; lower is better)
        metrics["test/momentum_over_sgd_canyon"] = metrics["canyon/momentum/loss"] / metrics["canyon/sgd/loss"]
        return metrics
    return Study(run)


register_recipe(Recipe(
    name="optimizer-paths-2d", task="optimisation", notes="002 §1.1-1.4, 000 §2.3",
    description="SGD, momentum, Nesterov, AdaGrad, RMSProp and Adam on an ill-conditioned quadratic and Rosenbrock",
    build=_optimizer_paths, metric="test/momentum_over_sgd_canyon", threshold=0.1, higher_is_better=False,
    study=True,
    budget_s=30, defaults=dict(steps={"canyon": 40, "rosenbrock": 400}, noise=0.0),
    smoke=dict(steps={"canyon": 10, "rosenbrock": 20}),
))


def _optimizer_race(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        x_tr, y_tr = load_fashion_mnist("train", data_dir=cfg.data_dir)
        x_te, y_te = load_fashion_mnist("test", data_dir=cfg.data_dir)
        if cfg.subset:
            x_tr, y_tr, x_te, y_te = x_tr[: cfg.subset], y_tr[: cfg.subset], x_te[: cfg.subset], y_te[: cfg.subset]
        x_tr = normalise_images(x_tr, 0.2860, 0.3530).flatten(1)
        x_te = normalise_images(x_te, 0.2860, 0.3530).flatten(1)
        curves, metrics, steps = {}, {}, 0
        for spec in cfg.optimizers:
            name, lr = spec.split(":")
            torch.manual_seed(cfg.seed)
            model = create_model("mlp", hidden=cfg.hidden)
            momentum = 0.9 if name in ("momentum", "nesterov") else 0.0
            opt = create_optimizer("sgd" if name == "momentum" else name, model.parameters(), lr=float(lr),
                                   momentum=momentum)
            g = torch.Generator().manual_seed(cfg.seed)
            losses, t0 = [], time.perf_counter()
            for _ in range(cfg.epochs):
                for idx in torch.randperm(len(x_tr), generator=g).split(cfg.batch_size):
                    losses.append(gradient_step(F.cross_entropy(model(x_tr[idx]), y_tr[idx]), opt).item())
                    steps += 1
            label = name
            with torch.no_grad():
                acc = (model(x_te).argmax(1) == y_te).float().mean().item()
            metrics[f"{label}/test_accuracy"] = acc
            metrics[f"{label}/seconds"] = time.perf_counter() - t0
            k = max(1, len(losses) // 100)  # running mean over ~1% of the run
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            curves[f"{label} (lr {lr}): {acc:.3f}"] = (np.arange(len(smooth)) + k, smooth)
        plot_lines(curves, run_dir / "figures" / "optimizer_race_loss.png", "step", "training loss (running mean)",
                   title=f"the same MLP, {cfg.epochs} epoch(s) of Fashion-MNIST per optimizer", logy=True)
        metrics["test/best_accuracy"] = max(v for k, v in metrics.items() if k.endswith("/test_accuracy"))
        metrics["steps"] = steps
        return metrics
    return Study(run)


register_recipe(Recipe(
    name="optimizer-race-fashion", task="optimisation", notes="002 §1, 003 §2.2",
    description="The same MLP trained with SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam, AdamW on Fashion-MNIST",
    build=_optimizer_race, metric="test/best_accuracy", threshold=0.85, budget_s=120,
    study=True,
    defaults=dict(optimizers=["sgd:0.05", "momentum:0.05", "nesterov:0.05", "adagrad:0.05", "rmsprop:0.001",
                              "adam:0.001", "adamw:0.001", "amsgrad:0.001"],
                  epochs=2, batch_size=128, hidden=[256, 128], subset=0),
    smoke=dict(epochs=1, subset=512), datasets=("fashion-mnist",),
))


def _gd_batch_sizes(cfg, dist):
    def run(run_dir: Path) -> dict[str, float]:
        x_tr, y_tr, x_te, y_te = load_digits_split(test_size=0.2, seed=0)
        if cfg.subset:
            x_tr, y_tr = x_tr[: cfg.subset], y_tr[: cfg.subset]
        by_epoch, by_time, metrics, steps = {}, {}, {}, 0
        for spec in cfg.modes:
            b, lr = spec.split(":")
            batch = len(x_tr) if b == "full" else int(b)
            torch.manual_seed(cfg.seed)
            model = torch.nn.Linear(x_tr.shape[1], 10)  # softmax regression: the same convex problem for all
            hist = gradient_descent(model, F.cross_entropy, x_tr, y_tr, batch_size=batch, lr=float(lr),
                                    epochs=cfg.epochs, generator=torch.Generator().manual_seed(cfg.seed))
            label = f"{hist.mode} (B={batch}, lr {lr})"
            by_epoch[label] = (np.arange(len(hist.loss)), hist.loss)
            by_time[label] = (np.asarray(hist.time), hist.loss)
            with torch.no_grad():
                acc = (model(x_te).argmax(1) == y_te).float().mean().item()
            metrics[f"{hist.mode}/train_loss"] = hist.loss[-1]
            metrics[f"{hist.mode}/test_accuracy"] = acc
            metrics[f"{hist.mode}/seconds"] = hist.time[-1]
            metrics[f"{hist.mode}/updates"] = hist.steps
            steps += hist.steps
        figs = run_dir / "figures"
        plot_lines(by_epoch, figs / "loss_vs_epoch.png", "epoch", "training loss", logy=True,
                   title="full-batch vs mini-batch vs online gradient descent")
        plot_lines(by_time, figs / "loss_vs_time.png", "seconds of updates", "training loss", logy=True,
                   title="the same runs against wall time")
        metrics["test/accuracy"] = metrics["mini-batch/test_accuracy"]
        metrics["steps"] = steps
        return metrics
    return Study(run)


register_recipe(Recipe(
    name="gd-batch-sizes", task="optimisation", notes="002 §1.1, 000 §2.1, 003 §2.2",
    description="Softmax regression on 8x8 digits by full-batch, mini-batch (B=32) and online (B=1) gradient descent",
    build=_gd_batch_sizes, metric="test/accuracy", threshold=0.93, budget_s=60,
    study=True,
    defaults=dict(modes=["full:0.5", "32:0.1", "1:0.005"], epochs=30, subset=0),
    smoke=dict(epochs=2, subset=200),
))
