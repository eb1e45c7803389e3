"""Weight files from elsewhere (torchvision, the EfficientNet-Lite0 port, a user's own), read without running code.

A `.pth`/`.pt` file is a pickle, and unpickling can call any Python function the file names, so a file from
an untrusted source could run arbitrary code on load. dlkit reads foreign weights only with safetensors
(`.safetensors`, plain tensors) or with `torch.load(..., weights_only=True)`, which accepts tensors and
plain containers and refuses everything else; a refused file becomes a one-line CheckpointError that says
how to re-save it. dlkit's own checkpoints (engine/checkpoint.py) hold no pickle at all.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model")  # training scripts often save {"state_dict": ..., "epoch": ...}
_FIX = ("if you trust the file, re-save its weights with torch.save(model.state_dict(), path) or convert them "
        "to safetensors (safetensors.torch.save_file(model.state_dict(), path))")


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weight file as a flat {name: tensor} dict on the CPU, without executing code from the file.

    `.safetensors` is read with safetensors, anything else with torch.load(weights_only=True). A top-level
    {"state_dict": ...} or {"model": ...} wrapper is unwrapped. A missing, truncated or corrupted file, a
    pickle that would execute code, or a file that holds no state dict raises a one-line CheckpointError.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}; expected a .pth/.pt state dict or a .safetensors "
                              f"file; check the path")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        state = _read_torch(path)
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict; expected a mapping of "
                              f"names to tensors; re-save it with torch.save(model.state_dict(), path)")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path} entry {key!r} is a {type(value).__name__}, not a tensor; expected a "
                                  f"state dict (names to tensors), optionally under 'state_dict' or 'model'; "
                                  f"re-save it with torch.save(model.state_dict(), path)")
    return dict(state)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError) for damaged files
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupted? "
                              f"{_first_line(e)}); re-download or re-save it") from e


def _read_torch(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        calls = f" (it calls {found.group(1)})" if found else ""
        raise CheckpointError(f"{path} holds executable pickle code{calls}; dlkit refuses to load it because "
                              f"unpickling would run that code (torch.load with weights_only=True); "
                              f"{_FIX}") from e
    except Exception as e:  # torch reports a damaged zip or pickle as RuntimeError, EOFError, KeyError, ...
        raise CheckpointError(f"{path} is not a readable torch weight file (truncated or corrupted? "
                              f"{type(e).__name__}: {_first_line(e)}); expected a file written by "
                              f"torch.save(model.state_dict(), path); re-download or re-save it") from e


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:160] if lines else type(error).__name__
