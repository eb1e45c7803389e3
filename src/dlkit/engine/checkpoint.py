"""Checkpoints: tensors in safetensors, everything else in JSON, nothing pickled.

A checkpoint `step_000123` is two files written atomically (temporary file, fsync, rename):
`step_000123.safetensors` (every tensor of the nested state) and `step_000123.json` (the
rest of the state, with each tensor replaced by a reference, and the sha256 of the tensor
file). The JSON is written last, so a checkpoint without it never existed; the sha256 catches
a truncated or corrupted tensor file, and loading falls back to the previous good checkpoint.
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
    """Inverse of `flatten`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


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
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    data = _tensor_bytes(tensors)
    stem = f"step_{step:09d}"
    _atomic_write(directory / f"{stem}.safetensors", data)
    meta = {"format": "dlkit-checkpoint-1", "step": step, "sha256": hashlib.sha256(data).hexdigest(),
            "state": skeleton}
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
    """Read one checkpoint (its .json path) and check its tensor file's sha256."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != "dlkit-checkpoint-1":
            raise ValueError(f"unknown format {meta.get('format')!r}")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({e})") from None
    blob_path = path.with_suffix(".safetensors")
    try:
        data = blob_path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint tensors {blob_path} are missing ({e.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta["sha256"]:
        raise CheckpointError(f"checkpoint {blob_path} is truncated or corrupted "
                              f"(sha256 {digest[:12]}…, expected {meta['sha256'][:12]}…)")
    return unflatten(meta["state"], st_load(data))


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
    raise CheckpointError("every checkpoint in {} is damaged: {}".format(directory, "; ".join(errors)))
