"""CIFAR-10 and CIFAR-100 from the official python-pickle batches (Notes: 000 §3, images as [C, H, W]).

The batches are Python pickles of dicts holding a uint8 array `data` [n, 3072] (1024 red, 1024
green, 1024 blue values, rows in C order) and label lists. They are read with a restricted
unpickler that allows only numpy's array-rebuilding functions, never arbitrary globals, so a
tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataNotFoundError
from .download import RemoteFile, ensure_archive
from .files import damaged, read_bytes
from .root import dataset_dir

CIFAR10_ARCHIVE = RemoteFile("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                             "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")
CIFAR100_ARCHIVE = RemoteFile("cifar-100-python.tar.gz",
                              "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                              "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_FIX = ("delete it and extract the official 'python version' archive again (cifar-10-python.tar.gz or "
        "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html) into the data root "
        "(--data-dir or $DLKIT_DATA)")
_CIFAR10_SPLITS = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as f  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as f
    return f


def _scalar():
    try:
        from numpy._core.multiarray import scalar as f
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar as f
    return f


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct, ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar, ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): lambda: np.ndarray, ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: codecs.encode,  # how Python 3 writes bytes at pickle protocol 2
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler for data files: builtin containers and numpy arrays only; any other global is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]()
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a data file "
                                     f"(only numpy arrays and builtin containers are allowed)")


def unpickle(path: str | os.PathLike, fix: str = _FIX) -> dict:
    """Load one CIFAR batch file (a pickle of a dict) safely; keys are decoded to str. A truncated, damaged or
    tampered file raises DataError naming it, with `fix` saying how to repair it."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"CIFAR batch file not found: {path}")
    data = read_bytes(path, fix)
    try:
        obj = SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except EOFError:
        raise damaged(path, f"truncated CIFAR python batch: the pickle ends early ({len(data)} bytes)", fix) from None
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise damaged(path, f"not a valid CIFAR python batch ({e})", fix) from None
    if not isinstance(obj, dict):
        raise damaged(path, f"not a CIFAR python batch: expected a pickled dict, got {type(obj).__name__}", fix)
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _images(batch: dict, path: Path) -> torch.Tensor:
    data = np.asarray(batch.get("data"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise damaged(path, f"expected 'data' as uint8 [n, 3072], got {data.dtype} {data.shape}", _FIX)
    return torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())


def _labels(batch: dict, key: str, n: int, path: Path) -> torch.Tensor:
    if key not in batch:
        raise damaged(path, f"no '{key}' entry; found {sorted(batch)}", _FIX)
    try:
        y = torch.as_tensor(np.asarray(batch[key], dtype=np.int64))
    except (ValueError, TypeError, OverflowError):
        raise damaged(path, f"'{key}' must be a list of integer class ids", _FIX) from None
    if y.shape != (n,):
        raise damaged(path, f"expected {n} labels in '{key}', got shape {tuple(y.shape)}", _FIX)
    return y


def _check(value: str, choices, what: str) -> None:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {sorted(choices)}; got {value!r}")


def load_cifar10(split: str = "train", data_dir: str | os.PathLike | None = None, download: bool = True):
    """CIFAR-10 (classes in CIFAR10_CLASSES): (images uint8 [N, 3, 32, 32], labels int64 [N]); 50k/10k."""
    _check(split, _CIFAR10_SPLITS, "split")
    members = (*_CIFAR10_SPLITS["train"], *_CIFAR10_SPLITS["test"], "batches.meta")
    folder = ensure_archive("cifar-10-batches-py", members, CIFAR10_ARCHIVE, data_dir, download)
    xs, ys = [], []
    for name in _CIFAR10_SPLITS[split]:
        batch = unpickle(folder / name)
        xs.append(_images(batch, folder / name))
        ys.append(_labels(batch, "labels", len(xs[-1]), folder / name))
    return torch.cat(xs), torch.cat(ys)


def load_cifar100(split: str = "train", data_dir: str | os.PathLike | None = None, label: str = "fine",
                  download: bool = True):
    """CIFAR-100: (uint8 [N, 3, 32, 32], int64 [N]) with 100 `fine` or 20 `coarse` labels; 50k/10k."""
    _check(split, ("train", "test"), "split")
    _check(label, ("fine", "coarse"), "label")
    folder = ensure_archive("cifar-100-python", ("train", "test", "meta"), CIFAR100_ARCHIVE, data_dir, download)
    batch = unpickle(folder / split)
    x = _images(batch, folder / split)
    return x, _labels(batch, f"{label}_labels", len(x), folder / split)


def cifar_class_names(dataset: str = "cifar-10-batches-py", data_dir: str | os.PathLike | None = None,
                      label: str = "fine") -> list[str]:
    """Class names from a CIFAR meta file (`batches.meta` or `meta`), as stored by the data set's authors."""
    _check(dataset, ("cifar-10-batches-py", "cifar-100-python"), "dataset")
    folder = dataset_dir(dataset, data_dir)
    meta = unpickle(folder / ("batches.meta" if dataset.startswith("cifar-10-") else "meta"))
    key = "label_names" if dataset.startswith("cifar-10-") else f"{label}_label_names"
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]
