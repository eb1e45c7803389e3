"""Model registry: `create_model(name, **kw)` and `list_models(pattern)`, as timm does.

Model files under `dlkit.models` register factory functions with `@register_model`; the
registry imports every module of the package on first use, so a new file needs no import
list to be edited.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from collections.abc import Callable

from .errors import ConfigError, unknown

_MODELS: dict[str, Callable] = {}
_loaded: set[str] = set()


def import_all(package: str) -> None:
    """Import every module below `package` once (they register themselves)."""
    if package in _loaded:
        return
    _loaded.add(package)
    pkg = importlib.import_module(package)
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        importlib.import_module(info.name)


def register_model(fn: Callable) -> Callable:
    """Decorator: register a model factory under its function name."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model '{name}' is registered twice ({_MODELS[name].__module__} and {fn.__module__})")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching a shell-style `pattern`, sorted."""
    import_all("dlkit.models")
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_entrypoint(name: str) -> Callable:
    """The factory function registered as `name` (error with suggestions if unknown)."""
    import_all("dlkit.models")
    if name not in _MODELS:
        raise unknown("model", name, _MODELS, "dlkit list models")
    return _MODELS[name]


def create_model(name: str, features_only: bool = False, out_indices=None, **kwargs):
    """Build the registered model `name` with keyword overrides.

    `features_only=True` (classification backbones, as timm) returns a `dlkit.models.backbone.FeatureExtractor`
    whose forward gives the list of feature maps of the stages `out_indices` (positions in the model's
    `feature_info`, negative from the end; default all), without the classifier.
    """
    if out_indices is not None and not features_only:
        raise ConfigError(f"out_indices={out_indices!r} chooses feature maps; pass features_only=True with it")
    model = model_entrypoint(name)(**kwargs)
    if not features_only:
        return model
    from .models.backbone import Backbone, FeatureExtractor

    if not isinstance(model, Backbone):
        raise ConfigError(f"features_only=True needs a classification backbone (feature_info, forward_features); "
                          f"'{name}' is a {type(model).__name__}. See `dlkit list models` for the classifiers")
    return FeatureExtractor(model, out_indices, name=name)
