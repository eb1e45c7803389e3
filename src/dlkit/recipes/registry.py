"""Recipes: the unit of "it works" (DESIGN.md "Recipes"), and their registry.

A recipe is a declaration: name, family, notes' sections, options with defaults and smoke values,
a builder and an expected result (a metric, a threshold and a time budget on a 2-core CPU). Its
builder returns either a `Setup` (a task and its data, trained by the Trainer) or, for a comparison
of several trainings, a `Study` (it calls the headless `dlkit.engine.fit` once per sub-training).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.trainer import TrainerConfig
from ..registry import Registry

GLOBAL_OPTIONS = {"seed": 0, "data_dir": None}
STUDY_TRAINER_OPTIONS = ("device", "threads")  # the Trainer options a Study passes to each fit()


@dataclass
class Setup:
    """What a training recipe's builder returns: the task, its data, and how to rebuild the model."""

    task: Any
    train: Any
    val: Any = None
    test: Any = None
    extra: dict = field(default_factory=dict)      # extra values for summary.json
    callbacks: list = field(default_factory=list)  # Trainer callbacks (sample grids, ...)
    val_name: str = "val"                         # "test" when the recipe has no validation split
    # {"name": registry name, "kwargs": {...}, plus metadata: class_names, mean, std, input_size, task}: model.json
    model_spec: dict | None = None
    # a baseline trained after the run on the main process (e.g. the same network from scratch, through the headless
    # fit()): comparison(run_dir, metrics) returns its metrics for summary.json and the report, and may draw figures
    comparison: Callable[[Path, dict], dict[str, float]] | None = None


@dataclass
class Study:
    """What a comparison recipe's builder returns: `run(run_dir)` trains its networks through `dlkit.engine.fit`,
    draws its figures under run_dir/figures and returns the final metrics (names like 'test/accuracy')."""

    run: Callable[[Path], dict[str, float]]
    extra: dict = field(default_factory=dict)


@dataclass
class Recipe:
    """A registered end-to-end experiment with its expected result."""

    name: str
    task: str                     # task family, e.g. "classification"
    notes: str                    # notes' sections, e.g. "000 §3.4"
    description: str
    build: Callable[..., Setup | Study]
    metric: str                   # e.g. "test/accuracy"
    threshold: float
    higher_is_better: bool = True
    budget_s: float = 600.0       # expected wall time of `dlkit verify` on a 2-core CPU
    defaults: dict = field(default_factory=dict)
    smoke: dict = field(default_factory=dict)
    datasets: tuple[str, ...] = ()  # folders it reads under the data root (none: embedded data)
    study: bool = False           # True: the builder returns a Study (several trainings), not a Setup
    types: dict = field(default_factory=dict)  # option types where a default of None does not tell

    def options(self) -> dict[str, Any]:
        """Every option of the recipe with its default: Trainer options that apply, global keys, its own."""
        trainer = vars(TrainerConfig())
        if self.study:
            trainer = {k: v for k, v in trainer.items() if k in STUDY_TRAINER_OPTIONS}
        return {**trainer, **GLOBAL_OPTIONS, **self.defaults}

    def smoke_options(self) -> dict[str, Any]:
        """What --smoke sets over the defaults: the recipe's smoke values, no progress bar and no TensorBoard."""
        options = self.options()
        return {**self.smoke, **{k: False for k in ("progress", "tensorboard") if k in options}}

    def option_types(self) -> dict[str, str]:
        """The type of every option, e.g. 'int | None' (from the Trainer's annotations or the default's type)."""
        types = {k: v for k, v in TrainerConfig.types().items()}
        types.update(seed="int", data_dir="str | None")
        out = {}
        for k, v in self.options().items():
            if k in self.types:
                out[k] = self.types[k]
            elif k in types and k not in self.defaults:
                out[k] = types[k]
            elif v is None:
                out[k] = types.get(k, "str | None")
            elif isinstance(v, list | tuple):
                out[k] = _list_type(v)
            else:
                out[k] = type(v).__name__
        return out

    def passed(self, value: float) -> bool:
        if value != value:  # NaN
            return False
        return value >= self.threshold if self.higher_is_better else value <= self.threshold

    @property
    def expected(self) -> str:
        return f"{self.metric} {'>=' if self.higher_is_better else '<='} {self.threshold:g}"


def _list_type(default: list | tuple) -> str:
    """'list[int]', 'list[float]', 'list[str]' when a list default's elements share a type, else 'list'."""
    kinds = {type(x).__name__ for x in default}
    if kinds == {"int", "float"}:
        kinds = {"float"}
    return f"list[{kinds.pop()}]" if len(kinds) == 1 and kinds <= {"int", "float", "str", "bool"} else "list"


RECIPES = Registry("recipe", "dlkit.recipes", "dlkit list recipes",
                   fields=("task", "section", "datasets", "study", "metric"))


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a recipe to the registry (names are unique; smoke keys must be options). Its metadata: task, the first
    notes' section, datasets, study, metric."""
    bad = set(recipe.smoke) - set(recipe.options())
    if bad:
        raise ValueError(f"recipe '{recipe.name}': smoke keys {sorted(bad)} are not options of the recipe")
    return RECIPES.register(recipe.name, recipe, task=recipe.task, section=recipe.notes.split(",")[0].strip(),
                            datasets=recipe.datasets, study=recipe.study, metric=recipe.metric)


def list_recipes(pattern: str = "*", **filters) -> list[str]:
    """Registered recipe names matching a shell-style pattern and metadata filters (task="classification")."""
    return RECIPES.list(pattern, **filters)


def get_recipe(name: str) -> Recipe:
    """The recipe registered as `name` (error with the nearest names if unknown)."""
    return RECIPES.get(name).obj
