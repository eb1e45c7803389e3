"""The run report: one self-contained HTML page (config, result, curves, figures, samples) per run folder.

Figures are embedded as base64 PNGs, so `report.html` can be mailed or opened anywhere on its own.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..errors import ConfigError

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}
img{max-width:100%;border:1px solid #eee;margin:4px}.pass{color:#080;font-weight:bold}.fail{color:#b00;font-weight:bold}
pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}figure{display:inline-block;margin:0 8px 8px 0}"""


def _table(rows: dict) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _img(path: Path) -> str:
    try:
        data = base64.b64encode(path.read_bytes()).decode()
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror or e}); check its permissions or delete it") from None
    caption = html.escape(path.stem.replace("_", " "))
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")


RUN_FILES = ("config.json", "summary.json", "metrics.csv")  # what `dlkit run` writes into a run folder
_REDO = "run the recipe again (`dlkit run RECIPE --out DIR`), or restore the file from a backup"


def check_run_folder(run_dir: Path) -> Path:
    """`run_dir` if it is a run folder written by `dlkit run` (it holds config.json or summary.json), else a
    ConfigError saying what it holds instead."""
    run_dir = Path(run_dir)
    try:
        if not run_dir.is_dir():
            raise ConfigError(f"expected a run folder (written by `dlkit run`); {run_dir} "
                              f"{'is a file' if run_dir.exists() else 'does not exist'}")
        is_run = any((run_dir / f).is_file() for f in RUN_FILES[:2])
        found = [] if is_run else sorted(p.name for p in run_dir.iterdir())
    except OSError as e:  # a name too long, a folder that cannot be listed
        raise ConfigError(f"cannot open the run folder {str(run_dir)[:200]} ({e.strerror or e}); pass the folder "
                          "that `dlkit run` printed as 'run folder: ...'") from None
    if not is_run:
        listing = ", ".join(found[:10]) + (", ..." if len(found) > 10 else "") if found else "nothing"
        raise ConfigError(f"{run_dir} is not a run folder: expected config.json and summary.json written by `dlkit "
                          f"run` (found: {listing}); pass the folder that `dlkit run` printed as 'run folder: ...'")
    return run_dir


def read_json(path: Path, fix: str = _REDO):
    """The JSON value in `path`; a file that cannot be read or is not valid JSON raises ConfigError naming it and
    saying `fix`."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise ConfigError(f"{path} is not valid JSON ({detail}); {fix}") from None
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror or e}); check its permissions") from None


def read_json_object(path: Path, fix: str = _REDO) -> dict:
    """The JSON object (dict) in `path`, {} when the file does not exist; a file that is not a JSON object (damaged,
    truncated, another program's) raises ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = read_json(path, fix)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object {{...}}, got {type(data).__name__} {str(data)[:80]}; {fix}")
    return data


def build_report(run_dir: Path) -> Path:
    """Write `run_dir/report.html` from config.json, summary.json, figures/*.png and samples*.txt (a damaged or
    foreign summary.json or config.json raises ConfigError naming it)."""
    run_dir = Path(run_dir)
    summary = read_json_object(run_dir / "summary.json")
    config = read_json_object(run_dir / "config.json")
    if not isinstance(summary.get("metrics", {}), dict):
        raise ConfigError(f"{run_dir / 'summary.json'}: \"metrics\" must be an object {{name: value}}, got "
                          f"{str(summary['metrics'])[:80]}; {_REDO}")
    title = str(summary.get("recipe", run_dir.name))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if summary:
        passed = summary.get("passed")
        cls, word = ("pass", "reached") if passed else ("fail", "not reached")
        task, notes = html.escape(str(summary.get("task", ""))), html.escape(str(summary.get("notes", "")))
        metric = html.escape(str(summary.get("metric", "")))
        value, threshold = (html.escape(_fmt(summary.get(k))) for k in ("value", "threshold"))
        parts.append(f"<p>{task} &middot; notes {notes}</p><p class='{cls}'>{metric} = {value} "
                     f"(expected {'&ge;' if summary.get('higher_is_better', True) else '&le;'} {threshold}): "
                     f"{word}</p>")
        headline = {k: v for k, v in summary.items() if k not in ("metrics",) and not isinstance(v, (dict, list))}
        parts += ["<h2>Summary</h2>", _table(headline)]
        if summary.get("metrics"):
            parts += ["<h2>Final metrics</h2>", _table(summary["metrics"])]
        for k, v in summary.items():
            if isinstance(v, dict) and k != "metrics":
                parts += [f"<h2>{html.escape(k)}</h2>", _table(v)]
    figs = sorted(f for f in (run_dir / "figures").glob("*.png") if f.is_file()) if (run_dir / "figures").is_dir() \
        else []
    curves = [f for f in figs if f.name.startswith("curve_")]
    others = [f for f in figs if f not in curves]
    if curves:
        parts += ["<h2>Training curves</h2>", *map(_img, curves)]
    if others:
        parts += ["<h2>Figures</h2>", *map(_img, others)]
    for txt in sorted(f for f in run_dir.glob("samples*.txt") if f.is_file()):
        text = txt.read_bytes()[:80000].decode("utf-8", errors="replace")[:20000]
        parts += [f"<h2>{html.escape(txt.stem)}</h2><pre>{html.escape(text)}</pre>"]
    if config:
        parts += ["<h2>Configuration</h2>", _table(config)]
    parts.append("</body></html>")
    out = run_dir / "report.html"
    try:
        out.write_text("\n".join(parts), encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot write {out} ({e.strerror or e}); make the run folder writable") from None
    return out
