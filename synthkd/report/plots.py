"""The report's plots: one or more matplotlib PNGs per stage, chosen by the stage's type."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator, PercentFormatter  # noqa: E402

from synthkd.dpo.stage import DPOIteration  # noqa: E402
from synthkd.lion.stage import LionIteration  # noqa: E402
from synthkd.montessori.stage import MontessoriIteration  # noqa: E402
from synthkd.records import StageStats, TrainMetrics  # noqa: E402
from synthkd.report.readers import WinsTiesLosses, read_stage  # noqa: E402
from synthkd.report.tables import _fmt, _num, _slug  # noqa: E402
from synthkd.scoring.heldout import heldout_curve  # noqa: E402
from synthkd.skd.stage import SKDStats  # noqa: E402
from synthkd.stages.evaluate import EvalStats  # noqa: E402

FIG_SIZE = (6.0, 3.2)
DPI = 100
IMG_W, IMG_H = round(FIG_SIZE[0] * DPI), round(FIG_SIZE[1] * DPI)
WTL_COLORS = ("#4c9a2a", "#9e9e9e", "#c0392b")

Plot = tuple[str, str]  # (PNG file name inside the report directory, caption)
Plotter = Callable[[str, StageStats, Path, str], list[Plot]]


@contextmanager
def _figure(path: Path | IO[bytes], ncols: int = 1) -> Iterator[tuple[Any, Any]]:
    """Yield (fig, axes); save to path (or a binary file object) on success; always close the figure."""
    with plt.rc_context({"text.parse_math": False, "font.size": 9}):
        fig, axes = plt.subplots(1, ncols, figsize=FIG_SIZE, dpi=DPI, layout="constrained")
        try:
            yield fig, axes
            fig.savefig(path, dpi=DPI)
        finally:
            plt.close(fig)


def _series(points: Iterable[tuple[int, float | None]]) -> tuple[list[int], list[float]]:
    """(iterations, values) for the (iteration, value) points whose value is a finite number."""
    pts = [(x, _num(y)) for x, y in points]
    return [x for x, y in pts if y is not None], [y for _, y in pts if y is not None]


def _numbers(stage: StageStats) -> list[int]:
    """The iteration numbers of every iteration the stage recorded (an x axis that covers them all)."""
    return [it.iteration for it in stage.iterations]


def _label(ax: Any, title: str, xlabel: str, ylabel: str, iters: list[int] | None = None) -> None:
    """Title and axis labels; with `iters`, an x axis of whole iteration numbers covering all of them."""
    ax.set(title=title if len(title) <= 60 else title[:59] + "…", xlabel=xlabel, ylabel=ylabel)
    if iters:
        ax.set_xlim(min(iters) - 0.5, max(iters) + 0.5)
        ticks = sorted(set(iters))
        ax.xaxis.set_major_locator(FixedLocator(ticks) if len(ticks) <= 12 else MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _plot_lion(name: str, stage: StageStats, out: Path, slug: str) -> list[Plot]:
    """Lion: hard fraction, and mean teacher vs student referee score, per iteration."""
    iters, plots = [it for it in stage.iterations if isinstance(it, LionIteration)], []
    xs, ys = _series((it.iteration, it.hard_fraction) for it in iters)
    if xs:
        with _figure(out / f"{slug}-hard_fraction.png") as (_, ax):
            ax.plot(xs, ys, marker="o")
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            _label(ax, f"{name}: hard fraction", "iteration", "hard fraction", _numbers(stage))
        plots.append((f"{slug}-hard_fraction.png", f"Stage {name}: share of judged instructions the "
                      "student answered clearly worse than the teacher (hard), per iteration."))
    teacher = _series((it.iteration, it.mean_teacher_score) for it in iters)
    student = _series((it.iteration, it.mean_student_score) for it in iters)
    if teacher[0] or student[0]:
        with _figure(out / f"{slug}-scores.png") as (_, ax):
            ax.plot(*teacher, marker="o", label="teacher")
            ax.plot(*student, marker="s", label="student")
            ax.legend()
            _label(ax, f"{name}: mean referee score", "iteration", "mean score", _numbers(stage))
        plots.append((f"{slug}-scores.png", f"Stage {name}: mean referee score of teacher and "
                      "student answers, per iteration."))
    return plots


def _plot_dpo_training(name: str, stage: StageStats, out: Path, slug: str) -> list[Plot]:
    """DPO (and Lion with its DPO step): pairs mined and the trained reward margin per iteration (two panels)."""
    trained = [it for it in stage.iterations if isinstance(it, (DPOIteration, LionIteration))]
    xp, yp = _series((it.iteration, it.pairs_mined) for it in trained if isinstance(it, DPOIteration))
    xm, ym = _series((it.iteration, it.dpo.reward_margin if isinstance(it.dpo, TrainMetrics) else None) for it in trained)
    if not (xp or xm):
        return []
    skipped = [(it.iteration, it.dpo) for it in trained if isinstance(it.dpo, str)]
    with _figure(out / f"{slug}-pairs_margin.png", ncols=2) as (fig, (left, right)):
        left.bar_label(left.bar(xp, yp, color="#3b75af"), fmt="%g")
        left.margins(y=0.12)
        _label(left, "pairs mined", "iteration", "pairs", _numbers(stage))
        right.plot(xm, ym, marker="o", color="#e07b39")
        for x, _ in skipped:  # no training that iteration: say so where its point would be
            right.text(x, 0.5, "not trained", transform=right.get_xaxis_transform(), ha="center", color="#777")
        if not (xm or skipped):
            right.text(0.5, 0.5, "no DPO results", transform=right.transAxes, ha="center", color="#777")
        _label(right, "DPO reward margin", "iteration", "reward margin", _numbers(stage))
        fig.suptitle(name[:60])
    cap = f"Stage {name}: preference pairs mined and DPO reward margin after training, per iteration."
    notes = "; ".join(f"iteration {x}: {why}" for x, why in skipped)
    return [(f"{slug}-pairs_margin.png", cap + (f" Not trained: {notes}." if notes else ""))]


def _plot_dpo_heldout(name: str, stage: StageStats, out: Path, slug: str) -> list[Plot]:
    """DPO: held-out wins/ties/losses against the previous iteration, stacked per iteration."""
    pts = [(it.iteration, WinsTiesLosses.model_validate(it.heldout_vs_previous)) for it in stage.iterations
           if isinstance(it, DPOIteration) and it.heldout_vs_previous is not None]
    pts = [(x, h) for x, h in pts if any(v is not None for v in h.counts())]
    if not pts:
        return []
    xs = [x for x, _ in pts]
    with _figure(out / f"{slug}-heldout.png") as (_, ax):
        bottom = [0.0] * len(pts)
        for i, (key, color) in enumerate(zip(("wins", "ties", "losses"), WTL_COLORS)):
            vals = [h.counts()[i] or 0.0 for _, h in pts]
            ax.bar(xs, vals, bottom=bottom, color=color, label=key)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        _label(ax, f"{name}: held-out vs previous iteration", "iteration", "prompts", xs)
    rates = ", ".join(f"{x}: {h.win_rate:.0%}" for x, h in pts if h.win_rate is not None)
    cap = f"Stage {name}: each iteration's student against the previous one on held-out prompts."
    return [(f"{slug}-heldout.png", cap + (f" Win rate by iteration: {rates}." if rates else ""))]


def _plot_eval(name: str, stage: StageStats, out: Path, slug: str) -> list[Plot]:
    """An eval stage: the student's wins/ties/losses against the teacher."""
    ev = stage.eval if isinstance(stage, EvalStats) else None
    if ev is None:
        return []
    counts = [_num(ev.wins), _num(ev.ties), _num(ev.losses)]
    if all(c is None for c in counts):
        return []
    with _figure(out / f"{slug}-eval.png") as (_, ax):
        ax.bar_label(ax.bar(["wins", "ties", "losses"], [c or 0.0 for c in counts], color=WTL_COLORS), fmt="%g")
        ax.margins(y=0.12)
        _label(ax, f"{name}: student vs teacher", "outcome for the student", "prompts")
    cap = f"Stage {name}: student vs teacher on {_fmt(ev.n)} eval prompts " \
          f"(wins / ties / losses: {' / '.join(_fmt(c) for c in counts)})."
    if (share := _num(ev.student_share_of_teacher)) is not None:
        cap += f" Student's score is {share:.1%} of the teacher's"
        cap += f" (mean {_fmt(ev.mean_student_score, '.4g')} vs {_fmt(ev.mean_teacher_score, '.4g')})."
    if (em := _num(ev.exact_match)) is not None:
        cap += f" Exact match {em:.1%} on {_fmt(ev.exact_match_n)} prompts."
    return [(f"{slug}-eval.png", cap)]


