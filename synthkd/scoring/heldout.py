"""Judge-free held-out evaluation of a served student against the teacher.

The protocol of MiniLLM and DistiLLM: the student's greedy answers scored by ROUGE-L against the
teacher's answers, the student's NLL of the teacher's answers (when its weights are local), and
gold accuracy on the rows that have gold; every figure with a bootstrap interval over prompts.
Lion and DPO call this before training and after every iteration, the eval stage at the end.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Mapping, Sequence

from synthkd.client.accounting import Meter
from synthkd.client.replies import Result
from synthkd.config.endpoints import Sampling
from synthkd.chat import answer_call
from synthkd.items import Item
from synthkd.prompts import Prompt
from synthkd.records import HeldoutFigures, HeldoutRow, Interval
from synthkd.scoring.metrics import gold_match, label_rivals, rouge_l_f1, summary


def score_answers(items: Sequence[Item], answers: Mapping[str, str], reference: Mapping[str, str]) -> tuple[list[HeldoutRow], HeldoutFigures]:
    """Per-item ROUGE-L against the reference and gold match; (rows, figures). Pure."""
    rows = []
    rivals = dict(zip((x.id for x in items), label_rivals([x.gold for x in items], [x.family for x in items])))
    for x in items:
        if x.id not in answers or x.id not in reference:
            continue
        rows.append(HeldoutRow(id=x.id, instruction=x.instruction, answer=answers[x.id], reference=reference[x.id],
                               rouge_l=rouge_l_f1(answers[x.id], reference[x.id]), gold=x.gold,
                               gold_correct=gold_match(answers[x.id], x.gold, rivals[x.id]) if x.gold is not None else None))
    graded = [1.0 if r.gold_correct else 0.0 for r in rows if r.gold_correct is not None]
    return rows, HeldoutFigures(n=len(rows), rouge_l=Interval.model_validate(summary([r.rouge_l for r in rows])),
                                gold_accuracy=Interval.model_validate(summary(graded)) if graded else None)


class HeldoutEvaluator:
    """Evaluates whatever the student endpoint serves now; the teacher's reference answers are asked once."""

    def __init__(self, rt: Any, items: Sequence[Item], *, teacher: str, student: str, template: Prompt, sampling: Sampling, nll: bool = True) -> None:
        self.rt, self.items = rt, list(items)
        self.teacher, self.student, self.template, self.sampling, self.nll = teacher, student, template, sampling, nll
        self.reference: dict[str, str] = {}
        self.ended: dict[str, bool] = {}  # per reference: False where the teacher's answer was cut by max_tokens
        self.last_rows: list[HeldoutRow] = []  # per-prompt rows of the latest evaluate(), for a dataset

    async def _results(self, endpoint: str, label: str, meter: Meter, logprobs: bool = False) -> dict[str, Result]:
        calls = [answer_call(self.template, x.instruction, self.sampling) for x in self.items]
        if logprobs:
            calls = [replace(c, logprobs=True) for c in calls]
        results = await self.rt.call_all(endpoint, label, calls, meter)
        # An empty answer is an answer (it scores 0); only failed calls are left out.
        return {x.id: r for x, r in zip(self.items, results) if r.ok}

    async def _answers(self, endpoint: str, label: str, meter: Meter) -> dict[str, str]:
        return {k: (r.text or "").strip() for k, r in (await self._results(endpoint, label, meter)).items()}

    async def teacher_reference(self, meter: Meter, label: str = "held-out: teacher answers") -> HeldoutFigures:
        """The teacher's answers (the reference) and the teacher's own figures: the ceiling.

        The teacher's NLL of its answers comes from the logprobs its server returns with them (a served teacher: vLLM
        always can), so no second pass of the teacher's weights is needed; where the replies have none, from its
        local weights. A hosted teacher is not asked for logprobs (some models refuse the parameter): no NLL."""
        weights = self._local_weights(self.teacher) if self.nll else None
        results = await self._results(self.teacher, label, meter, logprobs=weights is not None)
        # Prompts the teacher left empty have no reference and are not scored.
        self.reference = {k: t for k, r in results.items() if (t := (r.text or "").strip())}
        self.ended = {k: not results[k].truncated for k in self.reference}
        _, out = score_answers(self.items, self.reference, self.reference)
        out.answered = len(self.reference)
        if weights:
            returned = [results[k].logprobs for k in self.reference]
            if returned and all(returned):
                out.nll = Interval.model_validate(summary([-sum(lp) / len(lp) for lp in returned]))
            else:
                out.nll = await self._nll(weights)
        return out

    async def evaluate(self, label: str, meter: Meter) -> HeldoutFigures:
        """The served student's figures on the held-out set."""
        if not self.reference:
            await self.teacher_reference(meter)
        answers = await self._answers(self.student, f"{label}: student answers", meter)
        rows, out = score_answers(self.items, answers, self.reference)
        out.answered = len(answers)
        weights = self._local_weights(self.student)
        if self.nll and weights:
            out.nll = await self._nll(weights)
        out.weights = self.rt.current_weights(self.student)
        out.examples = rows[:3]
        self.last_rows = rows
        return out

    def _local_weights(self, endpoint: str) -> str | None:
        if not self.rt.config.endpoints[endpoint].served:
            return None
        weights = self.rt.current_weights(endpoint)
        return self.rt.servers.resolve_model_path(weights) if weights else None

    async def _nll(self, weights: str) -> Interval:
        from synthkd.scoring.nll import cached_answer_nll

        scored = [x for x in self.items if x.id in self.reference]
        pairs = [(x.instruction, self.reference[x.id]) for x in scored]
        ended = [self.ended.get(x.id, True) for x in scored]
        values = await asyncio.to_thread(cached_answer_nll, weights, pairs, self.rt.settings.home / "nll", ended)
        return Interval.model_validate(summary(values))


