"""dlkit: every model, layer, loss, optimizer and technique of the notes, verified and runnable."""

from .registry import create_model, list_models, register_model

__version__ = "0.1.0"


def list_recipes(pattern: str = "*"):
    """Names of registered recipes matching `pattern`."""
    from .recipes import list_recipes as _list

    return _list(pattern)


def run_recipe(name: str, **overrides):
    """Train, evaluate and report recipe `name`; returns its summary dict."""
    from .recipes import run_recipe as _run

    return _run(name, **overrides)


__all__ = ["create_model", "list_models", "register_model", "list_recipes", "run_recipe", "__version__"]
