"""The run report: one self-contained HTML page (config, result, curves, figures, samples) per run folder.

Figures are embedded as base64 PNGs, so `report.html` can be mailed or opened anywhere on its own.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

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
    data = base64.b64encode(path.read_bytes()).decode()
    caption = html.escape(path.stem.replace("_", " "))
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")


def build_report(run_dir: Path) -> Path:
    """Write `run_dir/report.html` from config.json, summary.json, figures/*.png and samples*.txt."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    title = summary.get("recipe", run_dir.name)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if summary:
        passed = summary.get("passed")
        cls, word = ("pass", "reached") if passed else ("fail", "not reached")
        task, notes = html.escape(str(summary.get("task", ""))), html.escape(str(summary.get("notes", "")))
        metric = html.escape(str(summary.get("metric", "")))
        parts.append(f"<p>{task} &middot; notes {notes}</p><p class='{cls}'>{metric} = {_fmt(summary.get('value'))} "
                     f"(expected {'&ge;' if summary.get('higher_is_better', True) else '&le;'} "
                     f"{_fmt(summary.get('threshold'))}): {word}</p>")
        headline = {k: v for k, v in summary.items() if k not in ("metrics",) and not isinstance(v, (dict, list))}
        parts += ["<h2>Summary</h2>", _table(headline)]
        if summary.get("metrics"):
            parts += ["<h2>Final metrics</h2>", _table(summary["metrics"])]
        for k, v in summary.items():
            if isinstance(v, dict) and k != "metrics":
                parts += [f"<h2>{html.escape(k)}</h2>", _table(v)]
    figs = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
    curves = [f for f in figs if f.name.startswith("curve_")]
    others = [f for f in figs if f not in curves]
    if curves:
        parts += ["<h2>Training curves</h2>", *map(_img, curves)]
    if others:
        parts += ["<h2>Figures</h2>", *map(_img, others)]
    for txt in sorted(run_dir.glob("samples*.txt")):
        parts += [f"<h2>{html.escape(txt.stem)}</h2><pre>{html.escape(txt.read_text()[:20000])}</pre>"]
    if config:
        parts += ["<h2>Configuration</h2>", _table(config)]
    parts.append("</body></html>")
    out = run_dir / "report.html"
    out.write_text("\n".join(parts))
    return out
