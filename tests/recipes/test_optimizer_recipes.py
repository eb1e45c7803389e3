"""The optimisation studies: AdamW in the optimizer race has its decoupled weight decay (Notes: 002 §1.4.4)."""

import pytest

from dlkit.errors import ConfigError
from dlkit.recipes import get_recipe, run_recipe


def test_the_races_adamw_entry_has_a_weight_decay():
    (adamw,) = [s for s in get_recipe("optimizer-race-fashion").defaults["optimizers"] if s.startswith("adamw:")]
    assert float(adamw.split(":")[2]) > 0  # name:lr:weight_decay


@pytest.mark.data
def test_adam_and_adamw_sub_runs_of_the_race_differ(data_root, tmp_path):
    summary = run_recipe("optimizer-race-fashion", smoke=True, out=tmp_path, report=False, data_dir=str(data_root),
                         overrides={"optimizers": ["adam:0.001", "adamw:0.001:0.1", "adamw:0.001:0"]})
    m = summary["metrics"]
    assert m["adam/weight_decay"] == 0 and m["adamw:0.001:0.1/weight_decay"] == 0.1
    assert m["adamw:0.001:0/test_loss"] == m["adam/test_loss"]  # AdamW without its decay is Adam: the same run
    assert m["adamw:0.001:0.1/test_loss"] != m["adam/test_loss"]
    # theta <- theta (1 - lr wd) at every step: AdamW's weights end smaller than Adam's
    assert m["adamw:0.001:0.1/weight_norm"] < m["adam/weight_norm"]
    assert (tmp_path / "figures" / "optimizer_race_weight_norm.png").stat().st_size > 5000


def test_a_malformed_race_entry_is_explained(tmp_path):
    with pytest.raises(ConfigError, match="name:lr:weight_decay"):
        run_recipe("optimizer-race-fashion", smoke=True, out=tmp_path, report=False,
                   overrides={"optimizers": ["adam"], "data_dir": "/nonexistent"})
