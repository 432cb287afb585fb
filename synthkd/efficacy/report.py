"""The `synthkd efficacy` report: efficacy.json rendered as markdown and as one self-contained HTML page.

The result is read as `EfficacyResult` (tolerantly: an arm skipped before anything ran has no spend, training or
sets; a probe may lack figures; junk entries are dropped), so a partial result still renders. Text from the data (labels, reasons, model answers) is
escaped by the shared renderers in synthkd.report.render.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from synthkd.efficacy.result import ArmResult, ArmSpend, Difference, EfficacyResult, Example, ReferenceSet, SetComparison, Training
from synthkd.efficacy.stats import NO_DIFFERENCE
from synthkd.items import Item
from synthkd.report.plots import _figure
from synthkd.report.render import Block, _render_html, _render_md
from synthkd.records import Interval
from synthkd.report.tables import _fmt, _num
from synthkd.scoring.metrics import gold_match, rouge_l_f1

# metric -> (name, scale applied for display, number format, unit of a level, unit of a gain)
_METRICS = {"gold_accuracy": ("gold accuracy", 100.0, ".1f", "%", " pts"),
            "rouge_l": ("ROUGE-L", 1.0, ".1f", "", ""),
            "nll": ("NLL", 1.0, ".3f", "", "")}
SET_COLS = ["arm", "gold accuracy", "ROUGE-L", "NLL (lower: better)", "gain vs baseline", "Holm p", "verdict"]
SPEND_COLS = ["arm", "teacher calls", "input tokens", "output tokens", "dollars vs cap", "untrained paid calls",
              "distinct examples", "steps", "student wall min", "generation yield"]
HACKING = "⚠ TEACHER HACKING: proxy up while gold down"


def _interval(summary: Interval | Difference | None, metric: str, gain: bool = False) -> str:
    """'mean [low, high]' in the metric's display units; a gain is signed; '–' without a mean."""
    _, scale, spec, unit, gain_unit = _METRICS[metric]
    mean, lo, hi = (_num(getattr(summary, k, None)) for k in ("mean", "ci_low", "ci_high"))
    if mean is None:
        return "–"
    form = ("+" if gain else "") + spec
    text = f"{mean * scale:{form}}{gain_unit if gain else unit}"
    return text + (f" [{lo * scale:{form}}, {hi * scale:{form}}]" if lo is not None and hi is not None else "")


def _usd4(value: Any) -> str:
    """Dollars to 4 significant digits."""
    return _fmt(value, ".4g", "$")


def _label(arms: Mapping[str, ArmResult], name: str | None) -> str:
    """An arm's human label, or its name."""
    arm = arms.get(str(name))
    return str((arm.label if arm else None) or name)


def _set_names(result: EfficacyResult) -> list[str]:
    """Every held-out set named by the reference or by an arm, in first-seen order."""
    names = list(result.reference.sets) + [s for arm in result.arms.values() for s in arm.sets]
    return list(dict.fromkeys(names))


def _has_gold(result: EfficacyResult, set_name: str) -> bool:
    """Whether a set has gold answers (a gold count in the reference, or any gold accuracy scored on it)."""
    ref = result.reference.sets.get(set_name) or ReferenceSet()
    if (ref.gold_n or 0) > 0 or "gold_accuracy" in ref.teacher:
        return True
    return any("gold_accuracy" in (a.sets.get(set_name) or SetComparison()).metrics for a in result.arms.values())


def _primary(result: EfficacyResult, set_name: str) -> str:
    """The metric gains are judged on: gold accuracy where the set has gold, else ROUGE-L."""
    return "gold_accuracy" if _has_gold(result, set_name) else "rouge_l"


def _levels(metrics: Mapping[str, Interval]) -> list[str]:
    """The three metric cells of a row."""
    return [_interval(metrics.get(m), m) for m in _METRICS]


def _verdict(arms: Mapping[str, ArmResult], arm: ArmResult, row: SetComparison, vs: Difference, metric: str) -> str:
    """The verdict against the named baseline, with the detectable difference and a teacher-hacking flag."""
    text, (_, scale, spec, _, unit) = vs.verdict or "–", _METRICS[metric]
    if text == NO_DIFFERENCE and (detectable := _num(vs.detectable)) is not None:
        text += f" (smallest detectable: {detectable * scale:{spec}}{unit})"
    if arm.baseline:
        text += f" vs {_label(arms, arm.baseline)}"
    return text + (f" {HACKING}" if row.teacher_hacking else "")


