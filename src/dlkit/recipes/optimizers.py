"""Recipes on optimisation: optimizer paths on 2-D functions, an optimizer race on Fashion-MNIST, and
full-batch vs mini-batch vs online gradient descent (Notes: 002 §1, 000 §2.1, 003 §2.2)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..data.digits import load_digits_split
from ..data.loader import TensorLoader
from ..data.mnist import load_fashion_mnist
from ..data.transforms import normalise_images
from ..engine.callbacks import LambdaCallback
from ..engine.trainer import fit
from ..errors import ConfigError
from ..registry import create_model
from ..report.figures import plot_lines, plot_paths_on_contour
from ..tasks.classification import ClassificationTask
from ..techniques.gradient_descent import GDHistory, GDHistoryRecorder, batching_mode
from ..techniques.optimizer_paths import FUNCTIONS, LR_GRID, best_lr_trajectory, distance_to_minimum
from .options import trainer_config
from .registry import Recipe, Study, register_recipe

PATH_RUNS = (("sgd", {}), ("momentum", {"momentum": 0.9}), ("nesterov", {"momentum": 0.9}), ("adagrad", {}),
             ("rmsprop", {}), ("adam", {}))
PATH_VIEWS = {"canyon": ((-1.0, 2.5), (-1.3, 1.3), (-1.0, 3.0)), "rosenbrock": ((-1.5, 2.0), (-2.0, 2.0), (-1.0, 3.0))}


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


def _optimizer(spec: str, fused: bool) -> tuple[str, SimpleNamespace]:
    """'name:lr' or 'name:lr:weight_decay' as (label, the options `tasks.optimization.build_optimizers` reads)."""
    parts = spec.split(":")
    try:
        name, lr, wd = parts[0], float(parts[1]), float(parts[2]) if len(parts) == 3 else 0.0
        if len(parts) > 3:
            raise ValueError
    except (IndexError, ValueError):
        raise ConfigError(f"optimizers: each entry is 'name:lr' or 'name:lr:weight_decay', e.g. 'adamw:0.001:0.1'; "
                          f"got {spec!r}") from None
    momentum = 0.9 if name in ("momentum", "nesterov") else 0.0
    label = f"{name} (lr {parts[1]}" + (f", wd {parts[2]})" if wd else ")")
    return label, SimpleNamespace(optimizer="sgd" if name == "momentum" else name, lr=lr, weight_decay=wd,
                                  momentum=momentum, fused=fused, schedule="none", warmup_steps=-1)


def _optimizer_race(cfg, dist):
    entries = [_optimizer(spec, cfg.fused) for spec in cfg.optimizers]  # bad entries refused before anything runs
    names = [spec.split(":")[0] for spec in cfg.optimizers]
    keys = [n if names.count(n) == 1 else spec for n, spec in zip(names, cfg.optimizers)]  # metric names

    def run(run_dir: Path) -> dict[str, float]:
        x_tr, y_tr = load_fashion_mnist("train", data_dir=cfg.data_dir)
        x_te, y_te = load_fashion_mnist("test", data_dir=cfg.data_dir)
        if cfg.subset:
            x_tr, y_tr, x_te, y_te = x_tr[: cfg.subset], y_tr[: cfg.subset], x_te[: cfg.subset], y_te[: cfg.subset]
        x_tr = normalise_images(x_tr, 0.2860, 0.3530).flatten(1)
        x_te = normalise_images(x_te, 0.2860, 0.3530).flatten(1)
        train = TensorLoader(x_tr, y_tr, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
        test = TensorLoader(x_te, y_te, batch_size=1000, shuffle=False)
        tc = trainer_config(cfg, epochs=cfg.epochs, eval_every_epochs=None, progress=False, tensorboard=False,
                            checkpoint_every_minutes=None)
        curves, norms, metrics, steps = {}, {}, {}, 0
        for name, (label, options) in zip(keys, entries):
            torch.manual_seed(cfg.seed)  # the same initial weights and data order for every optimizer
            model = create_model("mlp", hidden=cfg.hidden)
            losses, weight_norms = [], []

            def record(trainer, out, losses=losses, weight_norms=weight_norms):
                losses.append(out["loss"].detach())
                weight_norms.append(torch.nn.utils.get_total_norm(trainer.model.parameters()).detach())

            result = fit(ClassificationTask(model, options), train, test, tc, [LambdaCallback(on_step_end=record)])
            acc, steps = result.metrics["val/accuracy"], steps + result.steps
            losses, weight_norms = torch.stack(losses).float().numpy(), torch.stack(weight_norms).float().numpy()
            metrics.update({f"{name}/test_accuracy": acc, f"{name}/test_loss": result.metrics["val/loss"],
                            f"{name}/seconds": result.seconds, f"{name}/weight_norm": float(weight_norms[-1]),
                            f"{name}/weight_decay": options.weight_decay})
            k = max(1, len(losses) // 100)  # running mean over ~1% of the run
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            curves[f"{label}: {acc:.3f}"] = (np.arange(len(smooth)) + k, smooth)
            if options.optimizer in ("adam", "adamw", "amsgrad"):
                norms[f"{label}: {weight_norms[-1]:.2f}"] = (np.arange(1, len(weight_norms) + 1), weight_norms)
        figs = run_dir / "figures"
        plot_lines(curves, figs / "optimizer_race_loss.png", "step", "training loss (running mean)",
                   title=f"the same MLP, {cfg.epochs} epoch(s) of Fashion-MNIST per optimizer", logy=True)
        if norms:  # AdamW's decoupled decay theta <- theta (1 - lr wd) (002 §1.4.4) holds back the weights' growth
            plot_lines(norms, figs / "optimizer_race_weight_norm.png", "step", "||theta|| (all weights and biases)",
                       title="Adam against AdamW: the weight norm")
        metrics["test/best_accuracy"] = max(v for k, v in metrics.items() if k.endswith("/test_accuracy"))
        metrics["steps"] = steps
        return metrics
    return Study(run)


register_recipe(Recipe(
    name="optimizer-race-fashion", task="optimisation", notes="002 §1, 003 §2.2",
    description="The same MLP trained with SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam, AdamW on Fashion-MNIST",
    build=_optimizer_race, metric="test/best_accuracy", threshold=0.85, budget_s=120,
    study=True,
    # each entry is name:lr or name:lr:weight_decay; AdamW's decay is decoupled (theta <- theta (1 - lr wd)): 0.1
    # as GPT-2/3 and ViT train with, so that its weights visibly stay smaller than Adam's over the two epochs
    defaults=dict(optimizers=["sgd:0.05", "momentum:0.05", "nesterov:0.05", "adagrad:0.05", "rmsprop:0.001",
                              "adam:0.001", "adamw:0.001:0.1", "amsgrad:0.001"],
                  epochs=2, batch_size=128, hidden=[256, 128], subset=0, fused=True),
    smoke=dict(epochs=1, subset=512), datasets=("fashion-mnist",),
))


def _batch_mode(spec: str) -> tuple[str, float]:
    """'B:lr' (B a batch size, or 'full' for the whole training set) as (B, lr)."""
    parts = spec.split(":")
    try:
        if len(parts) != 2 or not (parts[0] == "full" or int(parts[0]) >= 1) or not float(parts[1]) > 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"modes: each entry is 'B:lr', B a batch size >= 1 or 'full' and lr > 0, e.g. '32:0.1' "
                          f"(a list: modes=[full:0.5,32:0.1]); got {spec!r}") from None
    return parts[0], float(parts[1])


def _gd_batch_sizes(cfg, dist):
    modes = [_batch_mode(spec) for spec in cfg.modes]  # bad entries refused before anything runs

    def run(run_dir: Path) -> dict[str, float]:
        x_tr, y_tr, x_te, y_te = load_digits_split(test_size=0.2, seed=0)
        if cfg.subset:
            x_tr, y_tr = x_tr[: cfg.subset], y_tr[: cfg.subset]
        sizes = [len(x_tr) if b == "full" else int(b) for b, _ in modes]
        kinds = [batching_mode(len(x_tr), min(size, len(x_tr))) for size in sizes]
        if len(set(kinds)) < len(kinds):
            raise ConfigError(f"modes: one entry per kind of gradient descent (full-batch, mini-batch, online: B = 1), "
                              f"whose curves and metrics are named by it; got {list(cfg.modes)}, kinds {kinds} with "
                              f"{len(x_tr)} training samples")
        whole_train = TensorLoader(x_tr, y_tr, batch_size=len(x_tr), shuffle=False)  # the loss after each epoch
        test = TensorLoader(x_te, y_te, batch_size=len(x_te), shuffle=False)
        tc = trainer_config(cfg, epochs=cfg.epochs, eval_every_epochs=1, progress=False, tensorboard=False,
                            checkpoint_every_minutes=None, log_every=10_000)
        by_epoch, by_time, metrics, steps = {}, {}, {}, 0
        for (_, lr), batch in zip(modes, sizes):
            torch.manual_seed(cfg.seed)
            model = torch.nn.Linear(x_tr.shape[1], 10)  # softmax regression: the same convex problem for all
            task = ClassificationTask(model, SimpleNamespace(optimizer="sgd", lr=float(lr), weight_decay=0.0,
                                                             momentum=0.0, fused=cfg.fused, schedule="none",
                                                             warmup_steps=-1))
            hist = GDHistory(batch_size=batch, mode=batching_mode(len(x_tr), batch))
            with torch.no_grad():
                hist.loss.append(task.evaluate(model, whole_train)["loss"])  # loss[0]: before the first update
            hist.time.append(0.0)
            result = fit(task, TensorLoader(x_tr, y_tr, batch_size=batch, shuffle=True, seed=cfg.seed), whole_train,
                         tc, [GDHistoryRecorder(hist)])
            label = f"{hist.mode} (B={batch}, lr {lr})"
            by_epoch[label] = (np.arange(len(hist.loss)), hist.loss)
            by_time[label] = (np.asarray(hist.time), hist.loss)
            with torch.no_grad():
                acc = task.evaluate(result.model.eval(), test)["accuracy"]
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
    # one thread: the batches are tiny (a 64 x 10 linear layer), and a second thread only adds wake-ups per step
    defaults=dict(modes=["full:0.5", "32:0.1", "1:0.005"], epochs=30, subset=0, fused=True, threads=1),
    smoke=dict(epochs=2, subset=200),
    types={"threads": "int | None"},
))
