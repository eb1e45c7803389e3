"""Optimizer and schedule construction from a recipe's options (names as `--set optimizer=adam`).

Notes: 000 §2.3-2.4 (the optimizers and learning-rate schedules). The options read are `optimizer`, `lr`,
`weight_decay`, `momentum` (SGD, Nesterov, RMSProp), `fused` (torch's fused kernels where they exist),
`schedule` and `warmup_steps` (warmup_cosine; -1: 5% of the run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import SimpleNamespace

from ..engine.task import TrainingPlan
from ..optim import create_optimizer, create_scheduler

FUSED = ("sgd", "nesterov", "adagrad", "adam", "adamw", "amsgrad")
OPTIMIZER_OPTIONS = dict(optimizer="adam", lr=1e-3, weight_decay=0.0, momentum=0.0, fused=True, schedule="none",
                         warmup_steps=-1)


def optimizer_options(cfg) -> SimpleNamespace:
    """OPTIMIZER_OPTIONS with those `cfg` sets: a recipe's Config, any object with these attributes, a dict such
    as {"optimizer": "sgd", "lr": 0.1}, or None (all defaults: Adam, lr 1e-3, no schedule)."""
    if cfg is None:
        given = {}
    elif isinstance(cfg, Mapping):
        given = {k: cfg[k] for k in OPTIMIZER_OPTIONS if k in cfg}
    else:
        given = {k: getattr(cfg, k) for k in OPTIMIZER_OPTIONS if hasattr(cfg, k)}
    return SimpleNamespace(**{**OPTIMIZER_OPTIONS, **given})


def build_optimizers(params, cfg, plan: TrainingPlan) -> tuple[list, list]:
    """One optimizer (cfg.optimizer, lr, weight_decay, momentum, fused) and its schedule (cfg.schedule) over the
    plan's total steps; `cfg` as `optimizer_options` takes it (missing options keep their defaults)."""
    cfg = optimizer_options(cfg)
    kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer in ("sgd", "nesterov", "rmsprop"):
        kw["momentum"] = cfg.momentum
    if cfg.optimizer in FUSED:  # torch's fused kernels: 1.7-3.2x faster than foreach (benchmarks/bench_optim.py)
        kw["fused"] = cfg.fused
    opt = create_optimizer(cfg.optimizer, params, **kw)
    total = max(plan.total_steps, 1)
    if cfg.schedule == "none":
        return [opt], []
    sched_kw = {}
    if cfg.schedule == "warmup_cosine":
        warm = cfg.warmup_steps
        sched_kw["warmup_steps"] = math.ceil(0.05 * total) if warm < 0 else warm
    return [opt], [create_scheduler(cfg.schedule, opt, total_steps=total, **sched_kw)]
