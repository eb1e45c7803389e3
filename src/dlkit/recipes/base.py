"""Recipes: the unit of "it works" (DESIGN.md).

A recipe bundles data, model, task, optimizer settings, an expected result (a metric, a
threshold and a time budget on a 2-core CPU) and a smoke mode. `run_recipe` trains it
through the Trainer and writes a run folder: config.json, metrics.csv, checkpoints/,
figures/, summary.json, report.html. `verify_recipe` runs it as registered and records
whether the expected result was reached in results/verify/NAME.json.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..engine.distributed import DistInfo, barrier, cleanup, init_distributed
from ..engine.machine import describe_machine
from ..engine.seeding import seed_everything
from ..engine.trainer import Trainer, TrainerConfig
from ..errors import ConfigError, unknown
from ..registry import import_all

GLOBAL_KEYS = ("seed", "data_dir")
OWN_LOOP_KEYS = ("device", "threads")  # Trainer options every recipe with its own loop has (`_run_experiment`)


class Config(dict):
    """A recipe's merged options with attribute access (`cfg.lr`). The keys read are recorded in `read`, so a
    run can tell the user which of their options the recipe never looked at."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getattr__(self, key: str) -> Any:
        if key == "read":  # before __init__ ran (unpickling)
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


@dataclass
class Setup:
    """What a recipe's builder returns: the task and its data loaders."""

    task: Any
    train: Any
    val: Any = None
    test: Any = None
    extra: dict = field(default_factory=dict)  # extra values for summary.json


@dataclass
class Experiment:
    """What a recipe with its own loop returns instead of a Setup (the perceptron rule, optimizer paths on
    2-D functions, races of several trainings): `run(run_dir)` does the work, draws its figures under
    run_dir/figures and returns the final metrics (names like 'test/accuracy')."""

    run: Callable[[Path], dict[str, float]]
    extra: dict = field(default_factory=dict)


@dataclass
class Recipe:
    """A registered end-to-end experiment with its expected result."""

    name: str
    task: str                     # task family, e.g. "classification"
    notes: str                    # notes' sections, e.g. "000 §3.4"
    description: str
    build: Callable[[Config, DistInfo], Setup | Experiment]
    metric: str                   # e.g. "test/accuracy"
    threshold: float
    higher_is_better: bool = True
    budget_s: float = 600.0       # expected wall time of `dlkit verify` on a 2-core CPU
    defaults: dict = field(default_factory=dict)
    smoke: dict = field(default_factory=dict)
    datasets: tuple[str, ...] = ()  # folders it reads under the data root (none: embedded data)
    # A recipe whose builder returns an Experiment runs its own loop: these are the Trainer options that loop
    # honours (threads always; device only if listed, else it runs on the CPU). None: it trains through the
    # Trainer, and every Trainer option applies.
    trainer_options: tuple[str, ...] | None = None

    @property
    def own_loop(self) -> bool:
        return self.trainer_options is not None

    def options(self) -> dict[str, Any]:
        """Every option of the recipe with its default: Trainer options that apply, global keys, its own."""
        trainer = vars(TrainerConfig())
        if self.own_loop:
            trainer = {k: v for k, v in trainer.items() if k in set(self.trainer_options) | set(OWN_LOOP_KEYS)}
        return {**trainer, "seed": 0, "data_dir": None, **self.defaults}

    def passed(self, value: float) -> bool:
        if value != value:  # NaN
            return False
        return value >= self.threshold if self.higher_is_better else value <= self.threshold

    @property
    def expected(self) -> str:
        return f"{self.metric} {'>=' if self.higher_is_better else '<='} {self.threshold:g}"


_RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a recipe to the registry (names are unique)."""
    if recipe.name in _RECIPES:
        raise ValueError(f"recipe '{recipe.name}' is registered twice")
    bad = set(recipe.trainer_options or ()) - set(TrainerConfig.keys())
    if bad:
        raise ValueError(f"recipe '{recipe.name}': trainer_options {sorted(bad)} are not Trainer options")
    bad = set(recipe.smoke) - set(recipe.options())
    if bad:
        raise ValueError(f"recipe '{recipe.name}': smoke keys {sorted(bad)} are not options of the recipe")
    _RECIPES[recipe.name] = recipe
    return recipe


def list_recipes(pattern: str = "*") -> list[str]:
    """Registered recipe names matching a shell-style pattern."""
    import_all("dlkit.recipes")
    return sorted(n for n in _RECIPES if fnmatch.fnmatch(n, pattern))


def get_recipe(name: str) -> Recipe:
    """The recipe registered as `name` (error with the nearest names if unknown)."""
    import_all("dlkit.recipes")
    if name not in _RECIPES:
        raise unknown("recipe", name, _RECIPES, "dlkit list recipes")
    return _RECIPES[name]


def parse_value(key: str, text: Any, default: Any) -> Any:
    """Parse a `--set key=value` value as YAML and check it against the default's type."""
    value = yaml.safe_load(text) if isinstance(text, str) else text
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"--set {key}: expected true or false; got {text!r}")
    elif isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"--set {key}: expected an integer; got {text!r}")
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string; Python's float does not
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"--set {key}: expected a number; got {text!r}")
        value = float(value)
    elif isinstance(default, list | tuple):
        if not isinstance(value, list):
            value = [value]
    elif isinstance(default, str) and not isinstance(value, str):
        value = str(text)
    return value


