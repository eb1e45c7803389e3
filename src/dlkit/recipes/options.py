"""A recipe's options: defaults, smoke values and `--set key=value` overrides, typed and read-only.

Each option has one canonical name per idea (`epochs` or `max_steps` for length, `warmup_steps`,
`eval_every_steps` / `eval_every_epochs`) and a type (from the Trainer's annotations or the default's
type). Values are parsed as YAML and checked against that type before anything runs. The merged
`Config` is read-only: a builder cannot change the configuration it was given, and reading an option
the recipe never declared is an error (so every option a recipe reads can be set with --set).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ..engine.trainer import TrainerConfig
from ..errors import ConfigError, suggest
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


INT_MAX = TrainerConfig.MAX_COUNT  # whole-number options: at most 2**31 - 1 (a tensor dimension, a DataLoader)
MAX_LISTED = 20                   # an error lists the allowed names when there are at most this many
SEED_MAX = 2**32 - 1              # NumPy's seed range; derived seeds (seed * 1_000_003 + epoch, ...) stay in 64 bits


@dataclass(frozen=True)
class Rule:
    """The allowed values of an option, of each element of a list option, or of each value of a mapping option:
    numbers in [low, high] (an end excluded when `above` / `below`), whole numbers only when `whole`, or names
    listed by `choices` (a tuple, or a function listing a registry so the rule follows it); `keys`: the keys a
    mapping option must have."""

    low: float | None = None
    high: float | None = None
    above: bool = False   # low < value instead of low <= value
    below: bool = False   # value < high instead of value <= high
    whole: bool = False
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None
    keys: tuple[str, ...] | None = None
    what: str = ""        # what the value is, e.g. "a probability"

    def describe(self) -> str:
        """The expected values in words, e.g. 'a whole number >= 1 and <= 2147483647 (a batch size)'."""
        if self.choices is not None:
            names = self._names()
            out = "one of " + ", ".join(names) if len(names) <= MAX_LISTED else f"one of {len(names)} registered names"
        else:
            bounds = [f"{op} {b:g}" if isinstance(b, float) else f"{op} {b}" for op, b in (
                (">" if self.above else ">=", self.low), ("<" if self.below else "<=", self.high)) if b is not None]
            out = " ".join(["a whole number" if self.whole else "a finite number", " and ".join(bounds)]).strip()
        if self.keys is not None:
            out = f"a mapping {{{', '.join(f'{k}: N' for k in self.keys)}}} of {out}"
        return out + (f" ({self.what})" if self.what else "")

    def _names(self) -> list[str]:
        return sorted(self.choices() if callable(self.choices) else self.choices)

    def allows(self, value: Any) -> bool:
        """Whether `value` (an option's value after its type was checked; a list or mapping as a whole) is allowed."""
        if isinstance(value, dict):
            return (self.keys is None or sorted(value) == sorted(self.keys)) and all(map(self._allows_one,
                                                                                          value.values()))
        if isinstance(value, list):
            return self.keys is None and all(map(self._allows_one, value))
        return self.keys is None and self._allows_one(value)

    def _allows_one(self, v: Any) -> bool:
        if self.choices is not None:
            return isinstance(v, str) and v in self._names()
        if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not math.isfinite(v)):
            return False
        if self.whole and not (isinstance(v, int) or v.is_integer()):
            return False
        return ((self.low is None or (v > self.low if self.above else v >= self.low))
                and (self.high is None or (v < self.high if self.below else v <= self.high)))


def _whole(low: int = 1, high: int = INT_MAX, what: str = "") -> Rule:
    return Rule(low, high, whole=True, what=what)


def _names(choices: tuple[str, ...] | Callable[[], Iterable[str]], what: str = "") -> Rule:
    return Rule(choices=choices, what=what)


def _registry(module: str, function: str) -> Callable[[], list[str]]:
    """A function listing a registry's names, imported on first use (the rule table stays cheap to import)."""
    def names() -> list[str]:
        import importlib

        return list(getattr(importlib.import_module(module, __package__), function)())
    return names


COUNT = _whole(1)
PROBABILITY = Rule(0.0, 1.0, below=True, what="a probability, 0 <= p < 1")
FRACTION = Rule(0.0, 1.0, above=True, below=True, what="a fraction, 0 < f < 1")
POSITIVE = Rule(0.0, above=True)
NONNEGATIVE = Rule(0.0)

