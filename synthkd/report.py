"""Run report: RUN_DIR/run.json -> RUN_DIR/report/{index.html, report.md, *.png}.

`write_report` is the public entry point. The HTML page is self-contained (inline CSS, no external
URLs); the markdown twin has the same tables; plots are PNGs beside both, referenced by relative
path. New stage types add plotters to `_TYPE_PLOTS` (see `_plots_for_stage`). Every run.json key
but "stages" is optional.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator, PercentFormatter  # noqa: E402

from synthkd.errors import ConfigError  # noqa: E402

FIG_SIZE = (6.0, 3.2)
DPI = 100
IMG_W, IMG_H = round(FIG_SIZE[0] * DPI), round(FIG_SIZE[1] * DPI)
FIX = "pass a directory written by `synthkd run`"
STAGE_COLS = ["stage", "type", "status", "records in", "records out", "failed", "calls",
              "cache hits", "retries", "tokens", "cost", "elapsed"]
EP_KEYS = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "cost")
WTL_COLORS = ("#4c9a2a", "#9e9e9e", "#c0392b")

Block = tuple[Any, ...]  # ("h2"|"h3"|"p", text) | ("table", headers, rows) | ("fig", file, caption)
Plot = tuple[str, str]  # (PNG file name inside the report directory, caption)
Plotter = Callable[[str, dict[str, Any], Path, str], list[Plot]]


def _load(run_dir: Path) -> dict[str, Any]:
    """run.json as a dict, or ConfigError saying what is wrong with it."""
    path = run_dir / "run.json"
    if not path.is_file():
        raise ConfigError(f"no run.json in {run_dir}", where=str(path), fix=FIX)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"run.json cannot be read: {exc}", where=str(path), fix=FIX) from exc
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise ConfigError('run.json has no "stages" object', where=str(path), fix=FIX)
    return data


def _d(value: Any) -> dict[str, Any]:
    """The value if it is a dict, else an empty dict."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    """The value if it is a list, else an empty list."""
    return value if isinstance(value, list) else []


def _num(value: Any) -> float | None:
    """A finite number, else None (booleans and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any, spec: str = ",.0f", prefix: str = "") -> str:
    """A number as prefix + spec; '–' for None; anything else as text."""
    n = _num(value)
    return f"{prefix}{n:{spec}}" if n is not None else "–" if value is None else str(value)


def _usd(value: Any) -> str:
    """Dollars with four decimals."""
    return _fmt(value, ",.4f", "$")


