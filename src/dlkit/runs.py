"""Run folders as trained models: `model.json` describes the network and its input, `load_run` rebuilds it
(Notes: 000 §2.6 input normalisation: a trained network only works on inputs prepared as in training).

`dlkit run` writes `model.safetensors` (the weights) and `model.json` beside it:

    {"recipe": "lenet5-mnist", "task": "classification",
     "name": "lenet5", "kwargs": {...},            # dlkit.create_model(name, **kwargs) rebuilds the network
     "class_names": ["0", ..., "9"] or null,
     "input": {"channels": 1, "size": [28, 28],   # decode as grey (1) or RGB (3), resize to size [H, W],
               "mean": [0.1307], "std": [0.3081],  # then (x / 255 - mean[c]) / std[c]
               "pad_to": [32, 32]} or null}        # optional: pad with black to pad_to before normalising

`model_spec(...)` builds and checks that record (recipes put it in `Setup.model_spec`); `load_run(RUN_DIR)`
returns a `LoadedRun`: the model with its weights in eval mode, plus that record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError, DlkitError

TASKS = ("classification", "segmentation")  # what `dlkit predict` knows how to run


def _ints(value, what: str, n: int) -> list[int]:
    if isinstance(value, int):
        value = [value] * n
    value = list(value)
    if len(value) != n or any(not isinstance(v, int) or v < 1 for v in value):
        raise ConfigError(f"model_spec {what} must be {n} positive integers; got {value!r}")
    return value


def model_spec(name: str, kwargs: dict | None = None, *, class_names: Sequence[str] | None = None,
               channels: int | None = None, size: int | Sequence[int] | None = None,
               mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
               pad_to: int | Sequence[int] | None = None) -> dict[str, Any]:
    """The model.json record of a run: registry name and constructor arguments, class names, and the input
    preprocessing (channels, size [H, W], per-channel mean/std of x / 255, optional pad_to) (Notes: 000 §2.6).

    A scalar mean/std is repeated over the channels; without `channels` the record has no input description."""
    spec: dict[str, Any] = {"name": str(name), "kwargs": dict(kwargs or {}),
                            "class_names": [str(c) for c in class_names] if class_names is not None else None,
                            "input": None}
    if channels is None:
        return spec
    if channels not in (1, 3):
        raise ConfigError(f"model_spec channels must be 1 (grey) or 3 (RGB); got {channels!r}")
    mean = [float(mean)] * channels if isinstance(mean, int | float) else [float(m) for m in (mean or [0.0])]
    std = [float(std)] * channels if isinstance(std, int | float) else [float(s) for s in (std or [1.0])]
    if len(mean) == 1:
        mean = mean * channels
    if len(std) == 1:
        std = std * channels
    if len(mean) != channels or len(std) != channels or any(s <= 0 for s in std):
        raise ConfigError(f"model_spec needs one mean and one positive std per channel ({channels}); got mean {mean}, "
                          f"std {std}")
    spec["input"] = {"channels": channels, "size": _ints(size, "size", 2), "mean": mean, "std": std}
    if pad_to is not None:
        pad = _ints(pad_to, "pad_to", 2)
        if pad[0] < spec["input"]["size"][0] or pad[1] < spec["input"]["size"][1]:
            raise ConfigError(f"model_spec pad_to {pad} is smaller than size {spec['input']['size']}")
        if pad != spec["input"]["size"]:
            spec["input"]["pad_to"] = pad
    return spec


@dataclass
class LoadedRun:
    """A trained model rebuilt from a run folder: `model` (eval mode, on `device`), `spec` (model.json) and the
    folder. `task`, `class_names` and `input` (the preprocessing record, or None) read the spec."""

    model: Any
    spec: dict
    run_dir: Path

    @property
    def task(self) -> str:
        return self.spec.get("task") or "classification"

    @property
    def class_names(self) -> list[str] | None:
        return self.spec.get("class_names")

    @property
    def input(self) -> dict | None:
        return self.spec.get("input")


def _recipe_of(run_dir: Path) -> str | None:
    """The recipe named in the run folder's config.json, or None where it cannot be read."""
    try:
        recipe = json.loads((run_dir / "config.json").read_text()).get("recipe")
    except (OSError, ValueError, AttributeError):
        return None
    return recipe if isinstance(recipe, str) else None


