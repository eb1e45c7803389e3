"""Seeding and random-number-generator state, so that a resumed run repeats an uninterrupted one."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """All generator states as (tensors, JSON-able values): torch CPU/CUDA, NumPy and Python."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.int32).copy())
    version, state, gauss = random.getstate()
    values = {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [version, list(state), gauss]}
    return tensors, values


def set_rng_state(tensors: dict[str, torch.Tensor], values: dict) -> None:
    """Restore what `get_rng_state` returned."""
    torch.set_rng_state(tensors["torch"])
    cuda = sorted(k for k in tensors if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    kind, pos, has_gauss, cached = values["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().view(np.uint32), pos, has_gauss, cached))
    version, state, gauss = values["python"]
    random.setstate((version, tuple(state), gauss))
