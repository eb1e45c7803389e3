"""Where data sets live: `--data-dir`, else the `DLKIT_DATA` environment variable, else `~/.cache/dlkit`.

Each data set has its own folder under the root, named as its official archive names it
(`mnist`, `fashion-mnist`, `camvid`, `tinyshakespeare`, `att_faces`, `cifar-10-batches-py`,
`cifar-100-python`), so a user who unpacks the official files into the root needs nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError

ENV_VAR = "DLKIT_DATA"
DEFAULT_ROOT = Path("~/.cache/dlkit")


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: `data_dir` if given, else `$DLKIT_DATA`, else `~/.cache/dlkit` (user-expanded)."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    path = Path(data_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"data root must be a folder; got the file {path}. "
                          f"Pass a folder with --data-dir or set {ENV_VAR}.")
    return path


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of data set `name` under the data root: `data_root(data_dir) / name`."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ConfigError(f"data set name must be a single folder name such as 'mnist'; got {name!r}")
    return data_root(data_dir) / name