def read_model_spec(run_dir: str | os.PathLike) -> dict:
    """The model.json record of run folder `run_dir`, checked (clear errors for a folder that is not a run)."""
    run_dir = Path(run_dir)
    try:
        if not run_dir.is_dir():
            raise ConfigError(f"expected a run folder (written by `dlkit run`); {run_dir} is not a folder")
        missing = [f for f in ("model.json", "model.safetensors") if not (run_dir / f).is_file()]
        found = sorted(p.name for p in run_dir.iterdir())[:12] if missing else []
    except OSError as e:  # a name too long, a folder that cannot be listed
        raise ConfigError(f"cannot open the run folder {str(run_dir)[:200]} ({e.strerror or e}); pass the folder "
                          "that `dlkit run` printed as 'run folder: ...'") from None
    if missing:
        if len(missing) == 2 and not (run_dir / "config.json").is_file():
            raise ConfigError(f"{run_dir} is not a run folder: expected model.json and model.safetensors written by "
                              f"`dlkit run` (found: {', '.join(found) or 'nothing'}); pass the folder that `dlkit run` "
                              "printed as 'run folder: ...'")
        recipe = _recipe_of(run_dir)
        if len(missing) == 2 and (run_dir / "summary.json").is_file():
            raise ConfigError(f"{run_dir} is a finished run of recipe '{recipe or '?'}', which trains no network "
                              "that load_run, predict and export can rebuild (it writes no model.json and "
                              "model.safetensors); its results are in report.html and summary.json")
        why = ("The recipe does not describe its model (its Setup has no model_spec), so the run cannot be "
               "rebuilt; train a recipe that does" if missing == ["model.json"] else
               "The run did not finish (model.safetensors is written at the end); finish it with "
               f"`dlkit run {recipe or 'RECIPE'} --resume {run_dir}`")
        raise ConfigError(f"{run_dir}: expected model.json and model.safetensors (written by `dlkit run` when a run "
                          f"ends); missing {', '.join(missing)} (found: {', '.join(found) or 'nothing'}). {why}")
    path = run_dir / "model.json"
    again = "train the run again (`dlkit run RECIPE --out DIR`), or restore model.json from a backup"
    from .report.html import read_json

    spec = read_json(path, again)
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs", {}),
                                                                                             dict):
        raise ConfigError(f"{path}: expected {{\"name\": registry name, \"kwargs\": {{...}}, ...}}; got "
                          f"{str(spec)[:200]}; {again}")
    _check_spec(spec, path, again)
    return spec


def _check_spec(spec: dict, path: Path, again: str) -> None:
    """The optional fields of a model.json record: task a string, class_names a list of strings, input as
    `model_spec` writes it (so that prediction cannot fail on a malformed record)."""
    problems = []
    if spec.get("task") is not None and not isinstance(spec["task"], str):
        problems.append(f"\"task\" must be a string, got {spec['task']!r}"[:120])
    names = spec.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        problems.append(f"\"class_names\" must be a list of strings or null, got {str(names)[:80]}")
    elif names is not None and isinstance(spec.get("kwargs", {}).get("num_classes"), int) \
            and len(names) != spec["kwargs"]["num_classes"] and (len(names), spec["kwargs"]["num_classes"]) != (2, 1):
        # one output with two names: a binary classifier's logit (sigmoid), as mlp-xor's
        problems.append(f"{len(names)} \"class_names\" for a model of {spec['kwargs']['num_classes']} classes")
    record = spec.get("input")
    if record is not None:
        try:
            if not isinstance(record, dict) or "channels" not in record or "size" not in record:
                raise ConfigError(f"expected {{\"channels\": 1 or 3, \"size\": [H, W], \"mean\": [...], "
                                  f"\"std\": [...]}}, got {str(record)[:120]}")
            if isinstance(record["channels"], bool) or isinstance(record["size"], bool):
                raise ConfigError(f"channels and size must be integers, got {record['channels']!r}, {record['size']!r}")
            checked = model_spec(spec["name"], channels=record["channels"], size=record["size"],
                                 mean=record.get("mean"), std=record.get("std"), pad_to=record.get("pad_to"))["input"]
        except (ConfigError, TypeError, ValueError, OverflowError) as e:
            problems.append(f"\"input\" is malformed: {' '.join(str(e).split())[:200]}")
        else:
            spec["input"] = checked  # normalised: one mean and std per channel
    if problems:
        raise ConfigError(f"{path}: {'; '.join(problems)}; {again}")


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> LoadedRun:
    """Rebuild the trained model of a run folder: `create_model(name, **kwargs)` from model.json, the weights of
    model.safetensors loaded strictly, eval mode, on `device`. Returns a LoadedRun (model + its model.json)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .registry import create_model

    run_dir = Path(run_dir)
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1'; got {device!r}") from None
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} needs a CUDA GPU, and torch sees none on this machine; use --device cpu")
    spec = read_model_spec(run_dir)
    weights = run_dir / "model.safetensors"
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:  # truncated, damaged, or not a safetensors file
        detail = " ".join(str(e).split())[:200]
        raise CheckpointError(f"{weights} is damaged ({detail}); train the run again, or restore the file from a "
                              "backup") from None
    try:
        model = create_model(spec["name"], **spec.get("kwargs", {}))
    except (TypeError, ValueError, RuntimeError, OverflowError, DlkitError) as e:  # kwargs that do not fit
        detail = " ".join(str(e).split())[:200]
        raise ConfigError(f"{run_dir / 'model.json'}: {spec['name']}(**{str(spec.get('kwargs', {}))[:200]}) cannot be "
                          f"built ({detail}); model.json was edited or comes from another dlkit version: train the "
                          "run again") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise ConfigError(f"{run_dir}: model.safetensors does not fit {spec['name']}(**{spec.get('kwargs', {})}) "
                          f"from model.json ({detail}); the two files come from different runs or model versions"
                          ) from None
    return LoadedRun(model.to(torch.device(device)).eval(), spec, run_dir)