# The allowed values of the options of every recipe, by canonical option name (DESIGN.md "Recipes": one name per
# idea). Trainer options are checked by TrainerConfig.validate; a name not listed here is checked for its type
# only, and whole numbers there must lie in [-INT_MAX, INT_MAX], real numbers must be finite.
OPTION_RULES: dict[str, Rule] = {
    "seed": _whole(0, SEED_MAX, "a random seed"),
    **dict.fromkeys(("batch_size", "eval_batch_size", "ft_batch_size", "few_shot_batch", "batch"),
                    _whole(1, what="samples per batch")),
    **dict.fromkeys(("hidden", "hidden_size", "embed_dim", "dim", "width", "n_embd"), _whole(1, what="units")),
    **dict.fromkeys(("depth", "n_layer", "n_head", "num_layers", "block_size", "seq_len", "T", "window", "negatives",
                     "num_symbols", "min_len", "max_len", "ft_max_len", "ft_min_words", "segment_len", "height",
                     "max_epochs", "pretrain_epochs", "ft_epochs", "eval_batches", "per_class", "num_samples",
                     "sample_chars", "beam_width", "train_size", "test_size", "n_train", "n_test", "ft_train",
                     "ft_test", "min_freq", "lr_decay_steps", "top_k"), COUNT),
    **dict.fromkeys(("subset", "val_size"), _whole(0, what="0: all")),
    "image_size": _whole(0, what="pixels (0 where the recipe offers it: the model's native size)"),
    "vocab_size": _whole(0, what="0: every token of the corpus"),
    "crop_padding": _whole(0, what="pixels"),
    "num_workers": _whole(0, 256, "DataLoader worker processes"),
    "channels": _whole(1, 3, "1: grey, 3: RGB"),
    "warmup_steps": _whole(-1, what="-1: 5% of the steps"),
    "source_digits": _whole(0, 9, "digits"),
    "target_digits": _whole(0, 9, "digits"),
    **dict.fromkeys(("lr", "ft_lr", "pretrain_lr"), Rule(0.0, above=True, what="a learning rate")),
    **dict.fromkeys(("min_lr", "weight_decay", "backbone_lr_scale", "dice_weight", "noise"), NONNEGATIVE),
    **dict.fromkeys(("momentum", "beta1", "beta2", "dropout", "ft_dropout", "label_smoothing"), PROBABILITY),
    **dict.fromkeys(("val_fraction", "heldout_fraction"), FRACTION),
    **dict.fromkeys(("temperature", "subsample_t", "cs", "std"), POSITIVE),
    "optimizer": _names(_registry("..optim", "list_optimizers")),
    "schedule": _names(_registry("..optim", "list_schedulers")),
    **dict.fromkeys(("activation", "activations"), _names(_registry("..nn.activations", "list_activations"))),
    "inits": _names(_registry("..nn.init", "list_initializers")),
    "model": _names(_registry("..registry", "list_models"), "see `dlkit list models`"),
    "convention": _names(("01", "pm1")),
    "rules": _names(("perceptron", "hebbian")),
    "mean": Rule(what="one per channel"),
    "steps": Rule(1, INT_MAX, whole=True, keys=("canyon", "rosenbrock"), what="optimizer steps per function"),
}
_ANY_WHOLE = Rule(-INT_MAX, INT_MAX, whole=True)
_ANY_NUMBER = Rule()


class _Mismatch(Exception):
    pass


def _as_kind(value: Any, kind: str, text: Any) -> Any:
    """`value` (parsed YAML) as one part of an option's type: 'int', 'float', 'bool', 'str', 'dict', 'list' or
    'list[int]' (a list of that element type; a single value is a list of one); _Mismatch when it is not."""
    if kind.startswith("list"):
        items = value if isinstance(value, list) else [value]
        return [_as_kind(v, kind[5:-1], v) for v in items] if kind.startswith("list[") else items
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    if kind == "float":
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string; Python's float does not
            try:
                value = float(value)
            except ValueError:
                raise _Mismatch from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) if abs(value) < 2**1023 else math.inf if value > 0 else -math.inf
    if kind == "dict" and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return value
    if kind == "str" and not isinstance(value, list | dict):
        return value if isinstance(value, str) else str(text) if isinstance(text, str) else str(value)
    raise _Mismatch


_KIND_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "list": "a list",
               "dict": "a mapping of names, such as {a: 1}"}


def _kind_name(kind: str) -> str:
    if kind.startswith("list["):
        return "a list of " + {"int": "integers", "float": "numbers", "str": "strings", "bool": "true/false values"
                               }.get(kind[5:-1], kind[5:-1]) + ", such as [1, 2]"
    return _KIND_NAMES.get(kind, kind)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(map(_finite, value))
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    return True


def _error(key: str, expected: str, text: Any, how: str = "") -> ConfigError:
    shown = repr(text) if len(repr(text)) <= 80 else repr(text)[:77] + "..."
    return ConfigError(f"--set {key}: expected {expected}; got {shown}{how}")


def _strings(text: str) -> Any:
    """`text` read as YAML with every scalar kept as written: 32:0.1 stays '32:0.1' (YAML 1.1 reads it as the
    base-60 number 1920.1) and 1e-3 stays '1e-3', as an element of a list of strings should."""
    try:
        return yaml.load(text, Loader=yaml.BaseLoader)
    except (yaml.YAMLError, ValueError, RecursionError):
        return text


