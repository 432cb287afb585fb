"""From per-prompt scores to the comparison efficacy.json reports: metrics with intervals, paired differences
against each arm's baseline, Holm's correction across arms, verdicts, teacher-hacking flags and plain conclusions.

One scoring rule everywhere (`prompt_scores`): every held-out prompt is scored for every arm; a missing or empty
student answer is a wrong answer with ROUGE-L 0; a prompt the teacher left empty scores ROUGE-L 0 for every arm (it
cannot separate arms) and has no NLL (there is nothing to be likely), the same prompts for every arm.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

from synthkd.efficacy import stats
from synthkd.efficacy.result import ArmResult, Difference, FamilyGold, McNemar, SetComparison
from synthkd.items import Item
from synthkd.records import Interval
from synthkd.scoring.metrics import gold_match, label_rivals, rouge_l_f1, summary

METRICS = ("gold_accuracy", "rouge_l", "nll")
LOWER_IS_BETTER = frozenset({"nll"})


def prompt_scores(items: Sequence[Item], answers: Mapping[str, str], teacher: Mapping[str, str]) -> dict[str, list[float]]:
    """Per-prompt gold (over prompts with gold) and ROUGE-L (over all prompts), in item order."""
    rivals = label_rivals([x.gold for x in items], [x.family for x in items])
    gold = [1.0 if gold_match(answers.get(x.id) or "", x.gold, r) else 0.0 for x, r in zip(items, rivals) if x.gold is not None]
    rouge = [rouge_l_f1(answers.get(x.id) or "", teacher.get(x.id) or "") if teacher.get(x.id) else 0.0 for x in items]
    return {"gold_accuracy": gold, "rouge_l": rouge}


def nll_pairs(items: Sequence[Item], teacher: Mapping[str, str]) -> list[tuple[str, str]]:
    """(instruction, teacher answer) of the prompts the NLL is measured on: those the teacher answered."""
    return [(x.instruction, teacher[x.id]) for x in items if teacher.get(x.id)]


Runs = list[list[float]]  # one score list per training seed, aligned on the same prompts


def _metric(runs: Runs) -> Interval | None:
    if not runs or not runs[0]:
        return None
    per_prompt = [statistics.fmean(run[i] for run in runs) for i in range(len(runs[0]))]
    return Interval.model_validate(summary(per_prompt))


@dataclass
class _Pending:
    """A difference before Holm's correction: the gain (on the gain's scale) and the baseline's seed spread, which the
    verdict needs once the family's adjusted p-value is known."""

    diff: Difference
    gain: stats.PairedDifference
    spread: float


def _difference(metric: str, base: Runs, arm: Runs) -> _Pending:
    """The paired difference arm − baseline; computed on the gain's scale (−NLL for NLL) so verdicts read one way."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    b = [[sign * v for v in run] for run in base]
    a = [[sign * v for v in run] for run in arm]
    d = stats.paired_bootstrap(b, a)
    out = Difference(detectable=stats.detectable_difference(b, a), p_value=d.p_value)
    if sign > 0:
        out.mean, out.ci_low, out.ci_high = d.mean, d.ci_low, d.ci_high
    else:  # reported as arm − baseline in NLL's own direction (negative is better)
        out.mean, out.ci_low, out.ci_high = -d.mean, -d.ci_high, -d.ci_low
    if metric == "gold_accuracy" and len(base) == 1 and len(arm) == 1:
        m = stats.mcnemar([v > 0.5 for v in base[0]], [v > 0.5 for v in arm[0]])
        out.mcnemar = McNemar(b=m.b, c=m.c, p_value=m.p_value)
        out.p_value = m.p_value  # the exact test, where it applies, is the p-value the verdict uses
    return _Pending(out, d, stats.seed_spread(b))


def compare(scores: Mapping[str, Mapping[str, Mapping[str, Runs]]], baselines: Mapping[str, str | None]) -> dict[str, dict[str, SetComparison]]:
    """`scores[arm][set][metric]` -> `out[arm][set]`: metrics, differences against the baseline, teacher hacking.

    Holm's correction runs over the arms compared on the same set and metric (the family of tests a reader scans).
    """
    out: dict[str, dict[str, SetComparison]] = {arm: {} for arm in scores}
    pending: dict[tuple[str, str, str], _Pending] = {}
    for arm, sets in scores.items():
        for set_name, metrics in sets.items():
            entry = out[arm].setdefault(set_name, SetComparison())
            for metric, runs in metrics.items():
                if (m := _metric(runs)) is not None:
                    entry.metrics[metric] = m
            base = baselines.get(arm)
            if base is None or base not in scores:
                continue
            for metric, runs in metrics.items():
                base_runs = scores[base].get(set_name, {}).get(metric)
                if runs and runs[0] and base_runs and base_runs[0] and len(base_runs[0]) == len(runs[0]):
                    pending[(arm, set_name, metric)] = _difference(metric, base_runs, runs)
                    entry.vs_baseline[metric] = pending[(arm, set_name, metric)].diff
    # Training noise: the largest seed-to-seed spread of any arm trained with several seeds (the baseline), on each set
    # and metric. A comparison whose baseline has one seed (the DPO group's) must beat it too: the same training noise
    # is in every checkpoint, whether or not that arm was trained twice.
    noise: dict[tuple[str, str], float] = {}
    for sets in scores.values():
        for set_name, metrics in sets.items():
            for metric, runs in metrics.items():
                if len(runs) > 1 and runs[0]:
                    noise[(set_name, metric)] = max(noise.get((set_name, metric), 0.0), stats.seed_spread(runs))
    families: dict[tuple[str, str], dict[str, float]] = {}
    for (arm, set_name, metric), p in pending.items():
        families.setdefault((set_name, metric), {})[arm] = p.diff.p_value if p.diff.p_value is not None else 1.0
    for (set_name, metric), ps in families.items():
        for arm, p_holm in stats.holm(ps).items():
            p = pending[(arm, set_name, metric)]
            p.diff.p_holm = p_holm
            p.diff.seed_spread = max(p.spread, noise.get((set_name, metric), 0.0))
            p.diff.verdict = stats.verdict(p.gain, p.diff.seed_spread, adjusted_p=p_holm)
    for sets in out.values():
        for entry in sets.values():
            entry.teacher_hacking = hacking(entry.vs_baseline)
    return out


def hacking(vs: Mapping[str, Difference]) -> bool:
    """A proxy (ROUGE-L or NLL) pays off against the baseline while gold accuracy falls: the student imitates the
    teacher's surface better and gets fewer answers right."""
    gold = vs.get("gold_accuracy")
    if gold is None or gold.mean is None or not gold.mean < 0:
        return False
    return any(p in vs and vs[p].verdict == stats.PAYS_OFF for p in ("rouge_l", "nll"))