def _arm_row(arms: Mapping[str, ArmResult], name: str, set_name: str, primary: str) -> list[str]:
    """One arm's row in a held-out set's table."""
    arm = arms[name]
    label, status = _label(arms, name), arm.status or "?"
    if status != "done":
        return [label, "–", "–", "–", "–", "–", f"{status}: {arm.reason or 'no reason given'}"]
    row = arm.sets.get(set_name)
    if row is None:
        return [label, "–", "–", "–", "–", "–", "no results on this set"]
    if not arm.baseline:
        return [label, *_levels(row.metrics), "(baseline)", "–", "–"]
    vs = row.vs_baseline.get(primary) or Difference()
    p = _num(vs.p_holm)
    return [label, *_levels(row.metrics), _interval(vs, primary, gain=True),
            f"{p:.3g}" if p is not None else "–", _verdict(arms, arm, row, vs, primary)]


def _set_table(result: EfficacyResult, set_name: str) -> list[Block]:
    """A held-out set's heading, note and table: floor, ceiling, then every arm."""
    ref, primary = result.reference.sets.get(set_name) or ReferenceSet(), _primary(result, set_name)
    arms = result.arms
    headers = SET_COLS[:4] + [f"gain vs baseline ({_METRICS[primary][0]})"] + SET_COLS[5:]
    rows = [["untrained student (floor)", *_levels(ref.floor), "–", "–", "reference"],
            ["teacher (ceiling)", *_levels(ref.teacher), "–", "–", "reference"]]
    rows += [_arm_row(arms, name, set_name, primary) for name in arms]
    note = f"{_fmt(ref.n)} prompts, {_fmt(ref.gold_n)} with gold; gains judged on {_METRICS[primary][0]}" \
           " (arm minus its baseline; 95% paired bootstrap interval; p Holm-corrected across arms)."
    return [("h2", f"Held-out set: {set_name}"), ("p", note), ("table", headers, rows), *_family_table(arms, set_name)]


def _family_table(arms: Mapping[str, ArmResult], set_name: str) -> list[Block]:
    """Gold accuracy per family (prompts in the family with gold), one row per arm: where a method gains or loses."""
    per = {name: (arm.sets.get(set_name) or SetComparison()).per_family for name, arm in arms.items()}
    families = sorted({f for fam in per.values() for f in fam})
    if not families:
        return []
    counts = {f: next((fam[f].n for fam in per.values() if f in fam), None) for f in families}
    headers = ["arm"] + [f"{f} (n={_fmt(counts[f])})" for f in families]
    rows = [[_label(arms, name)] + [_fmt(100 * v, ".0f") + "%" if f in fam and (v := _num(fam[f].gold_accuracy)) is not None else "–"
                                    for f in families] for name, fam in per.items() if fam]
    return [("p", f"Gold accuracy per family on {set_name}:"), ("table", headers, rows)]


def _spend_row(arms: Mapping[str, ArmResult], name: str) -> list[str]:
    """One arm's teacher spend and training."""
    arm = arms[name]
    spend, training = arm.spend or ArmSpend(), arm.training or Training()
    cost, cap = _num(spend.cost_usd), _num(spend.cap_usd)
    dollars = "–" if cost is None else f"{_usd4(cost)} of {_usd4(cap)}" + (" OVER CAP" if cap is not None and cost > cap else "")
    untrained = f"{_fmt(spend.untrained_calls)} ({_usd4(spend.untrained_usd)})"
    wall = _num(training.wall_s)
    status = "" if arm.status == "done" else f" ({arm.status or '?'}: {arm.reason or 'no reason given'})"
    label = _label(arms, name) + status
    gen = training.generation
    made = f"{_fmt(gen.usable)}/{_fmt(gen.calls)} ({_fmt(gen.share, '.0%')})" if gen else "–"
    return [label, _fmt(spend.calls), _fmt(spend.input_tokens), _fmt(spend.output_tokens),
            dollars, untrained, _fmt(training.examples), _fmt(training.steps),
            _fmt(wall / 60 if wall is not None else None, ".1f"), made]


