"""Registries: one `Registry` class for models, recipes and tasks, and the model registry's `create_model` and
`list_models`, as timm does (DESIGN.md "Registries and names").

An entry is a name, the registered object (a model factory, a Recipe, a task class) and a metadata dict. Model
files under `dlkit.models` register factories with `@register_model(...)`; the registry imports every module of
its package on first use, so a new file needs no import list to be edited. A module that fails to import is
reported by name (a warning, and again in the error for a name it would have registered); the others are listed.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import pkgutil
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, UnknownNameError, unknown

# "Notes: 002 §2.4" or "Notes: 004 GPT": the notes' section a docstring cites (seed file, then section or topic)
NOTES_SECTION = re.compile(r"Notes: (\d{3} (?:§\d+(?:\.(?:\d+|[A-Z]\b))*|[A-Z][\w-]*))")


@dataclass(frozen=True)
class Entry:
    """One registered object: its name, the object (factory, recipe, class) and its metadata."""

    name: str
    obj: Any
    meta: dict = field(default_factory=dict)


class Registry:
    """Named objects with metadata, filtered by shell pattern and metadata values (DESIGN.md "Registries").

    `kind` names the objects in messages ("model"), `package` is imported (every module below it) before the first
    look-up, `listing` is the command that lists them, `fields` the metadata keys every entry has (the filters),
    `collect(registry)` registers, after the imports, objects whose modules do not register themselves.
    """

    def __init__(self, kind: str, package: str, listing: str, fields: Iterable[str] = (),
                 collect: Callable[[Registry], None] | None = None):
        self.kind, self.package, self.listing = kind, package, listing
        self.fields = tuple(fields)
        self.collect = collect  # called once the package is imported (registers what does not register itself)
        self._entries: dict[str, Entry] = {}
        self.broken: dict[str, str] = {}  # module -> "ErrorType: message" of modules that failed to import
        self._imported = False

    def register(self, name: str, obj: Any, **meta) -> Any:
        """Add `obj` under `name` with metadata (keys from `fields`; a missing key is None). Returns `obj`."""
        extra = set(meta) - set(self.fields)
        if extra:
            raise ValueError(f"{self.kind} '{name}': unknown metadata {sorted(extra)}; expected keys of "
                             f"{list(self.fields)}")
        old = self._entries.get(name)
        if old is not None and old.obj is not obj:
            raise ValueError(f"{self.kind} '{name}' is registered twice ({_origin(old.obj)} and {_origin(obj)})")
        self._entries[name] = Entry(name, obj, {k: meta.get(k) for k in self.fields})
        return obj

    def load(self) -> None:
        """Import every module below `package` once (they register themselves); broken modules are warned about."""
        if self._imported:
            return
        self._imported = True
        for module, error in import_tree(self.package).items():
            self.broken[module] = error
            warnings.warn(f"dlkit: {self.kind} module {module} failed to import ({error}); its {self.kind}s are "
                          f"not registered. Fix that module (import it for the traceback)", RuntimeWarning,
                          stacklevel=3)
        if self.collect is not None:
            self.collect(self)

    def get(self, name: str) -> Entry:
        """The entry registered as `name` (UnknownNameError with the nearest names, and any broken module)."""
        self.load()
        if name not in self._entries:
            err = unknown(self.kind, name, self._entries, self.listing)
            if self.broken:
                err = UnknownNameError(f"{err} Modules that failed to import (it may be in one): "
                                       + "; ".join(f"{m} ({e})" for m, e in sorted(self.broken.items())))
            raise err
        return self._entries[name]

    def entries(self, pattern: str = "*", **filters) -> list[Entry]:
        """Entries whose name matches the shell-style `pattern` and whose metadata matches every filter, by name.

        A filter of None is ignored; True/False asks whether the value is set (non-empty); a value is compared
        with ==, or looked up in a tuple value (`pretrained="imagenet"` among the weights' tags).
        """
        self.load()
        bad = sorted(set(filters) - set(self.fields))
        if bad:
            raise ConfigError(f"cannot filter {self.kind}s by {bad}; expected metadata keys {list(self.fields)}")
        return [e for n, e in sorted(self._entries.items())
                if fnmatch.fnmatchcase(n.lower(), pattern.lower())  # 'RESNET*' finds resnet18 too
                and all(_matches(e.meta[k], v) for k, v in filters.items())]

    def list(self, pattern: str = "*", **filters) -> list[str]:
        """Names of the entries `entries(pattern, **filters)` returns, sorted."""
        return [e.name for e in self.entries(pattern, **filters)]

    def __contains__(self, name: str) -> bool:
        self.load()
        return name in self._entries

    def __len__(self) -> int:
        self.load()
        return len(self._entries)


def _matches(value: Any, wanted: Any) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, bool):
        return bool(value) == wanted
    if isinstance(value, tuple | list | frozenset | set):
        return wanted in value
    return value == wanted


def _origin(obj: Any) -> str:
    return getattr(obj, "__module__", type(obj).__module__)


def import_tree(package: str) -> dict[str, str]:
    """Import `package` and every module below it; {module: "ErrorType: first line"} of those that failed."""
    broken: dict[str, str] = {}
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__, prefix=package + "."):
        try:
            importlib.import_module(info.name)
        except Exception as e:  # any error in a module's top level: report it, keep listing the others
            lines = str(e).strip().splitlines()
            broken[info.name] = f"{type(e).__name__}: {lines[0][:160] if lines else ''}".rstrip(": ")
            continue
        if info.ispkg:
            broken.update(import_tree(info.name))
    return broken


# -- models ---------------------------------------------------------------------------------------------------------

MODEL_FIELDS = ("family", "task", "section", "input_size", "num_params", "params_source", "weights", "pretrained")
MODELS = Registry("model", "dlkit.models", "dlkit list models", MODEL_FIELDS)
_PACKAGE_TASKS = {"classification": "classification", "segmentation": "segmentation"}


def notes_section(doc: str | None) -> str | None:
    """The first section a docstring cites as "Notes: 002 §2.4" (or "Notes: 004 GPT"); None if it cites none."""
    found = NOTES_SECTION.search(" ".join((doc or "").split()))
    return found.group(1) if found else None


def register_model(fn: Callable | None = None, /, *, task: str | None = None, family: str | None = None,
                   input_size: tuple[int, ...] | None = None, num_params: int | None = None,
                   params_source: str | None = None, weights: Iterable = ()) -> Callable:
    """Decorator: register a model factory under its function name, with its metadata.

    Bare `@register_model` or `@register_model(num_params=11_689_512, params_source="torchvision", ...)`.
    `task` defaults to the package (models/classification -> "classification"), `family` to the module's name,
    the notes' section is the one the factory's docstring cites. `num_params` is the published (or derived by
    hand, `params_source` says which) count of trainable parameters of the default model; None where none is
    known. `weights` are its `dlkit.models.weights.Weights` records; their tags are the `pretrained` metadata.
    """

    def add(f: Callable) -> Callable:
        records = tuple(weights)
        parts = f.__module__.split(".")
        inferred = _PACKAGE_TASKS.get(parts[-2]) if len(parts) > 1 else None
        if (task or inferred) is None:
            raise ValueError(f"model '{f.__name__}' in {f.__module__}: pass task= to register_model (no task "
                             f"follows from the package)")
        if num_params is not None and not params_source:
            raise ValueError(f"model '{f.__name__}': num_params needs params_source (where the count comes from)")
        MODELS.register(f.__name__, f, task=task or inferred, family=family or parts[-1],
                        section=notes_section(f.__doc__), input_size=input_size, num_params=num_params,
                        params_source=params_source, weights=records, pretrained=tuple(w.tag for w in records))
        f.weights = records  # as torchvision attaches its weights enum to the builder
        return f

    return add(fn) if fn is not None else add


def list_models(pattern: str = "*", task: str | None = None, family: str | None = None,
                pretrained: bool | str | None = None) -> list[str]:
    """Names of registered models matching a shell-style `pattern` and the filters, sorted.

    `task="classification"`, `family="resnet"`; `pretrained=True` keeps models with weights records,
    `pretrained="imagenet"` those with that tag, False those without.
    """
    if task is not None:
        from .tasks import TASKS

        TASKS.get(task)  # an unknown task: one line with the nearest names; a task without models gives []
    return MODELS.list(pattern, task=task, family=family, pretrained=pretrained)


def check_model_task(name: str, task: str, why: str) -> dict:
    """The metadata of model `name`, refused in one line ("model 'NAME' is a TASK model{why}") unless its task is
    `task`: a recipe names the kind of model it trains before building one."""
    meta = MODELS.get(name).meta
    if meta.get("task") != task:
        raise ConfigError(f"model '{name}' is a {meta.get('task')} model{why}")
    return dict(meta)


def model_entrypoint(name: str) -> Callable:
    """The factory function registered as `name` (error with suggestions if unknown)."""
    return MODELS.get(name).obj


def model_metadata(name: str) -> dict:
    """The metadata of model `name` (family, task, section, input_size, num_params, params_source, weights, ...)."""
    return dict(MODELS.get(name).meta)


def get_weights(name: str, tag: str | bool = True):
    """The `Weights` record of model `name`: the first (default) for True, else the one tagged `tag`."""
    entry = MODELS.get(name)
    records = entry.meta["weights"]
    if not records:
        with_weights = ", ".join(MODELS.list(pretrained=True)) or "none"
        raise ConfigError(f"model '{name}' has no pretrained weights; models with weights: {with_weights} "
                          f"(`dlkit list models --pretrained`); build it without pretrained=")
    if tag is True:
        return records[0]
    for record in records:
        if record.tag == tag:
            return record
    raise ConfigError(f"model '{name}' has no weights tagged {tag!r}; its tags are {[r.tag for r in records]}")


_SIZES = ("num_classes", "in_chans", "vocab_size")  # sizes that many factories take: each a whole number >= 1


def _check_sizes(name: str, task: str, kwargs: dict) -> None:
    """Refuse a size that is not a whole number >= 1 (num_classes=0 is a classifier without its last layer)."""
    for key in _SIZES:
        value = kwargs.get(key)
        low = 0 if key == "num_classes" and task == "classification" else 1
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            what = (" (0: no classifier, the pooled features)" if low == 0 else
                    " (the object classes, without the background)" if key == "num_classes" and task == "detection"
                    else "")
            raise ConfigError(f"create_model('{name}', {key}={value!r}): {key} must be a whole number >= {low}{what}")


def create_model(name: str, pretrained: bool | str = False, features_only: bool = False, out_indices=None,
                 **kwargs):
    """Build the registered model `name` with keyword overrides.

    `pretrained=True` (or a tag) builds it with its `Weights` record loaded (sha256 checked, eval mode);
    `num_classes` other than the record's then replaces the classifier (Notes: 003 §3.3.2). A factory with a
    `pretrained` argument of its own and no record (fcn8s_lite0: a pretrained backbone) receives it.
    `features_only=True` (classification backbones, as timm) returns a `dlkit.models.backbone.FeatureExtractor`
    whose forward gives the list of feature maps of the stages `out_indices` (positions in the model's
    `feature_info`, negative from the end; default all), without the classifier.
    """
    if out_indices is not None and not features_only:
        raise ConfigError(f"out_indices={out_indices!r} chooses feature maps; pass features_only=True with it")
    entry = MODELS.get(name)
    factory = entry.obj
    _check_sizes(name, entry.meta.get("task", ""), kwargs)
    try:
        if not entry.meta["weights"] and "pretrained" in inspect.signature(factory).parameters:
            model = factory(pretrained=pretrained, **kwargs)
        elif pretrained is not False and pretrained is not None:
            model = get_weights(name, pretrained).build(factory, **kwargs)
        else:
            model = factory(**kwargs)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        raise ConfigError(f"create_model('{name}', ...): {e}; the arguments it takes are those of "
                          f"{factory.__module__}.{factory.__qualname__} (and of the class it builds): see "
                          f"help(dlkit.registry.MODELS.get('{name}').obj)") from e
    if not features_only:
        return model
    from .models.backbone import Backbone, FeatureExtractor

    if not isinstance(model, Backbone):
        raise ConfigError(f"features_only=True needs a classification backbone (feature_info, forward_features); "
                          f"'{name}' is a {type(model).__name__}. See `dlkit list models` for the classifiers")
    return FeatureExtractor(model, out_indices, name=name)