def _plot_pr_curve(name: str, stage: StageStats, out: Path, slug: str) -> list[Plot]:
    """SKD: the critic's precision-recall curve with the chosen operating point."""
    if not isinstance(stage, SKDStats) or stage.critic is None or stage.critic.pr_curve is None:
        return []
    pr = stage.critic.pr_curve
    pts = list(zip(pr.recall, pr.precision))
    if not pts:
        return []
    cr, cp = pr.chosen.get("recall"), pr.chosen.get("precision")
    with _figure(out / f"{slug}-pr_curve.png") as (_, ax):
        ax.plot([r for r, _ in pts], [p for _, p in pts], marker=".")
        if cr is not None and cp is not None:
            ax.scatter([cr], [cp], color="#c0392b", zorder=3, label=f"threshold {_fmt(pr.threshold, '.4g')}")
            ax.legend()
        ax.set(xlim=(0, 1.05), ylim=(0, 1.05))
        _label(ax, f"{name}: critic precision-recall", "recall", "precision")
    cap = f"Stage {name}: precision-recall curve of the critic."
    if cr is not None and cp is not None:
        cap += f" Chosen threshold {_fmt(pr.threshold, '.4g')}: precision {cp:.2f}, recall {cr:.2f}."
    return [(f"{slug}-pr_curve.png", cap)]


