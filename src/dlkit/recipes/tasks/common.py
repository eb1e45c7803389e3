"""Optimizer and schedule construction from a recipe's options (names as `--set optimizer=adam`)."""

from __future__ import annotations

import math

from ...optim import create_optimizer, create_scheduler

FUSED = ("sgd", "nesterov", "adagrad", "adam", "adamw", "amsgrad")


def build_optimizers(params, cfg, train_loader) -> tuple[list, list]:
    """One optimizer (cfg.optimizer, lr, weight_decay, momentum) and its schedule (cfg.schedule)."""
    kw = {"lr": cfg.lr, "weight_decay": cfg.get("weight_decay", 0.0)}
    if cfg.optimizer in ("sgd", "nesterov", "rmsprop"):
        kw["momentum"] = cfg.get("momentum", 0.0)
    if cfg.optimizer in FUSED:  # torch's fused kernels: 1.7-3.2x faster than foreach (benchmarks/bench_optim.py)
        kw["fused"] = cfg.get("fused", True)
    opt = create_optimizer(cfg.optimizer, params, **kw)
    steps_per_epoch = len(train_loader)
    total = cfg.epochs * steps_per_epoch
    if cfg.get("max_steps"):
        total = min(total, cfg.max_steps)
    name = cfg.get("schedule", "none")
    if name == "none":
        return [opt], []
    sched_kw = {}
    if name == "warmup_cosine":
        sched_kw["warmup_steps"] = cfg.get("warmup_steps", math.ceil(0.05 * total))
    return [opt], [create_scheduler(name, opt, total_steps=max(total, 1), **sched_kw)]