def make_config(recipe: Recipe, overrides: dict | None = None, smoke: bool = False) -> Config:
    """The recipe's defaults, then its smoke overrides, then the user's; unknown keys are an error."""
    base = recipe.options()
    if smoke:
        base.update(recipe.smoke)
        base.update({k: False for k in ("progress", "tensorboard") if k in base})
    cfg = Config(base)
    for key, text in (overrides or {}).items():
        set_option(recipe, cfg, key, parse_value(key, text, base.get(key)))
    return cfg


def set_option(recipe: Recipe, cfg: Config, key: str, value: Any) -> None:
    """`cfg[key] = value`, refused before anything runs if the recipe does not have the option."""
    if key not in cfg:
        if recipe.own_loop and key in TrainerConfig.keys():
            why = (f"'{key}' is a Trainer option, and recipe '{recipe.name}' runs its own training loop, which "
                   "does not have it")
        else:
            why = f"'{key}' is not an option of recipe '{recipe.name}'"
        raise ConfigError(f"{why}. Valid keys: {', '.join(sorted(cfg))}")
    if key == "device" and recipe.own_loop and "device" not in recipe.trainer_options and value != "cpu":
        raise ConfigError(f"recipe '{recipe.name}' runs on the CPU only (its own training loop has no device "
                          f"option); got device {value!r}. Leave --device out or use --device cpu")
    cfg[key] = value