def parse_value(key: str, text: Any, kind: str, default: Any = None) -> Any:
    """Parse a `--set key=value` value as YAML and check it against the option's type, e.g. 'int | None' or
    'list[int]', and against its rule in OPTION_RULES (the range of a number, the names a name may take); the
    error quotes `default` (when not None) as a value that works."""
    try:
        value = yaml.safe_load(text) if isinstance(text, str) else text
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: a date such as 2001-13-45
        raise ConfigError(f"--set {key}: {text!r} is not a valid value (values are read as YAML: quote a string, "
                          f"e.g. {key}='...')") from None
    parts = [p.strip() for p in kind.split("|")]
    how = f" (default: {default!r})" if default is not None else ""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and "None" in parts):
        if "None" in parts:
            return None
        raise _error(key, f"{' or '.join(map(_kind_name, parts))} (it cannot be empty or null)", text, how)
    for part in parts:
        try:
            out = _as_kind(_strings(text) if part == "list[str]" and isinstance(text, str) else value, part, text)
        except _Mismatch:
            continue
        if not _finite(out):
            raise _error(key, "a finite number", text, how)
        rule = OPTION_RULES.get(key)
        if rule is None and key not in TrainerConfig.keys():  # Trainer options: TrainerConfig.validate checks them
            rule = _ANY_WHOLE if part in ("int", "list[int]") else _ANY_NUMBER if part in ("float", "list[float]") \
                else None
        if rule is not None and not rule.allows(out):
            several = isinstance(out, list | dict) and rule.keys is None
            bad = next((v for v in (out if isinstance(out, list) else [out]) if not rule.allows(v)), None)
            near = suggest(bad, rule._names()) if rule.choices is not None and isinstance(bad, str) else ""
            raise _error(key, ("each element to be " if several else "") + rule.describe(), text,
                         how + (f".{near}" if near else ""))
        return out
    raise _error(key, " or ".join(_kind_name(p) for p in parts if p != "None") + (" or null" if "None" in parts
                                                                                  else ""), text, how)


def make_config(recipe: Recipe, overrides: Mapping | None = None, smoke: bool = False) -> Config:
    """The recipe's defaults, then its smoke values, then the user's; unknown keys are an error."""
    base = recipe.options()
    if smoke:
        base.update(recipe.smoke_options())
    cfg = Config(base)
    for key, text in (overrides or {}).items():
        set_option(recipe, cfg, key, text)
    return cfg


# lists a recipe compares or iterates over, which an empty list leaves with nothing to do (hidden=[] is a model
# without hidden layers, frozen_layers=[] freezes nothing: those may be empty)
NON_EMPTY = {"rules", "optimizers", "modes", "activations", "inits", "source_digits", "target_digits", "cs",
             "stages", "max_weak"}


def set_option(recipe: Recipe, cfg: Config, key: str, text: Any) -> None:
    """`cfg[key] = parsed text`, refused before anything runs if the recipe does not have the option."""
    if key not in cfg:
        if recipe.study and key in TrainerConfig.keys():
            why = (f"'{key}' is a Trainer option, and recipe '{recipe.name}' is a study of several trainings that "
                   "does not take it")
        else:
            why = f"'{key}' is not an option of recipe '{recipe.name}'"
        raise ConfigError(f"{why}. Valid keys: {', '.join(sorted(cfg))} (see `dlkit show {recipe.name}`)")
    default = recipe.options()[key]
    value = parse_value(key, text, recipe.option_types()[key], default)
    if isinstance(value, list) and not value and key in NON_EMPTY:
        raise ConfigError(f"--set {key}: expected a list of at least one element; got an empty list (default: "
                          f"{default!r})")
    cfg[key] = value


def with_model_kwargs(from_data: Mapping, model_kwargs: Mapping) -> dict:
    """The model's arguments: those the recipe sets from its data and options (`from_data`: num_classes, in_chans,
    a vocabulary's size, dropout...) and the user's `model_kwargs`, which may not set the former (a model with 3
    outputs for CamVid's 11 classes fails at its first loss, far from the option that caused it)."""
    clash = sorted(set(from_data) & set(model_kwargs))
    if clash:
        raise ConfigError(f"model_kwargs sets {', '.join(clash)}, which the recipe sets from its data or options "
                          f"({', '.join(f'{k}={from_data[k]!r}' for k in clash)}); remove it from model_kwargs (and "
                          "set the recipe's option of that name where it has one: `dlkit show RECIPE`)")
    return {**from_data, **model_kwargs}


def trainer_config(cfg: Mapping, **overrides) -> TrainerConfig:
    """The TrainerConfig of the Trainer options in `cfg` (the others keep their defaults), then `overrides`."""
    keys = set(TrainerConfig.keys())
    values = {k: dict.__getitem__(cfg, k) for k in cfg if k in keys}
    values.update(overrides)
    tc = TrainerConfig(**values)
    tc.validate()
    if tc.device.startswith("cuda"):  # refused here, before a run folder is written, rather than in the Trainer
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(tc.device[5:]) if ":" in tc.device else 0
        if index >= count:
            seen = f"{count} CUDA GPU{'s' if count != 1 else ''} visible" if count else "no CUDA GPU visible"
            raise ConfigError(f"device {tc.device!r} was asked for but there is {seen}; use --device cpu"
                              + (f" or a GPU index below {count}" if count else ""))
    return tc
