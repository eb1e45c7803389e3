from pathlib import Path

import pytest

from dlkit.data.root import data_root, dataset_dir
from dlkit.errors import ConfigError


def test_data_dir_argument_wins_over_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DLKIT_DATA", "/somewhere/else")
    assert data_root(tmp_path) == tmp_path


def test_environment_variable_is_used_without_argument(monkeypatch, tmp_path):
    monkeypatch.setenv("DLKIT_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert dataset_dir("mnist") == tmp_path / "mnist"


def test_default_root_is_user_cache(monkeypatch):
    monkeypatch.delenv("DLKIT_DATA", raising=False)
    assert data_root() == Path.home() / ".cache" / "dlkit"


def test_bad_names_and_file_roots_are_rejected(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="folder"):
        data_root(f)
    for bad in ("", "..", "a/b"):
        with pytest.raises(ConfigError, match="single folder name"):
            dataset_dir(bad, tmp_path)
