"""`run_recipe`: train, evaluate and report a recipe into a run folder.

The run folder holds config.json, metrics.csv, checkpoints/, model.safetensors + model.json (what
`dlkit.load_run` rebuilds the model from), figures/, summary.json and report.html. `--resume DIR`
continues from the newest intact checkpoint; a run killed before its first checkpoint is restarted
from step 0 with the configuration it saved.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..engine import global_state
from ..engine.checkpoint import list_checkpoints
from ..engine.distributed import barrier, cleanup, init_distributed
from ..engine.logger import echo
from ..engine.seeding import seed_everything
from ..engine.trainer import Trainer
from ..errors import ConfigError
from .options import Config, make_config, set_option, trainer_config
from .registry import Recipe, Setup, Study, get_recipe
from .verify import git_commit


def _default_run_dir(name: str, smoke: bool) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / name / (stamp + ("-smoke" if smoke else ""))


def _resumed_config(recipe: Recipe, run_dir: Path, overrides: Mapping) -> tuple[Config, bool]:
    saved = run_dir / "config.json"
    if not saved.is_file():
        raise ConfigError(f"--resume {run_dir}: expected a run folder with config.json (written by dlkit run); "
                          "none found")
    try:
        meta = json.loads(saved.read_text())
        options = meta["config"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"--resume {run_dir}: config.json is not a dlkit run configuration; start a new run "
                          "with --out instead") from None
    if meta.get("recipe") != recipe.name:
        raise ConfigError(f"--resume {run_dir}: that folder is a run of recipe '{meta.get('recipe')}', not "
                          f"'{recipe.name}'; run `dlkit run {meta.get('recipe')} --resume {run_dir}`")
    cfg = Config({**recipe.options(), **options})
    for key, text in overrides.items():
        set_option(recipe, cfg, key, text)
    return cfg, bool(meta.get("smoke", False))


def run_recipe(name: str, *, overrides: Mapping | None = None, epochs: int | None = None, device: str | None = None,
               seed: int | None = None, out: str | Path | None = None, resume: str | Path | None = None,
               smoke: bool = False, data_dir: str | None = None, report: bool = True) -> dict:
    """Train, evaluate and report recipe `name`; return its summary (also written to summary.json), whose
    `run_dir` is the run folder."""
    recipe = get_recipe(name)
    overrides = dict(overrides or {})
    for key, val in (("epochs", epochs), ("device", device), ("seed", seed), ("data_dir", data_dir)):
        if val is not None:
            overrides[key] = val
    if resume is not None:
        if recipe.study:
            raise ConfigError(f"recipe '{name}' is a study of several trainings, which cannot be resumed; run it "
                              "again without --resume")
        run_dir = Path(resume)
        cfg, smoke = _resumed_config(recipe, run_dir, overrides)
    else:
        cfg = make_config(recipe, overrides, smoke)
        run_dir = Path(out) if out is not None else _default_run_dir(name, smoke)
    trainer_config(cfg)  # refuse bad Trainer options before anything is written
    dist = init_distributed(cfg["device"])
    if resume is not None and not list_checkpoints(run_dir / "checkpoints"):
        echo(f"no checkpoint in {run_dir}: the run was stopped before its first checkpoint; restarting it from step "
             "0 with its saved configuration", dist.is_main)
        resume = None
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume is None:
            (run_dir / "config.json").write_text(json.dumps(
                {"recipe": name, "smoke": smoke, "config": cfg, "world_size": dist.world_size}, indent=2,
                default=str))
    echo(f"run folder: {run_dir}", dist.is_main)
    seed_everything(cfg["seed"])  # the same seed on every rank: identical initial weights
    cfg.freeze()
    setup = recipe.build(cfg, dist)
    if isinstance(setup, Study) != recipe.study:
        raise TypeError(f"recipe '{name}': its builder returned a {type(setup).__name__}, so study must be "
                        f"{isinstance(setup, Study)}")
    if isinstance(setup, Study):
        return _run_study(recipe, cfg, setup, run_dir, smoke, report, set(overrides))
    trainer = Trainer(setup.task, setup.train, setup.val, trainer_config(cfg), run_dir=run_dir, dist=dist,
                      callbacks=setup.callbacks, val_prefix=setup.val_name)
    t0 = time.perf_counter()
    trainer.fit(resume=run_dir if resume is not None else None)
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {}
    metrics = dict(trainer.last_metrics)
    if setup.test is not None:  # on every rank: metric states are summed over the ranks
        with global_state.restored():
            metrics.update(trainer.evaluate(setup.test, "test"))
    if dist.is_main:
        summary = _summary(recipe, cfg, metrics, seconds, smoke, run_dir, steps=trainer.step,
                           device=str(trainer.device), world_size=dist.world_size, stop_reason=trainer.stop_reason,
                           val_name=setup.val_name, extra=setup.extra)
        _write_outputs(run_dir, summary, trainer, setup, report)
    barrier(dist)
    cleanup(dist)
    return summary


def _summary(recipe: Recipe, cfg: Config, metrics: dict, seconds: float, smoke: bool, run_dir: Path, *, steps: int,
             device: str, world_size: int, stop_reason: str, val_name: str = "val", extra: dict | None = None) -> dict:
    value = float(metrics.get(recipe.metric, float("nan")))
    return {
        "recipe": recipe.name, "task": recipe.task, "notes": recipe.notes, "metric": recipe.metric, "value": value,
        "threshold": recipe.threshold, "higher_is_better": recipe.higher_is_better, "passed": recipe.passed(value),
        "seconds": round(seconds, 2), "budget_s": recipe.budget_s, "steps": steps,
        "epochs": dict.get(cfg, "epochs"), "smoke": smoke, "device": device, "world_size": world_size,
        "torch": torch.__version__, "commit": git_commit(), "stop_reason": stop_reason, "metrics": metrics,
        "seconds_to_threshold": seconds_to_threshold(run_dir / "metrics.csv", recipe, val_name),
        "run_dir": str(run_dir), **(extra or {}),
    }


def seconds_to_threshold(metrics_csv: Path, recipe: Recipe, val_name: str = "val") -> float | None:
    """Wall time of training at which the evaluated counterpart of the recipe's metric (e.g. val/accuracy for
    test/accuracy) first reached the threshold, read from metrics.csv; None if it never did."""
    name = f"{val_name}/" + recipe.metric.split("/", 1)[-1]
    if not metrics_csv.is_file():
        return None
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["name"] == name and recipe.passed(float(row["value"])):
                return float(row["wall_time"])
    return None


def _run_study(recipe: Recipe, cfg: Config, study: Study, run_dir: Path, smoke: bool, report: bool,
               overridden: set[str]) -> dict:
    (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with global_state.restored():
        if cfg["threads"] is not None:
            torch.set_num_threads(cfg["threads"])
        metrics = {k: float(v) for k, v in study.run(run_dir).items()}
    seconds = time.perf_counter() - t0
    ignored = sorted(overridden - cfg.read)  # set by the user yet never read: a bug of the recipe
    if ignored:
        print(f"note: recipe '{recipe.name}' did not read the option(s) {', '.join(ignored)}: setting them had no "
              "effect", file=sys.stderr)
    summary = _summary(recipe, cfg, metrics, seconds, smoke, run_dir, steps=int(metrics.get("steps", 0)),
                       device=cfg["device"], world_size=1, stop_reason="", extra=study.extra)
    summary["ignored_options"] = ignored
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if report:
        from ..report.html import build_report

        build_report(run_dir)
    return summary


def _write_outputs(run_dir: Path, summary: dict, trainer: Trainer, setup: Setup, report: bool) -> None:
    from safetensors.torch import save_file

    from ..engine.logger import MetricLogger

    logger = MetricLogger(run_dir, tensorboard=False, resume_step=trainer.step)
    logger.log(trainer.step, trainer.epoch, {k: v for k, v in summary["metrics"].items() if k.startswith("test/")})
    logger.close()
    model = trainer.eval_model
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
              str(run_dir / "model.safetensors"))
    if setup.model_spec is not None:
        spec = {"recipe": summary["recipe"], "task": summary["task"], **setup.model_spec}
        (run_dir / "model.json").write_text(json.dumps(spec, indent=2, default=str))
    if report:
        from ..report.figures import plot_curves
        from ..report.html import build_report

        (run_dir / "figures").mkdir(exist_ok=True)
        plot_curves(run_dir / "metrics.csv", run_dir / "figures")
        was = model.training
        model.eval()
        with torch.no_grad(), global_state.restored():
            setup.task.figures(run_dir, model, setup.test if setup.test is not None else setup.val)
        model.train(was)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if report:
        build_report(run_dir)
