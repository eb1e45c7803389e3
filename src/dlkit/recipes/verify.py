"""`verify_recipe`: run a recipe as registered and record whether it reached its expected result.

The record `results/verify/RECIPE.json` holds the value, threshold, pass, seconds (and whether they went over
the recipe's budget), device, machine, torch version and git commit; docs/STATUS.md is generated from them.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import torch

from ..engine.machine import describe_machine

RESULTS = Path("results/verify")


def records_dir() -> Path:
    """Where `dlkit list recipes` and `dlkit show` read verify records: results/verify of the current folder when
    it has one, else that of the source checkout dlkit is imported from (an editable install), else the former."""
    if RESULTS.is_dir():
        return RESULTS
    checkout = Path(__file__).resolve().parents[3] / RESULTS
    return checkout if checkout.is_dir() else RESULTS


def git_commit() -> str:
    """The current git commit of the source tree, or 'unknown'."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def verify_recipe(name: str, results_dir: str | Path = RESULTS, device: str | None = None,
                  data_dir: str | None = None) -> dict:
    """Run recipe `name` as registered (in runs/verify/NAME, replacing the previous verification run) and record
    whether it reached its expected result. `results_dir` is checked before the training, not after it."""
    from ..run_folder import check_output_path
    from .registry import get_recipe
    from .runner import run_recipe

    recipe = get_recipe(name)
    check_output_path(results_dir, "--results")
    out = Path("runs") / "verify" / name
    t0 = time.perf_counter()
    summary = run_recipe(name, out=out, device=device, data_dir=data_dir, overwrite=True)
    seconds = round(time.perf_counter() - t0, 2)
    record = {
        "recipe": name, "metric": recipe.metric, "value": summary["value"], "threshold": recipe.threshold,
        "higher_is_better": recipe.higher_is_better, "passed": summary["passed"],
        "seconds": seconds, "train_seconds": summary["seconds"],
        "seconds_to_threshold": summary.get("seconds_to_threshold"),
        "budget_s": recipe.budget_s, "over_budget": seconds > recipe.budget_s, "device": summary["device"],
        "torch": torch.__version__, "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": describe_machine(), "run_dir": str(out),
    }
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
