"""A recipe's options: defaults, smoke values and `--set key=value` overrides, typed and read-only.

Each option has one canonical name per idea (`epochs` or `max_steps` for length, `warmup_steps`,
`eval_every_steps` / `eval_every_epochs`) and a type (from the Trainer's annotations or the default's
type). Values are parsed as YAML and checked against that type before anything runs. The merged
`Config` is read-only: a builder cannot change the configuration it was given, and reading an option
the recipe never declared is an error (so every option a recipe reads can be set with --set).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import yaml

from ..engine.trainer import TrainerConfig
from ..errors import ConfigError
from .registry import Recipe


class Config(dict):
    """A recipe's merged options with attribute access (`cfg.lr`), read-only once built. The keys read are
    recorded in `read`, so a run can tell which of the user's options the recipe never looked at."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.read: set[str] = set()
        self.frozen = False

    def __getitem__(self, key: str) -> Any:
        if key not in self:
            raise ConfigError(f"the recipe read option '{key}', which it does not declare: add it to the recipe's "
                              f"defaults (declared: {', '.join(sorted(self))})")
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key]

    def __getattr__(self, key: str) -> Any:
        if key in ("read", "frozen"):  # before __init__ ran (unpickling)
            raise AttributeError(key)
        try:
            return self[key]
        except ConfigError as e:
            raise AttributeError(str(e)) from None

    def __setitem__(self, key: str, value: Any) -> None:
        if getattr(self, "frozen", False):
            raise ConfigError(f"a recipe's builder may not change its configuration (it set '{key}'); compute the "
                              "value into a local variable instead")
        super().__setitem__(key, value)

    def update(self, *args, **kw) -> None:
        for k, v in dict(*args, **kw).items():
            self[k] = v

    def freeze(self) -> Config:
        self.frozen = True
        return self


def _type_error(key: str, expected: str, text: Any) -> ConfigError:
    return ConfigError(f"--set {key}: expected {expected}; got {text!r}")


def parse_value(key: str, text: Any, kind: str) -> Any:
    """Parse a `--set key=value` value as YAML and check it against the option's type, e.g. 'int | None'."""
    try:
        value = yaml.safe_load(text) if isinstance(text, str) else text
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: {text!r} is not a valid value (quote a string, e.g. {key}='...')") from None
    parts = [p.strip() for p in kind.split("|")]
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and "None" in parts):
        if "None" in parts:
            return None
        raise _type_error(key, f"a value of type {kind} (it cannot be empty or null)", text)
    for part in parts:
        if part == "bool" and isinstance(value, bool):
            return value
        if part == "int":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        if part == "float":
            if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string; Python's float does not
                try:
                    value = float(value)
                except ValueError:
                    pass
            if isinstance(value, int | float) and not isinstance(value, bool):
                if not math.isfinite(float(value)):
                    raise _type_error(key, "a finite number", text)
                return float(value)
        if part == "list":
            return value if isinstance(value, list) else [value]
        if part == "dict" and isinstance(value, dict):
            return value
        if part == "str":
            return value if isinstance(value, str) else str(text)
    names = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "list": "a list",
             "dict": "a mapping such as {a: 1}"}
    raise _type_error(key, " or ".join(names.get(p, p) for p in parts if p != "None")
                      + (" or null" if "None" in parts else ""), text)


def make_config(recipe: Recipe, overrides: Mapping | None = None, smoke: bool = False) -> Config:
    """The recipe's defaults, then its smoke values, then the user's; unknown keys are an error."""
    base = recipe.options()
    if smoke:
        base.update(recipe.smoke)
        base.update({k: False for k in ("progress", "tensorboard") if k in base})
    cfg = Config(base)
    for key, text in (overrides or {}).items():
        set_option(recipe, cfg, key, text)
    return cfg


def set_option(recipe: Recipe, cfg: Config, key: str, text: Any) -> None:
    """`cfg[key] = parsed text`, refused before anything runs if the recipe does not have the option."""
    if key not in cfg:
        if recipe.study and key in TrainerConfig.keys():
            why = (f"'{key}' is a Trainer option, and recipe '{recipe.name}' is a study of several trainings that "
                   "does not take it")
        else:
            why = f"'{key}' is not an option of recipe '{recipe.name}'"
        raise ConfigError(f"{why}. Valid keys: {', '.join(sorted(cfg))} (see `dlkit show {recipe.name}`)")
    cfg[key] = parse_value(key, text, recipe.option_types()[key])


def trainer_config(cfg: Mapping, **overrides) -> TrainerConfig:
    """The TrainerConfig of the Trainer options in `cfg` (the others keep their defaults), then `overrides`."""
    keys = set(TrainerConfig.keys())
    values = {k: dict.__getitem__(cfg, k) for k in cfg if k in keys}
    values.update(overrides)
    tc = TrainerConfig(**values)
    tc.validate()
    return tc
