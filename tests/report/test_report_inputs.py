"""`dlkit report` on folders that are not intact run folders: one line on stderr, exit code 2, nothing written."""

import csv
import json

import pytest

from dlkit.cli import main
from dlkit.errors import ConfigError
from dlkit.report.figures import read_metrics
from dlkit.report.html import build_report

HEADER = ["step", "epoch", "wall_time", "name", "value"]


def _run_folder(root, rows=((1, 0, 0.1, "train/loss", 0.5), (2, 0, 0.2, "train/loss", 0.25))):
    """A minimal run folder as `dlkit run` leaves it: config.json, summary.json and metrics.csv."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"recipe": "toy", "smoke": True, "config": {"lr": 0.1}}))
    (root / "summary.json").write_text(json.dumps({"recipe": "toy", "metric": "test/accuracy", "value": 0.9,
                                                   "threshold": 0.8, "passed": True, "metrics": {"a": 1.0}}))
    with open(root / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)
    return root


def _report(capsys, path, *needles):
    code = main(["report", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dlkit: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_an_intact_run_folder_gets_its_report_and_curves(tmp_path, capsys):
    run = _run_folder(tmp_path / "run")
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file() and (run / "figures" / "curve_loss.png").is_file()
    assert "wrote" in capsys.readouterr().out


def test_folders_that_are_not_run_folders(tmp_path, capsys):
    _report(capsys, tmp_path / "missing", "expected a run folder", "does not exist")
    (tmp_path / "file.txt").write_text("x")
    _report(capsys, tmp_path / "file.txt", "is a file")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    _report(capsys, tmp_path / "photos", "is not a run folder", "found: a.jpg", "dlkit run")
    assert not (tmp_path / "photos" / "report.html").exists() and not (tmp_path / "photos" / "figures").exists()
    (tmp_path / "only_metrics").mkdir()  # a metrics.csv alone does not make a run folder
    (tmp_path / "only_metrics" / "metrics.csv").write_text(",".join(HEADER) + "\n")
    _report(capsys, tmp_path / "only_metrics", "is not a run folder")


@pytest.mark.parametrize("text, needles", [
    ("epoch,loss,acc\n1,0.5,0.9\n", ["expected a dlkit metrics file", "missing step, name, value"]),
    (",".join(HEADER) + "\n1,0,0.1,train/loss,0.5\n2,0,0.2,train/loss,lots\n", ["line 3", "could not convert"]),
    (",".join(HEADER) + "\n1.5,0,0.1,train/loss,0.5\n", ["line 2", "step (an integer)"]),
    (",".join(HEADER) + "\n1,0\n", ["line 2", "list index out of range"]),
    (",".join(HEADER) + "\n1,0,0.1,train/loss,\x00\n", ["line 2"]),
])
def test_a_foreign_or_damaged_metrics_csv(tmp_path, capsys, text, needles):
    run = _run_folder(tmp_path / "run")
    (run / "metrics.csv").write_text(text)
    _report(capsys, run, str(run / "metrics.csv"), "move it out of the run folder", *needles)
    assert not (run / "report.html").exists() and not (run / "figures").exists()


def test_a_metrics_csv_that_is_not_text(tmp_path, capsys):
    run = _run_folder(tmp_path / "run")
    (run / "metrics.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    _report(capsys, run, str(run / "metrics.csv"), "utf-8")


@pytest.mark.parametrize("name", ["summary.json", "config.json"])
@pytest.mark.parametrize("content, needle", [
    (b'{"recipe": "toy", "val', "is not valid JSON"),
    (b"\xff\xfe\x00garbage", "is not valid JSON"),
    (b"[1, 2, 3]", "expected a JSON object"),
    (b"null", "expected a JSON object"),
    (b"[" * 100000 + b"]" * 100000, "is not valid JSON"),
])
def test_a_damaged_summary_or_config(tmp_path, capsys, name, content, needle):
    run = _run_folder(tmp_path / "run")
    (run / name).write_bytes(content)
    _report(capsys, run, str(run / name), needle, "run the recipe again")
    assert not (run / "report.html").exists() and not (run / "figures").exists()


def test_summary_metrics_of_the_wrong_type_and_hostile_strings(tmp_path, capsys):
    run = _run_folder(tmp_path / "run")
    (run / "summary.json").write_text(json.dumps({"recipe": "toy", "metrics": [1, 2]}))
    _report(capsys, run, '"metrics" must be an object')
    (run / "summary.json").write_text(json.dumps({"recipe": ["<b>"], "value": "<script>x</script>", "metrics": {}}))
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_curves_skip_non_finite_values_and_odd_metric_names(tmp_path):
    run = _run_folder(tmp_path / "run", rows=[(1, 0, 0.1, "train/loss", "nan"), (2, 0, 0.2, "train/loss", "inf"),
                                              (3, 0, 0.3, "train/loss", 0.5), (1, 0, 0.1, "val/a b\\..", 1.0)])
    assert main(["report", str(run)]) == 0
    assert sorted(p.name for p in (run / "figures").iterdir()) == ["curve_a_b_...png", "curve_loss.png"]
    series = read_metrics(run / "metrics.csv")
    assert series["train/loss"][1][2] == 0.5 and len(series["train/loss"][0]) == 3


def test_build_report_refuses_damaged_json_directly(tmp_path):
    run = _run_folder(tmp_path / "run")
    (run / "config.json").write_text("{")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        build_report(run)