def _header(result: EfficacyResult) -> str:
    """The one line saying what was compared, under which budget and steps."""
    t, s = result.teacher, result.student
    price = f" (${_fmt(t.input_per_million, '.4g')} in / ${_fmt(t.output_per_million, '.4g')} out per " \
            f"million tokens{', nominal price' if t.nominal_price else ''})" if t.input_per_million is not None else ""
    extra = f" (+{_fmt(result.extra_steps)} in the DPO comparison)" if result.extra_steps else ""
    wall = _num(result.wall_s)
    return (f"Teacher {t.model or '?'}{price} → student {s.model or '?'}; tier {result.tier or '?'}; "
            f"budget {_usd4(result.budget_usd)} per arm; {_fmt(result.steps)} optimizer steps per arm{extra}, "
            f"batch {_fmt(result.batch)}" + (f"; wall {wall / 60:.1f} min." if wall is not None else "."))


def _blocks(result: EfficacyResult) -> list[Block]:
    """The tables, probes and conclusion shared by the markdown and the HTML."""
    blocks: list[Block] = [("p", _header(result))]
    if result.command:
        blocks.append(("p", f"Command: {result.command}"))
    sets, arms = _set_names(result), result.arms
    blocks += [b for s in sets for b in _set_table(result, s)] or [("p", "No held-out results.")]
    blocks += [("h2", "Teacher spend and training per arm"), ("table", SPEND_COLS, [_spend_row(arms, n) for n in arms])
               if arms else ("p", "No arms."), ("p", f"Teacher answers for scoring (shared by all arms): {_usd4(result.reference.cost_usd)}.")]
    probes = result.probes.present()
    blocks += [("h2", "Probes")] + ([("p", f"{k}: {p.status or '?'} — {p.summary or 'no summary'}")
                                      for k, p in probes] or [("p", "No probes ran.")])
    lines = result.conclusion
    return blocks + [("h2", "What to conclude")] + ([("p", c) for c in lines] or [("p", "No conclusion recorded.")])


def markdown(result: EfficacyResult | Mapping[str, Any]) -> str:
    """The efficacy report as a markdown document."""
    return _render_md("synthkd efficacy", _blocks(EfficacyResult.read(result)))


