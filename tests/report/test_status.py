"""docs/STATUS.md's recipe table: records count only while they match the registered expected result."""

import json

from dlkit.recipes import get_recipe
from dlkit.report.status import recipe_table


def _record(results, name, **changes):
    r = get_recipe(name)
    rec = {"recipe": name, "metric": r.metric, "threshold": r.threshold, "value": 1.0, "passed": True,
           "seconds": 3.0, "commit": "abc1234", **changes}
    (results / f"{name}.json").write_text(json.dumps(rec))


def test_a_matching_record_counts_and_a_record_against_an_old_threshold_is_stale(tmp_path):
    _record(tmp_path, "mlp-digits")
    _record(tmp_path, "mlp-xor", threshold=0.5)
    _record(tmp_path, "perceptron-nand", metric="test/loss")
    rows, n_pass, n = recipe_table(tmp_path)
    by_name = {row.split("|")[1].strip(" `"): row for row in rows[2:]}
    assert n_pass == 1 and n == len(rows) - 2
    assert "| yes |" in by_name["mlp-digits"]
    assert "stale (recorded test/accuracy against 0.5" in by_name["mlp-xor"]
    assert "stale (recorded test/loss" in by_name["perceptron-nand"]
    assert "not run" in by_name["lenet5-mnist"]


def test_the_machine_of_a_record_is_shown_and_old_records_say_not_recorded(tmp_path):
    _record(tmp_path, "mlp-digits", machine="AMD EPYC, 2 cores, torch CPU capability AVX2, 2 threads")
    _record(tmp_path, "mlp-xor")
    rows, _, _ = recipe_table(tmp_path)
    by_name = {row.split("|")[1].strip(" `"): row for row in rows[2:]}
    assert by_name["mlp-digits"].endswith("| AMD EPYC, 2 cores, torch CPU capability AVX2, 2 threads |")
    assert by_name["mlp-xor"].endswith("| not recorded |")
