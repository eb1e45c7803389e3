"""dlkit: every model, layer, loss, optimizer and technique of the notes, verified and runnable."""

from .registry import create_model, list_models, register_model

__version__ = "0.1.0"


def list_recipes(pattern: str = "*", **filters):
    """Names of registered recipes matching `pattern` and metadata filters (task="classification", study=True)."""
    from .recipes import list_recipes as _list

    return _list(pattern, **filters)


def run_recipe(name: str, overrides: dict | None = None, **options):
    """Train, evaluate and report recipe `name` with option `overrides` (as `--set`, e.g. {"epochs": 5});
    `options` are run_recipe's keywords (epochs, device, seed, out, resume, smoke, data_dir, report). Returns the
    summary dict; summary["run_dir"] is the run folder."""
    from .recipes import run_recipe as _run

    return _run(name, overrides=overrides, **options)


def load_run(run_dir, device: str = "cpu"):
    """The trained model of a run folder (model.json + model.safetensors) in eval mode, as a `LoadedRun`:
    .model, .spec (model.json), .class_names, .input (preprocessing), .task."""
    from .runs import load_run as _load

    return _load(run_dir, device=device)


__all__ = ["create_model", "list_models", "register_model", "list_recipes", "run_recipe", "load_run",
           "__version__"]