def _png(draw: Callable[[Any], None]) -> str:
    """A plot drawn by `draw(ax)` as a data: URI of a PNG."""
    buf = io.BytesIO()
    with _figure(buf) as (_, ax):
        draw(ax)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _gain_plot(result: EfficacyResult, set_name: str) -> Block | None:
    """Gain on the primary metric against each arm's teacher dollars, with intervals; None with nothing to plot."""
    arms, primary = result.arms, _primary(result, set_name)
    name, scale = _METRICS[primary][0], _METRICS[primary][1]
    pts = []
    for arm_name, arm in ((n, a) for n, a in arms.items() if a.status == "done"):  # partial results mislead
        cost, row = _num((arm.spend or ArmSpend()).cost_usd), arm.sets.get(set_name)
        vs = (row.vs_baseline.get(primary) if row else None) or Difference()
        mean = 0.0 if row and not arm.baseline else _num(vs.mean)  # a baseline's gain is 0 by definition
        if cost is not None and mean is not None:
            lo, hi = _num(vs.ci_low), _num(vs.ci_high)
            pts.append((cost, mean * scale, max(0.0, (mean - (lo if lo is not None else mean)) * scale),
                        max(0.0, ((hi if hi is not None else mean) - mean) * scale), _label(arms, arm_name)))
    if not pts:
        return None

    def draw(ax: Any) -> None:
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[[p[2] for p in pts], [p[3] for p in pts]],
                    fmt="o", capsize=3)
        for x, y, _, _, label in pts:
            ax.annotate(label[:32], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(title=f"{set_name[:40]}: gain against teacher dollars", xlabel="teacher dollars spent",
               ylabel=f"gain in {name}{' (pts)' if primary == 'gold_accuracy' else ''} vs baseline")
        ax.margins(x=0.15)  # room for the labels of the outermost arms
        ax.grid(alpha=0.3)
    cap = f"Held-out set {set_name}: each arm's gain in {name} over its baseline (95% interval) against its teacher spend."
    return ("fig", _png(draw), cap)


def _gold_proxy_plot(result: EfficacyResult) -> Block | None:
    """Gold accuracy against ROUGE-L, one point per arm per set with gold; arrows from the baseline where an arm
    hacks the teacher (proxy up, gold down); None with nothing to plot."""
    arms, pts = result.arms, []
    for set_name in (s for s in _set_names(result) if _has_gold(result, s)):
        for arm_name, arm in ((n, a) for n, a in arms.items() if a.status == "done"):
            row = arm.sets.get(set_name) or SetComparison()
            x = _num(getattr(row.metrics.get("rouge_l"), "mean", None))
            y = _num(getattr(row.metrics.get("gold_accuracy"), "mean", None))
            if x is not None and y is not None:
                pts.append((set_name, arm_name, x, y, _label(arms, arm_name), row.teacher_hacking))
    if not pts:
        return None
    where = {(s, n): (x, y) for s, n, x, y, _, _ in pts}

    def draw(ax: Any) -> None:
        for set_name in dict.fromkeys(p[0] for p in pts):
            mine = [p for p in pts if p[0] == set_name]
            ax.scatter([p[2] for p in mine], [p[3] for p in mine], label=set_name[:30])
        for set_name, arm_name, x, y, label, hacked in pts:
            ax.annotate(label[:28] + (" ⚠ hacking" if hacked else ""), (x, y), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color="#c0392b" if hacked else "black")
            base = (set_name, str(arms[arm_name].baseline))
            if hacked and base in where:  # the move from the baseline: right (proxy up) and down (gold down)
                ax.annotate("", xy=(x, y), xytext=where[base], arrowprops={"arrowstyle": "->", "color": "#c0392b"})
        ax.set(title="gold against proxy", xlabel="ROUGE-L vs teacher (proxy)", ylabel="gold accuracy")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    hacked = sorted({f"{p[4]} ({p[0]})" for p in pts if p[5]})
    cap = "Gold accuracy against the ROUGE-L proxy per arm, on sets with gold."
    cap += f" Teacher hacking (proxy up, gold down vs the baseline; red arrow): {', '.join(hacked)}." if hacked else ""
    return ("fig", _png(draw), cap)


def _example_blocks(result: EfficacyResult) -> list[Block]:
    """Per set, a table of held-out prompts with the teacher's and each arm's answers."""
    arms, blocks = result.arms, []
    for set_name, rows in result.examples.items():
        names = list(dict.fromkeys([*arms, *(a for r in rows for a in r.answers)]))
        names = [n for n in names if any(n in r.answers for r in rows)]
        table = [[r.instruction, r.gold if r.gold is not None else "–", r.teacher, *(r.answers.get(n, "–") for n in names)]
                 for r in rows]
        if table:
            blocks += [("h3", f"Held-out set: {set_name}"),
                       ("table", ["prompt", "gold", "teacher", *(_label(arms, n) for n in names)], table)]
    return [("h2", "Side-by-side examples"), *(blocks or [("p", "No examples recorded.")])]


def write_html(result: EfficacyResult | Mapping[str, Any], path: Path) -> None:
    """Write the efficacy report as one self-contained HTML page (plots inlined as base64 PNGs) to `path`."""
    result = EfficacyResult.read(result)
    plots = [_gain_plot(result, s) for s in _set_names(result)] + [_gold_proxy_plot(result)]
    figs = [p for p in plots if p is not None]
    blocks = _blocks(result) + [("h2", "Plots"), *(figs or [("p", "No plottable results.")])] + _example_blocks(result)
    title = f"synthkd efficacy: {result.teacher.model or '?'} → {result.student.model or '?'}"
    Path(path).write_text(_render_html(title, blocks), encoding="utf-8")


def pick_examples(set_rows: Mapping[str, Mapping[str, str]], teacher: Mapping[str, str], items: Sequence[Item],
                  k: int = 6) -> list[Example]:
    """The k held-out prompts where the arms' answers differ most, as `examples` rows of efficacy.json.

    A prompt scores the spread (max - min, on 0..1) of the arms' ROUGE-L against the teacher's answer, plus 1
    when the arms disagree on gold correctness, so a gold split always ranks first; ties go by id.
    """
    def score(item: Item) -> float:
        answers = [rows[item.id] for rows in set_rows.values() if item.id in rows]
        if len(answers) < 2:
            return 0.0
        rouge = [rouge_l_f1(a, teacher.get(item.id, "")) for a in answers]
        split = item.gold is not None and len({gold_match(a, item.gold) for a in answers}) > 1
        return (max(rouge) - min(rouge)) / 100.0 + (1.0 if split else 0.0)

    chosen = sorted(items, key=lambda it: (-score(it), it.id))[:k]
    return [Example(id=it.id, instruction=it.instruction, gold=it.gold, teacher=teacher.get(it.id, ""),
                    answers={arm: rows[it.id] for arm, rows in set_rows.items() if it.id in rows})
            for it in chosen]
