"""Checkpoints: tensors in safetensors, everything else in JSON, nothing pickled.

A checkpoint `step_000123` is two files written atomically (temporary file, fsync, rename):
`step_000123.safetensors` (every tensor of the nested state) and `step_000123.json` (the
rest of the state, with each tensor replaced by a reference, and the sha256 of the tensor
file, and the sha256 of the JSON state itself). The JSON is written last, so a checkpoint without
it never existed; the checksums and a check of the JSON's shape catch a truncated, corrupted or
edited checkpoint, and loading falls back to the previous good checkpoint with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import CheckpointError

_NAME = re.compile(r"^step_(\d+)\.json$")


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Replace every tensor in a nested dict/list by {'__tensor__': key}, collecting tensors by key."""
    if isinstance(obj, torch.Tensor):
        key = prefix.strip(".") or "_"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, str | int):
                raise CheckpointError(f"cannot save a state key of type {type(k).__name__} ({k!r}): "
                                      "expected str or int keys")
        return {"__dict__": [[k, flatten(v, tensors, f"{prefix}{k}.")] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return {"__list__": [flatten(v, tensors, f"{prefix}{i}.") for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise CheckpointError(f"cannot save a value of type {type(obj).__name__} in a checkpoint: expected tensors, "
                          "numbers, strings and nested dicts/lists (checkpoints are never pickled)")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten`. A skeleton that `flatten` cannot have written (a malformed entry, a reference to a
    tensor that is not there) raises ValueError."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            key = obj["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise ValueError(f"it refers to a tensor {key!r} that its tensor file does not hold")
            return tensors[key]
        if "__dict__" in obj:
            items = obj["__dict__"]
            if not isinstance(items, list) or not all(isinstance(kv, list) and len(kv) == 2
                                                      and isinstance(kv[0], str | int) for kv in items):
                raise ValueError("a dict entry is not a list of [key, value] pairs")
            return {k: unflatten(v, tensors) for k, v in items}
        if "__list__" in obj:
            if not isinstance(obj["__list__"], list):
                raise ValueError("a list entry is not a list")
            items = [unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
        raise ValueError(f"an entry with keys {sorted(obj)[:4]} is none of __tensor__, __dict__ or __list__")
    if isinstance(obj, list):
        raise ValueError("a bare list (flatten writes lists as {'__list__': ...})")
    return obj


def _skeleton_digest(skeleton: Any) -> str:
    """sha256 of the JSON skeleton (so an edited or emptied state is caught like a damaged tensor file)."""
    return hashlib.sha256(json.dumps(skeleton, separators=(",", ":")).encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _tensor_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    seen: dict[tuple[int, int], str] = {}
    out = {}
    for k, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else None
        if ident in seen:  # tied or shared tensors: safetensors refuses aliases
            t = t.clone()
        elif ident is not None:
            seen[ident] = k
        out[k] = t
    return st_save(out)


def save_checkpoint(directory: str | Path, step: int, state: dict, keep: int = 3) -> Path:
    """Write `state` as checkpoint `step` under `directory`; keep the newest `keep` checkpoints."""
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"a checkpoint state must be a non-empty dict; got {type(state).__name__} {state!r:.40}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    data = _tensor_bytes(tensors)
    stem = f"step_{step:09d}"
    _atomic_write(directory / f"{stem}.safetensors", data)
    meta = {"format": "dlkit-checkpoint-1", "step": step, "sha256": hashlib.sha256(data).hexdigest(),
            "state_sha256": _skeleton_digest(skeleton), "state": skeleton}
    _atomic_write(directory / f"{stem}.json", json.dumps(meta).encode())
    if keep:
        for old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".safetensors").unlink(missing_ok=True)
    return directory / f"{stem}.json"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """The checkpoints' JSON files in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint_file(path: str | Path) -> dict:
    """Read one checkpoint (its .json path), checking everything that can be damaged: the JSON and its shape (an
    object with format, a sha256 of 64 hex digits and a non-empty state that matches its own sha256), the tensor
    file's sha256, and that the tensor file parses and holds every tensor the state refers to. Any damage raises
    a one-line CheckpointError naming the file."""
    path = Path(path)

    def damaged(why: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} is damaged ({why})")

    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # unreadable, not UTF-8, not JSON, nested too deeply
        why = "nested too deeply" if isinstance(e, RecursionError) else (getattr(e, "strerror", None) or str(e))
        raise CheckpointError(f"checkpoint {path} is unreadable ({why})") from None
    if not isinstance(meta, dict):
        raise damaged(f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != "dlkit-checkpoint-1":
        raise damaged(f"unknown format {meta.get('format')!r}, expected 'dlkit-checkpoint-1'")
    sha = meta.get("sha256")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise damaged(f"its sha256 is {str(sha)[:20]!r}, expected 64 hex digits")
    skeleton = meta.get("state")
    if not (isinstance(skeleton, dict) and isinstance(skeleton.get("__dict__"), list) and skeleton["__dict__"]):
        raise damaged("its state is missing or empty")
    state_sha = meta.get("state_sha256")  # absent in checkpoints written before it existed
    try:
        if state_sha is not None and state_sha != _skeleton_digest(skeleton):
            raise damaged("its state does not match its state_sha256: the JSON was edited or corrupted")
    except RecursionError:
        raise damaged("its state is nested too deeply") from None
    blob_path = path.with_suffix(".safetensors")
    try:
        data = blob_path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint tensors {blob_path} are missing ({e.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha:
        raise CheckpointError(f"checkpoint {blob_path} is truncated or corrupted "
                              f"(sha256 {digest[:12]}…, expected {sha[:12]}…)")
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors' own error type; a forged sha256 gets this far
        raise CheckpointError(f"checkpoint tensors {blob_path} do not parse as safetensors "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    try:
        return unflatten(skeleton, tensors)
    except ValueError as e:
        raise damaged(f"its state is malformed: {e}") from None
    except RecursionError:
        raise damaged("its state is nested too deeply") from None


def load_latest_checkpoint(directory: str | Path) -> tuple[dict, Path]:
    """The newest checkpoint in `directory` that reads back intact, falling back to older ones."""
    paths = list_checkpoints(directory)
    if not paths:
        raise CheckpointError(f"no checkpoint found in {directory}: expected files step_NNNNNNNNN.json and "
                              ".safetensors written by a dlkit run (pass the run folder to --resume)")
    errors = []
    for path in reversed(paths):
        try:
            state = load_checkpoint_file(path)
        except CheckpointError as e:
            errors.append(str(e))
            warnings.warn(f"{e}; falling back to an older checkpoint", stacklevel=2)
            continue
        return state, path
    raise CheckpointError("every checkpoint in {} is damaged, so the run cannot continue; start it again with "
                          "--overwrite (or another --out). {}".format(directory, "; ".join(errors)))


def check_weights_fit(saved: dict, current: dict, path: str | Path) -> None:
    """Refuse, in one line, a checkpoint's model weights `saved` that do not fit the model built now (`current`,
    its state_dict): names missing on either side or shapes that differ. This happens when what a run's model is
    built from changed between the run and its resume (the data's classes, an edited recipe)."""
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    shapes = [f"{k} {list(saved[k].shape)} in the checkpoint, {list(v.shape)} now" for k, v in current.items()
              if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    details = "; ".join(part for part in (
        f"shapes differ: {', '.join(shapes[:3])}" if shapes else "",
        f"weights the checkpoint lacks: {', '.join(missing[:3])}" if missing else "",
        f"weights the model lacks: {', '.join(unexpected[:3])}" if unexpected else "") if part)
    raise CheckpointError(f"checkpoint {path} does not fit the model this run builds now ({details}): what the model "
                          "is built from changed since the run started (for example the class folders of its data, "
                          "or the recipe's code). Restore them as they were to continue, or start a new run with "
                          "--overwrite (or another --out)")


def check_optimizers_fit(saved: list[str] | None, optimizers: list, path: str | Path) -> None:
    """Refuse, in one line, a checkpoint whose optimizers (class names, `saved`; None in older checkpoints) are
    not the kinds the run builds now: another optimizer's state would load without complaint and train wrongly."""
    kinds = [type(o).__name__ for o in optimizers]
    if saved is not None and saved != kinds:
        raise CheckpointError(f"checkpoint {path} holds the state of optimizer(s) {saved}, and this run builds "
                              f"{kinds}: the optimizer changed since the run started. Resume with the run's own "
                              "optimizer, or start a new run with --overwrite (or another --out)")