def per_family(items: Sequence[Item], runs: Runs) -> dict[str, FamilyGold]:
    """Gold accuracy per family (seed-averaged), over the prompts with gold, in the order `prompt_scores` used."""
    graded = [x for x in items if x.gold is not None]
    out: dict[str, list[float]] = {}
    for i, x in enumerate(graded):
        if x.family:
            out.setdefault(x.family, []).append(statistics.fmean(run[i] for run in runs))
    return {f: FamilyGold(gold_accuracy=statistics.fmean(v), n=len(v)) for f, v in sorted(out.items())}


def primary(entry: SetComparison) -> str:
    """The metric a verdict is read on: gold where the set has it, else ROUGE-L."""
    return "gold_accuracy" if "gold_accuracy" in entry.vs_baseline else "rouge_l"


def conclusions(arms: Mapping[str, ArmResult], labels: Mapping[str, str]) -> list[str]:
    """Plain-English lines: per set, which arms pay off, which are worse, and what this setup could detect."""
    lines: list[str] = []
    sets = sorted({s for a in arms.values() for s in a.sets})
    for set_name in sets:
        pays, worse, none, hacked = [], [], [], []
        detectable: list[float] = []
        for name, a in arms.items():
            entry = a.sets.get(set_name)
            if entry is None or not entry.vs_baseline:
                continue
            diff = entry.vs_baseline.get(primary(entry))
            if diff is None or diff.mean is None or diff.ci_low is None or diff.ci_high is None:
                continue
            versus = labels.get(a.baseline or "", a.baseline or "")
            what = f"{labels.get(name, name)} (vs {versus}: {diff.mean:+.3g} [{diff.ci_low:+.3g}, {diff.ci_high:+.3g}])"
            {stats.PAYS_OFF: pays, stats.WORSE: worse}.get(diff.verdict or "", none).append(what)
            if diff.verdict == stats.NO_DIFFERENCE and diff.detectable is not None and math.isfinite(diff.detectable):
                detectable.append(diff.detectable)
            if entry.teacher_hacking:
                hacked.append(labels.get(name, name))
        metric_name = "gold accuracy" if any(primary(a.sets[set_name]) == "gold_accuracy" for a in arms.values() if set_name in a.sets) else "ROUGE-L"
        head = f"{set_name} ({metric_name}):"
        if pays:
            lines.append(f"{head} pays off: {'; '.join(pays)}.")
        if worse:
            lines.append(f"{head} worse than its baseline: {'; '.join(worse)}.")
        if none:
            tail = f" the smallest difference this setup could detect is about {min(detectable):.3g}" if detectable else ""
            lines.append(f"{head} no detectable difference at this budget: {'; '.join(none)};{tail}.")
        if hacked:
            lines.append(f"{head} teacher hacking (the proxy rises while gold falls): {', '.join(hacked)}.")
    return lines
