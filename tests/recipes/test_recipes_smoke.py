"""Every registered recipe runs in smoke mode and writes a complete run folder."""

import json
import os
from pathlib import Path

import pytest

from dlkit import list_recipes, load_run
from dlkit.errors import ConfigError
from dlkit.recipes import get_recipe, run_recipe, runner


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_smoke_mode_runs(name, tmp_path, monkeypatch):
    recipe = get_recipe(name)
    root = os.environ.get("DLKIT_DATA")
    missing = [d for d in recipe.datasets if not root or not (Path(root) / d).is_dir()]
    if missing:
        pytest.skip(f"needs data sets {missing} under DLKIT_DATA")
    configs = []
    make_config = runner.make_config
    monkeypatch.setattr(runner, "make_config", lambda *a, **kw: configs.append(make_config(*a, **kw)) or configs[-1])
    summary = run_recipe(name, smoke=True, out=tmp_path)
    if recipe.study:  # every option it accepts is read (so the options it refuses are all it lacks)
        assert set(configs[0]) - configs[0].read - {"data_dir"} == set(), "options offered but never read"
    assert summary["smoke"] and summary["steps"] > 0
    assert json.loads((tmp_path / "summary.json").read_text())["metric"] == recipe.metric
    assert summary["value"] == summary["value"], "the expected metric was not computed"
    assert (tmp_path / "report.html").stat().st_size > 1000
    assert summary["run_dir"] == str(tmp_path)
    if (tmp_path / "model.json").exists():  # the run folder rebuilds the network it trained (and checks model.json)
        assert not load_run(tmp_path).model.training
    else:
        with pytest.raises(ConfigError, match=f"is a finished run of recipe '{name}', which trains no network"):
            load_run(tmp_path)