def git_commit() -> str:
    """The current git commit of the source tree, or 'unknown'."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _default_run_dir(name: str, smoke: bool) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / name / (stamp + ("-smoke" if smoke else ""))


def run_recipe(name: str, *, overrides: dict | None = None, epochs: int | None = None, device: str | None = None,
               seed: int | None = None, out: str | Path | None = None, resume: str | Path | None = None,
               smoke: bool = False, data_dir: str | None = None, report: bool = True) -> dict:
    """Train, evaluate and report recipe `name`; return its summary (also written to summary.json)."""
    recipe = get_recipe(name)
    overrides = dict(overrides or {})
    if resume is not None:
        run_dir = Path(resume)
        saved = run_dir / "config.json"
        if not saved.is_file():
            raise ConfigError(f"--resume {run_dir}: expected a run folder with config.json; none found")
        cfg = Config(json.loads(saved.read_text())["config"])
        for key, text in overrides.items():
            set_option(recipe, cfg, key, parse_value(key, text, dict.get(cfg, key)))
        smoke = json.loads(saved.read_text()).get("smoke", False)
    else:
        cfg = make_config(recipe, overrides, smoke)
    for key, val in (("epochs", epochs), ("device", device), ("seed", seed), ("data_dir", data_dir)):
        if val is not None:
            set_option(recipe, cfg, key, val)
    dist = init_distributed(cfg.device)
    if resume is None:
        run_dir = Path(out) if out is not None else _default_run_dir(name, smoke)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(
            {"recipe": name, "smoke": smoke, "config": cfg, "world_size": dist.world_size}, indent=2, default=str))
    seed_everything(cfg.seed)  # the same seed on every rank: identical initial weights
    setup = recipe.build(cfg, dist)
    if isinstance(setup, Experiment) != recipe.own_loop:
        raise TypeError(f"recipe '{name}': its builder returned a {type(setup).__name__}, so trainer_options must "
                        f"be {'a tuple' if isinstance(setup, Experiment) else 'None'}")
    if isinstance(setup, Experiment):
        return _run_experiment(recipe, cfg, setup, run_dir, smoke, report, set(overrides))
    tcfg = TrainerConfig(**{k: cfg[k] for k in TrainerConfig.keys()})
    trainer = Trainer(setup.task, setup.train, setup.val, tcfg, run_dir=run_dir, dist=dist)
    t0 = time.perf_counter()
    trainer.fit(resume=run_dir if resume is not None else None)
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {}
    if dist.is_main:
        metrics = dict(trainer.last_metrics)
        if setup.test is not None:
            metrics.update(trainer.evaluate(setup.test, "test"))
        value = float(metrics.get(recipe.metric, float("nan")))
        summary = {
            "recipe": name, "task": recipe.task, "notes": recipe.notes, "metric": recipe.metric, "value": value,
            "threshold": recipe.threshold, "higher_is_better": recipe.higher_is_better,
            "passed": recipe.passed(value), "seconds": round(seconds, 2), "budget_s": recipe.budget_s,
            "steps": trainer.step, "epochs": cfg.epochs, "smoke": smoke, "device": str(trainer.device),
            "world_size": dist.world_size, "torch": torch.__version__, "commit": git_commit(),
            "stop_reason": trainer.stop_reason, "metrics": metrics,
            "seconds_to_threshold": seconds_to_threshold(run_dir / "metrics.csv", recipe), **setup.extra,
        }
        _write_outputs(run_dir, summary, trainer, setup, report)
    barrier(dist)
    cleanup(dist)
    return summary


def seconds_to_threshold(metrics_csv: Path, recipe: Recipe) -> float | None:
    """Wall time of training at which the validation counterpart of the recipe's metric first reached the
    threshold (e.g. val/accuracy for test/accuracy), read from metrics.csv; None if it never did or the recipe
    (one with its own loop) logs no such curve."""
    import csv

    name = "val/" + recipe.metric.split("/", 1)[-1]
    if not metrics_csv.is_file():
        return None
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["name"] == name and recipe.passed(float(row["value"])):
                return float(row["wall_time"])
    return None


def _run_experiment(recipe: Recipe, cfg: Config, exp: Experiment, run_dir: Path, smoke: bool, report: bool,
                    overridden: set[str] = frozenset()) -> dict:
    (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"threads must be >= 1; got {cfg.threads}")
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    try:
        metrics = {k: float(v) for k, v in exp.run(run_dir).items()}
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    ignored = sorted(overridden - cfg.read)  # set by the user yet never read: a bug of the recipe
    if ignored:
        print(f"note: recipe '{recipe.name}' did not read the option(s) {', '.join(ignored)}: setting them had no "
              "effect", file=sys.stderr)
    value = float(metrics.get(recipe.metric, float("nan")))
    summary = {
        "recipe": recipe.name, "task": recipe.task, "notes": recipe.notes, "metric": recipe.metric, "value": value,
        "threshold": recipe.threshold, "higher_is_better": recipe.higher_is_better, "passed": recipe.passed(value),
        "seconds": round(seconds, 2), "budget_s": recipe.budget_s, "steps": int(metrics.get("steps", 0)),
        "epochs": cfg.get("epochs"), "smoke": smoke, "device": cfg.device, "world_size": 1, "torch": torch.__version__,
        "commit": git_commit(), "stop_reason": "", "metrics": metrics, "ignored_options": ignored,
        "seconds_to_threshold": seconds_to_threshold(run_dir / "metrics.csv", recipe), **exp.extra,
    }
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
    model = trainer.ema.module if trainer.ema is not None else trainer.model
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
              str(run_dir / "model.safetensors"))
    if report:
        from ..report.figures import plot_curves
        from ..report.html import build_report

        (run_dir / "figures").mkdir(exist_ok=True)
        plot_curves(run_dir / "metrics.csv", run_dir / "figures")
        was = model.training
        model.eval()
        with torch.no_grad():
            setup.task.figures(run_dir, model, setup.test if setup.test is not None else setup.val)
        model.train(was)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if report:
        build_report(run_dir)


def verify_recipe(name: str, results_dir: str | Path = "results/verify", device: str | None = None,
                  data_dir: str | None = None) -> dict:
    """Run recipe `name` as registered and record whether it reached its expected result."""
    recipe = get_recipe(name)
    out = Path("runs") / "verify" / name
    if recipe.own_loop and "device" not in recipe.trainer_options and device not in (None, "cpu"):
        print(f"note: recipe '{name}' runs on the CPU only; verifying it there", file=sys.stderr)
        device = None
    t0 = time.perf_counter()
    summary = run_recipe(name, out=out, device=device, data_dir=data_dir)
    record = {
        "recipe": name, "metric": recipe.metric, "value": summary["value"], "threshold": recipe.threshold,
        "higher_is_better": recipe.higher_is_better, "passed": summary["passed"],
        "seconds": round(time.perf_counter() - t0, 2), "train_seconds": summary["seconds"],
        "seconds_to_threshold": summary.get("seconds_to_threshold"),
        "budget_s": recipe.budget_s, "device": summary["device"], "torch": torch.__version__,
        "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": describe_machine(),
        "run_dir": str(out),
    }
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