# What a Montessori signal's values mean, and which side of `midpoint` helps the student.
_SIGNAL_AXES = {
    "influence": ("influence (reference loss after - before)", 0.0, "negative helps"),
    "judge": ("judge score (1-10)", 5.5, "above 5.5 counts as helpful"),
    "icl_accuracy": ("in-context accuracy with the candidate as demonstration", None, "compared with no demonstration"),
}


def _plot_signal(name: str, stage: StageStats, out: Path, slug: str) -> list[Plot]:
    """Montessori: histogram of each iteration's per-candidate signal (influence, judge score or ICL accuracy)."""
    series = []
    for it in stage.iterations:
        if not isinstance(it, MontessoriIteration) or it.signal is None:
            continue
        sig = it.signal
        vals = list(sig.values)
        if vals:
            series.append((it.iteration, sig.kind or "influence", vals, _num(it.icl_baseline)))
    if not series:
        return []
    kind = series[-1][1]
    xlabel, midpoint, meaning = _SIGNAL_AXES.get(kind, (kind, None, ""))
    all_vals = [v for _, _, vals, _ in series for v in vals]
    bins = max(5, min(40, round(math.sqrt(len(all_vals)))))
    span = (min(all_vals), max(all_vals))  # one set of bins for every iteration, so they compare
    with _figure(out / f"{slug}-signal.png") as (_, ax):
        for n, _, vals, _ in series:
            ax.hist(vals, bins=bins, range=span if span[1] > span[0] else None, alpha=0.6 if len(series) > 1 else 1.0,
                    label=f"iteration {n}")
        line = midpoint if midpoint is not None else series[-1][3]
        if line is not None:
            ax.axvline(line, color="black", linewidth=0.8)
        if len(series) > 1:
            ax.legend()
        _label(ax, f"{name}: {kind} per candidate", xlabel, "candidates")
    parts = []
    for n, _, vals, base in series:
        ref = midpoint if midpoint is not None else base
        if ref is None:
            parts.append(f"iteration {n}: {len(vals)} candidates")
            continue
        better = sum(v < ref for v in vals) if kind == "influence" else sum(v > ref for v in vals)
        parts.append(f"iteration {n}: {len(vals)} candidates, {better} helpful")
    where = f" ({meaning})" if meaning else ""
    return [(f"{slug}-signal.png", f"Stage {name}: per-candidate {kind}{where}; " + "; ".join(parts) + ".")]


def _plot_heldout_curve(name: str, stage: StageStats, out: Path, slug: str) -> list[Plot]:
    """Judge-free held-out curve: ROUGE-L against the teacher and NLL of the teacher's answers, base to last
    iteration, with 95% bootstrap intervals and the teacher as a dashed line."""
    points = heldout_curve(stage.model_dump(exclude_none=True))
    students = [(label, fig) for label, fig in points if label != "teacher"]
    if len(students) < 1:
        return []
    teacher = dict(points).get("teacher")
    with _figure(out / f"{slug}-heldout_curve.png", ncols=2) as (fig, axes):
        for ax, key, title in zip(axes, ("rouge_l", "nll"), ("ROUGE-L vs teacher (higher: better)", "NLL of teacher answers (lower: better)")):
            found = [(i, v) for i, (_, f) in enumerate(students)
                     if (v := getattr(f, key)) is not None and v.mean is not None and v.ci_low is not None and v.ci_high is not None]
            xs, ys = [i for i, _ in found], [float(v.mean or 0.0) for _, v in found]
            lo = [float(v.mean or 0.0) - float(v.ci_low or 0.0) for _, v in found]
            hi = [float(v.ci_high or 0.0) - float(v.mean or 0.0) for _, v in found]
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label="student")
            if teacher is not None and (t := getattr(teacher, key)) is not None and t.mean is not None:
                ax.axhline(t.mean, linestyle="--", color="#777", label="teacher")
            ax.set_xticks(range(len(students)), [label.replace("iteration ", "it ") for label, _ in students], fontsize=7)
            ax.set_title(title, fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(name[:60])
    return [(f"{slug}-heldout_curve.png", f"Stage {name}: judge-free held-out evaluation of the student (95% bootstrap "
             "intervals over prompts) against the teacher.")]


# Every plotter runs for every stage and draws only where the stage's entry has its data (Lion
# iterations with a hard fraction, an SKD critic's PR curve, a Montessori signal distribution, ...):
# each plotter names the stats models that carry its figures, and plots follow what a stage recorded.
_PLOTTERS: list[Plotter] = [_plot_lion, _plot_dpo_training, _plot_dpo_heldout, _plot_pr_curve, _plot_signal, _plot_eval, _plot_heldout_curve]


def _plots_for_stage(name: str, stage: StageStats | dict[str, Any], out_dir: Path) -> list[Plot]:
    """Draw one stage's plots into out_dir; (file name, caption) for each PNG written.

    `stage` is the entry read with its stats model, or the run.json entry as it is (raw JSON: it is read here)."""
    stats = stage if isinstance(stage, StageStats) else read_stage(stage)
    slug = _slug(name)
    return [plot for plotter in _PLOTTERS for plot in plotter(name, stats, out_dir, slug)]
