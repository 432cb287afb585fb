"""The report page: a neutral list of blocks, rendered as self-contained HTML and as markdown."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from synthkd.report.plots import IMG_H, IMG_W, _plots_for_stage
from synthkd.report.readers import RunJson
from synthkd.report.tables import (STAGE_COLS, _detail_rows, _endpoint_rows, _failure_rows, _header_rows, _load,
                                   _stage_rows)

Block = tuple[Any, ...]  # ("h2"|"h3"|"p", text) | ("table", headers, rows) | ("fig", file, caption)


def _blocks(run: RunJson, out_dir: Path) -> list[Block]:
    """The report as a neutral list of blocks, rendered to both HTML and markdown."""
    # Each entry was read with its stage type's stats model (the one the runner wrote it with), so tables
    # and plots see typed values; what a model does not know is left out.
    stages = list(run.stages.items())
    ep_rows, details = _endpoint_rows(stages), _detail_rows(stages)
    blocks: list[Block] = [
        ("h2", "Run"), ("table", ["field", "value"], _header_rows(run)),
        ("h2", "Stages"), ("table", STAGE_COLS, _stage_rows(stages)) if stages else ("p", "none"),
        ("h2", "Failures by reason"), ("table", ["stage", "reason", "count"], _failure_rows(stages)) if stages else ("p", "none"),
        ("h2", "Endpoint usage (all stages)"),
        ("table", ["endpoint", "calls", "cache hits", "prompt tokens", "completion tokens", "cost"], ep_rows) if ep_rows else ("p", "none"),
    ]
    if details:
        blocks += [("h2", "Stage results"), ("table", ["stage", "block", "values"], details)]
    blocks.append(("h2", "Plots"))
    n_before = len(blocks)
    for name, stage in stages:
        plots = _plots_for_stage(name, stage, out_dir)
        if plots:
            blocks += [("h3", f"Stage {name}"), *(("fig", fn, cap) for fn, cap in plots)]
    if len(blocks) == n_before:
        blocks.append(("p", "No plottable data in this run."))
    return blocks


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;
padding:0 1rem;color:#222;line-height:1.4}h1{font-size:1.6rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .6rem;
text-align:left;vertical-align:top}th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}
td:first-child{white-space:nowrap}tr:nth-child(even) td{background:#fafafa}figure{margin:1rem 0}figcaption{font-size:.9rem;color:#444;max-width:600px}"""

SCRIPT = """<script>
window.addEventListener("load", () => {
  document.body.dataset.imagesTotal = document.images.length;
  document.body.dataset.imagesLoaded = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
});
</script>"""

_NUMERIC = re.compile(r"[-–$]?[\d,]*\.?\d+( s|%)?|–")


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    """An escaped HTML table; numeric cells are right-aligned."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if _NUMERIC.fullmatch(c) else ""}>{esc(c)}</td>' for c in row)
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _render_html(title: str, blocks: list[Block]) -> str:
    """The self-contained HTML page."""
    esc, parts = html.escape, []
    for kind, *rest in blocks:
        if kind in ("h2", "h3", "p"):
            parts.append(f"<{kind}>{esc(rest[0])}</{kind}>")
        elif kind == "table":
            parts.append(_html_table(*rest))
        elif kind == "fig":
            parts.append(f'<figure><img src="{esc(rest[0])}" alt="{esc(rest[1])}" width="{IMG_W}" '
                         f'height="{IMG_H}"><figcaption>{esc(rest[1])}</figcaption></figure>')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head>\n<body>\n<h1>{esc(title)}</h1>\n" + "\n".join(parts) + f"\n{SCRIPT}\n</body></html>\n")


def _md(text: str) -> str:
    """Markdown-safe text: HTML escaped (renderers pass raw HTML through), pipes escaped, one line."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _render_md(title: str, blocks: list[Block]) -> str:
    """The markdown twin of the HTML page."""
    lines = [f"# {_md(title)}", ""]
    for kind, *rest in blocks:
        if kind in ("h2", "h3"):
            lines += [f"{'#' * int(kind[1])} {_md(rest[0])}", ""]
        elif kind == "p":
            lines += [_md(rest[0]), ""]
        elif kind == "table":
            headers, rows = rest
            lines += ["| " + " | ".join(map(_md, headers)) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(_md(c) or " " for c in row) + " |" for row in rows] + [""]
        elif kind == "fig":
            alt = _md(rest[1]).replace("[", "\\[").replace("]", "\\]")
            lines += [f"![{alt}]({rest[0]})", "", f"*{_md(rest[1])}*", ""]
    return "\n".join(lines)


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Write RUN_DIR/report/index.html, report.md and PNG plots from RUN_DIR/run.json.

    PNGs left in the report directory by an earlier report are removed first. Returns
    (html_path, md_path). Raises ConfigError when run.json is missing or unreadable.
    """
    run_dir = Path(run_dir)
    run = _load(run_dir)
    out_dir = run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    blocks = _blocks(run, out_dir)
    title = f"synthkd run report: {run.pipeline or run_dir.name}"
    html_path, md_path = out_dir / "index.html", out_dir / "report.md"
    html_path.write_text(_render_html(title, blocks), encoding="utf-8")
    md_path.write_text(_render_md(title, blocks), encoding="utf-8")
    return html_path, md_path