def brief(figures: HeldoutFigures | Mapping[str, Any]) -> str:
    """One line: ROUGE-L, NLL and gold accuracy with their intervals."""
    f = figures if isinstance(figures, HeldoutFigures) else HeldoutFigures.model_validate(figures)
    parts = [f"{name} {value.text(digits)}" for name, value, digits in (("ROUGE-L", f.rouge_l, 1), ("NLL", f.nll, 2), ("gold acc", f.gold_accuracy, 2))
             if value is not None]
    return ", ".join(parts)


def heldout_curve(stage: Mapping[str, Any]) -> list[tuple[str, HeldoutFigures]]:
    """(label, figures) for a stage's held-out evaluations in run.json, in order: base student, each iteration, the
    final imitation (Lion), teacher."""
    def figures(value: Any) -> HeldoutFigures | None:
        return HeldoutFigures.model_validate(value) if isinstance(value, dict) else None

    points: list[tuple[str, HeldoutFigures]] = []
    if base := figures(stage.get("heldout_base")):
        points.append(("base student", base))
    for it in stage.get("iterations", []) or []:
        if isinstance(it, dict) and (fig := figures(it.get("heldout"))):
            points.append((f"iteration {it.get('iteration')}", fig))
    final = stage.get("final_imitation") if isinstance(stage.get("final_imitation"), dict) else {}
    if fig := figures(final.get("heldout")):  # Lion's final_imitation
        points.append(("final imitation", fig))
    ev = stage.get("eval") if isinstance(stage.get("eval"), dict) else {}
    if isinstance(ev.get("student"), dict) and "rouge_l" in ev["student"] and (fig := figures(ev["student"])):  # an eval stage
        points.append(("student", fig))
    teacher = figures(stage.get("heldout_teacher") or ev.get("teacher"))
    if points and teacher is not None:
        points.append(("teacher", teacher))
    return points


def heldout_lines(stage: Mapping[str, Any]) -> list[str]:
    """What `synthkd status` prints about held-out progress."""
    return [f"held-out {label:<14} {brief(fig)}" for label, fig in heldout_curve(stage)]


def _cell(value: Interval | None, digits: int) -> str:
    return value.text(digits) if value is not None else "-"


def heldout_table(stage: Mapping[str, Any]) -> str:
    """The held-out curve as a text table (base student -> each iteration -> teacher), or "" if none."""
    points = heldout_curve(stage)
    if not points:
        return ""
    rows = [("", "ROUGE-L vs teacher", "NLL of teacher answers", "gold accuracy")]
    for label, fig in points:
        rouge = "100 (reference)" if label == "teacher" else _cell(fig.rouge_l, 1)
        rows.append((label, rouge, _cell(fig.nll, 2), _cell(fig.gold_accuracy, 2)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