def _slug(name: str) -> str:
    """A file-name-safe, collision-resistant prefix for a stage's plots."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40] or "stage"
    return slug if slug == name else f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def _header_rows(data: dict[str, Any]) -> list[list[str]]:
    """Field/value rows for the run as a whole."""
    rows = [["pipeline", str(data.get("pipeline", "?"))], ["status", str(data.get("status", "?"))],
            ["invocations", _fmt(data.get("invocations"))], ["total spend", _usd(data.get("spent_usd_total"))]]
    rows += [[k, str(data[k])] for k in ("started", "updated") if k in data]
    this = _d(data.get("this_invocation"))
    if this:
        rows.append(["this invocation", f"{_fmt(this.get('calls'))} calls, "
                     f"{_fmt(this.get('cache_hits'))} cache hits, {_usd(this.get('cost_usd'))}"])
    return rows


def _stage_rows(stages: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """One row per stage, columns as in STAGE_COLS."""
    rows = []
    for name, s in stages:
        toks = [t for t in (_num(s.get("prompt_tokens")), _num(s.get("completion_tokens"))) if t is not None]
        elapsed = _num(s.get("elapsed_s"))
        rows.append([name, str(s.get("type", "?")), str(s.get("status", "?")), _fmt(s.get("records_in")),
                     _fmt(s.get("records_out")), _fmt(s.get("failed")), _fmt(s.get("calls")),
                     _fmt(s.get("cache_hits")), _fmt(s.get("retries")), _fmt(sum(toks)) if toks else "–",
                     _usd(s.get("cost_usd")), "–" if elapsed is None else f"{elapsed:,.1f} s"])
    return rows


def _failure_rows(stages: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """(stage, reason, count) rows, most frequent first; "none" for a stage without failures."""
    rows = []
    for name, s in stages:
        fails = sorted(_d(s.get("failures")).items(), key=lambda kv: -(_num(kv[1]) or 0))
        rows += [[name, str(reason), _fmt(count)] for reason, count in fails] or [[name, "none", ""]]
    return rows


def _endpoint_rows(stages: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """Per-endpoint usage summed over all stages."""
    totals: dict[str, dict[str, float]] = {}
    for _, s in stages:
        for ep, usage in _d(s.get("by_endpoint")).items():
            t = totals.setdefault(str(ep), dict.fromkeys(EP_KEYS, 0.0))
            for k in EP_KEYS:
                t[k] += _num(_d(usage).get(k)) or 0.0
    return [[ep, _fmt(t["calls"]), _fmt(t["cache_hits"]), _fmt(t["prompt_tokens"]),
             _fmt(t["completion_tokens"]), _usd(t["cost"])] for ep, t in sorted(totals.items())]


def _detail_rows(stages: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """The eval, decontamination and rationale blocks as key=value lists."""
    rows = []
    for name, s in stages:
        for key in ("eval", "decontamination", "rationale"):
            block = _d(s.get(key))
            if block:
                rows.append([name, key, ", ".join(f"{k}={_fmt(v, '.4g')}" for k, v in block.items())])
    return rows


@contextmanager
def _figure(path: Path, ncols: int = 1) -> Iterator[tuple[Any, Any]]:
    """Yield (fig, axes); save to path on success; always close the figure."""
    with plt.rc_context({"text.parse_math": False, "font.size": 9}):
        fig, axes = plt.subplots(1, ncols, figsize=FIG_SIZE, dpi=DPI, layout="constrained")
        try:
            yield fig, axes
            fig.savefig(path, dpi=DPI)
        finally:
            plt.close(fig)


def _iters(stage: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(iteration number, iteration dict) pairs; the position stands in for a missing number."""
    its = [it for it in _list(stage.get("iterations")) if isinstance(it, dict)]
    return [(int(n) if (n := _num(it.get("iteration"))) is not None else i, it) for i, it in enumerate(its, 1)]


def _series(iters: list[tuple[int, dict[str, Any]]], key: str, sub: str | None = None) -> tuple[list[int], list[float]]:
    """(iterations, values) for the iterations where `key` (inside `sub`, if given) is a number."""
    pts = [(x, _num(_d(it.get(sub)).get(key) if sub else it.get(key))) for x, it in iters]
    return [x for x, y in pts if y is not None], [y for _, y in pts if y is not None]


def _label(ax: Any, title: str, xlabel: str, ylabel: str, iters: list[int] | None = None) -> None:
    """Title and axis labels; with `iters`, an x axis of whole iteration numbers covering all of them."""
    ax.set(title=title if len(title) <= 60 else title[:59] + "…", xlabel=xlabel, ylabel=ylabel)
    if iters:
        ax.set_xlim(min(iters) - 0.5, max(iters) + 0.5)
        ticks = sorted(set(iters))
        ax.xaxis.set_major_locator(FixedLocator(ticks) if len(ticks) <= 12 else MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _plot_lion(name: str, stage: dict[str, Any], out: Path, slug: str) -> list[Plot]:
    """Lion: hard fraction, and mean teacher vs student referee score, per iteration."""
    iters, plots = _iters(stage), []
    xs, ys = _series(iters, "hard_fraction")
    if xs:
        with _figure(out / f"{slug}-hard_fraction.png") as (_, ax):
            ax.plot(xs, ys, marker="o")
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            _label(ax, f"{name}: hard fraction", "iteration", "hard fraction", [x for x, _ in iters])
        plots.append((f"{slug}-hard_fraction.png", f"Stage {name}: share of judged instructions the "
                      "student answered clearly worse than the teacher (hard), per iteration."))
    teacher, student = _series(iters, "mean_teacher_score"), _series(iters, "mean_student_score")
    if teacher[0] or student[0]:
        with _figure(out / f"{slug}-scores.png") as (_, ax):
            ax.plot(*teacher, marker="o", label="teacher")
            ax.plot(*student, marker="s", label="student")
            ax.legend()
            _label(ax, f"{name}: mean referee score", "iteration", "mean score", [x for x, _ in iters])
        plots.append((f"{slug}-scores.png", f"Stage {name}: mean referee score of teacher and "
                      "student answers, per iteration."))
    return plots


def _plot_dpo_training(name: str, stage: dict[str, Any], out: Path, slug: str) -> list[Plot]:
    """DPO: pairs mined and the trained reward margin per iteration (two panels)."""
    iters = _iters(stage)
    (xp, yp), (xm, ym) = _series(iters, "pairs_mined"), _series(iters, "reward_margin", sub="dpo")
    if not (xp or xm):
        return []
    skipped = [(x, str(it["dpo"])) for x, it in iters if isinstance(it.get("dpo"), str)]
    with _figure(out / f"{slug}-pairs_margin.png", ncols=2) as (fig, (left, right)):
        left.bar_label(left.bar(xp, yp, color="#3b75af"), fmt="%g")
        left.margins(y=0.12)
        _label(left, "pairs mined", "iteration", "pairs", [x for x, _ in iters])
        right.plot(xm, ym, marker="o", color="#e07b39")
        for x, _ in skipped:  # no training that iteration: say so where its point would be
            right.text(x, 0.5, "not trained", transform=right.get_xaxis_transform(), ha="center", color="#777")
        if not (xm or skipped):
            right.text(0.5, 0.5, "no DPO results", transform=right.transAxes, ha="center", color="#777")
        _label(right, "DPO reward margin", "iteration", "reward margin", [x for x, _ in iters])
        fig.suptitle(name[:60])
    cap = f"Stage {name}: preference pairs mined and DPO reward margin after training, per iteration."
    notes = "; ".join(f"iteration {x}: {why}" for x, why in skipped)
    return [(f"{slug}-pairs_margin.png", cap + (f" Not trained: {notes}." if notes else ""))]


def _plot_dpo_heldout(name: str, stage: dict[str, Any], out: Path, slug: str) -> list[Plot]:
    """DPO: held-out wins/ties/losses against the previous iteration, stacked per iteration."""
    pts = [(x, _d(it.get("heldout_vs_previous"))) for x, it in _iters(stage)]
    pts = [(x, h) for x, h in pts if any(_num(h.get(k)) is not None for k in ("wins", "ties", "losses"))]
    if not pts:
        return []
    xs = [x for x, _ in pts]
    with _figure(out / f"{slug}-heldout.png") as (_, ax):
        bottom = [0.0] * len(pts)
        for key, color in zip(("wins", "ties", "losses"), WTL_COLORS):
            vals = [_num(h.get(key)) or 0.0 for _, h in pts]
            ax.bar(xs, vals, bottom=bottom, color=color, label=key)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        _label(ax, f"{name}: held-out vs previous iteration", "iteration", "prompts", xs)
    rates = ", ".join(f"{x}: {_num(h.get('win_rate')):.0%}" for x, h in pts if _num(h.get("win_rate")) is not None)
    cap = f"Stage {name}: each iteration's student against the previous one on held-out prompts."
    return [(f"{slug}-heldout.png", cap + (f" Win rate by iteration: {rates}." if rates else ""))]


def _plot_eval(name: str, stage: dict[str, Any], out: Path, slug: str) -> list[Plot]:
    """Any stage with an `eval` block: the student's wins/ties/losses against the teacher."""
    ev = _d(stage.get("eval"))
    counts = [_num(ev.get(k)) for k in ("wins", "ties", "losses")]
    if all(c is None for c in counts):
        return []
    with _figure(out / f"{slug}-eval.png") as (_, ax):
        ax.bar_label(ax.bar(["wins", "ties", "losses"], [c or 0.0 for c in counts], color=WTL_COLORS), fmt="%g")
        ax.margins(y=0.12)
        _label(ax, f"{name}: student vs teacher", "outcome for the student", "prompts")
    cap = f"Stage {name}: student vs teacher on {_fmt(ev.get('n'))} eval prompts " \
          f"(wins / ties / losses: {' / '.join(_fmt(c) for c in counts)})."
    if (share := _num(ev.get("student_share_of_teacher"))) is not None:
        cap += f" Student's score is {share:.1%} of the teacher's"
        cap += f" (mean {_fmt(ev.get('mean_student_score'), '.4g')} vs {_fmt(ev.get('mean_teacher_score'), '.4g')})."
    if (em := _num(ev.get("exact_match"))) is not None:
        cap += f" Exact match {em:.1%} on {_fmt(ev.get('exact_match_n'))} prompts."
    return [(f"{slug}-eval.png", cap)]


def _plot_pr_curve(name: str, stage: dict[str, Any], out: Path, slug: str) -> list[Plot]:
    """SKD: the critic's precision-recall curve with the chosen operating point."""
    pr = _d(_d(stage.get("critic")).get("pr_curve"))
    pts = [(r, p) for r, p in zip(map(_num, _list(pr.get("recall"))), map(_num, _list(pr.get("precision"))))
           if r is not None and p is not None]
    if not pts:
        return []
    chosen = _d(pr.get("chosen"))
    cr, cp = _num(chosen.get("recall")), _num(chosen.get("precision"))
    with _figure(out / f"{slug}-pr_curve.png") as (_, ax):
        ax.plot([r for r, _ in pts], [p for _, p in pts], marker=".")
        if cr is not None and cp is not None:
            ax.scatter([cr], [cp], color="#c0392b", zorder=3, label=f"threshold {_fmt(pr.get('threshold'), '.4g')}")
            ax.legend()
        ax.set(xlim=(0, 1.05), ylim=(0, 1.05))
        _label(ax, f"{name}: critic precision-recall", "recall", "precision")
    cap = f"Stage {name}: precision-recall curve of the critic."
    if cr is not None and cp is not None:
        cap += f" Chosen threshold {_fmt(pr.get('threshold'), '.4g')}: precision {cp:.2f}, recall {cr:.2f}."
    return [(f"{slug}-pr_curve.png", cap)]


def _plot_influence(name: str, stage: dict[str, Any], out: Path, slug: str) -> list[Plot]:
    """Montessori: histogram of per-example influence scores."""
    vals = [v for v in map(_num, _list(_d(stage.get("influence")).get("values"))) if v is not None]
    if not vals:
        return []
    with _figure(out / f"{slug}-influence.png") as (_, ax):
        ax.hist(vals, bins=max(5, min(40, round(math.sqrt(len(vals))))), color="#3b75af")
        ax.axvline(0, color="black", linewidth=0.8)
        _label(ax, f"{name}: influence", "influence score", "examples")
    neg = sum(v < 0 for v in vals)
    return [(f"{slug}-influence.png", f"Stage {name}: distribution of per-example influence scores "
             f"({len(vals)} examples, {neg} negative).")]


# Plotters per stage `type`; add new stage types here. `_plot_eval` runs for every stage.
_TYPE_PLOTS: dict[str, list[Plotter]] = {
    "lion": [_plot_lion],
    "dpo": [_plot_dpo_training, _plot_dpo_heldout],
    "skd": [_plot_pr_curve],
    "montessori": [_plot_influence],
}


def _plots_for_stage(name: str, stage: dict[str, Any], out_dir: Path) -> list[Plot]:
    """Draw one stage's plots into out_dir; (file name, caption) for each PNG written.

    Dispatches on the stage's `type` through `_TYPE_PLOTS`; any stage with an `eval` block also
    gets the win/tie/loss bars. A plotter whose data is absent draws nothing.
    """
    plotters = [*_TYPE_PLOTS.get(str(stage.get("type", "")), []), _plot_eval]
    slug = _slug(name)
    return [plot for plotter in plotters for plot in plotter(name, stage, out_dir, slug)]


def _blocks(data: dict[str, Any], out_dir: Path) -> list[Block]:
    """The report as a neutral list of blocks, rendered to both HTML and markdown."""
    stages = [(str(k), v) for k, v in data["stages"].items() if isinstance(v, dict)]
    ep_rows, details = _endpoint_rows(stages), _detail_rows(stages)
    blocks: list[Block] = [
        ("h2", "Run"), ("table", ["field", "value"], _header_rows(data)),
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
    data = _load(run_dir)
    out_dir = run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    blocks = _blocks(data, out_dir)
    title = f"synthkd run report: {data.get('pipeline') or run_dir.name}"
    html_path, md_path = out_dir / "index.html", out_dir / "report.md"
    html_path.write_text(_render_html(title, blocks), encoding="utf-8")
    md_path.write_text(_render_md(title, blocks), encoding="utf-8")
    return html_path, md_path
