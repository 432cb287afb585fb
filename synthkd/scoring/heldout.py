"""Judge-free held-out evaluation of a served student against the teacher.

The protocol of MiniLLM and DistiLLM: the student's greedy answers scored by ROUGE-L against the
teacher's answers, the student's NLL of the teacher's answers (when its weights are local), and
gold accuracy on the rows that have gold; every figure with a bootstrap interval over prompts.
Lion and DPO call this before training and after every iteration, the eval stage at the end.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Sequence

from synthkd.client.accounting import Meter
from synthkd.config.endpoints import Sampling
from synthkd.chat import answer_call
from synthkd.prompts import Prompt
from synthkd.scoring.metrics import gold_match, label_rivals, rouge_l_f1, summary


@dataclass(frozen=True)
class HeldoutItem:
    id: str
    instruction: str
    gold: str | None = None
    family: str | None = None  # groups the closed label sets of gold scoring (metrics.label_rivals)


def heldout_items(rows: Sequence[dict[str, Any]], question_column: str = "instruction", gold_column: str | None = "gold") -> list[HeldoutItem]:
    """Held-out rows -> items; a gold column is used where present and non-empty."""
    items = []
    for r in rows:
        gold = r.get(gold_column) if gold_column else None
        family = r.get("family")
        items.append(HeldoutItem(str(r["id"]), str(r[question_column]), str(gold) if gold not in (None, "") else None,
                                 str(family) if family not in (None, "") else None))
    return items


def score_answers(items: Sequence[HeldoutItem], answers: dict[str, str], reference: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-item ROUGE-L against the reference and gold match; (rows, summary). Pure."""
    rows = []
    rivals = dict(zip((x.id for x in items), label_rivals([x.gold for x in items], [x.family for x in items])))
    for x in items:
        if x.id not in answers or x.id not in reference:
            continue
        row: dict[str, Any] = {"id": x.id, "instruction": x.instruction, "answer": answers[x.id], "reference": reference[x.id],
                               "rouge_l": rouge_l_f1(answers[x.id], reference[x.id])}
        if x.gold is not None:
            row["gold"], row["gold_correct"] = x.gold, gold_match(answers[x.id], x.gold, rivals[x.id])
        rows.append(row)
    out: dict[str, Any] = {"n": len(rows), "rouge_l": summary([r["rouge_l"] for r in rows])}
    graded = [1.0 if r["gold_correct"] else 0.0 for r in rows if "gold_correct" in r]
    if graded:
        out["gold_accuracy"] = summary(graded)
    return rows, out


class HeldoutEvaluator:
    """Evaluates whatever the student endpoint serves now; the teacher's reference answers are asked once."""

    def __init__(self, rt: Any, items: Sequence[HeldoutItem], *, teacher: str, student: str, template: Prompt, sampling: Sampling, nll: bool = True) -> None:
        self.rt, self.items = rt, list(items)
        self.teacher, self.student, self.template, self.sampling, self.nll = teacher, student, template, sampling, nll
        self.reference: dict[str, str] = {}
        self.last_rows: list[dict[str, Any]] = []  # per-prompt rows of the latest evaluate(), for a dataset

    async def _answers(self, endpoint: str, label: str, meter: Meter) -> dict[str, str]:
        calls = [answer_call(self.template, x.instruction, self.sampling) for x in self.items]
        results = await self.rt.call_all(endpoint, label, calls, meter)
        # An empty answer is an answer (it scores 0); only failed calls are left out.
        return {x.id: (r.text or "").strip() for x, r in zip(self.items, results) if r.ok}

    async def teacher_reference(self, meter: Meter, label: str = "held-out: teacher answers") -> dict[str, Any]:
        """The teacher's answers (the reference) and the teacher's own figures: the ceiling."""
        # Prompts the teacher left empty have no reference and are not scored.
        self.reference = {k: v for k, v in (await self._answers(self.teacher, label, meter)).items() if v}
        _, out = score_answers(self.items, self.reference, self.reference)
        out["answered"] = len(self.reference)
        weights = self._local_weights(self.teacher)
        if self.nll and weights:
            out["nll"] = await self._nll(weights)
        return out

    async def evaluate(self, label: str, meter: Meter) -> dict[str, Any]:
        """The served student's figures on the held-out set."""
        if not self.reference:
            await self.teacher_reference(meter)
        answers = await self._answers(self.student, f"{label}: student answers", meter)
        rows, out = score_answers(self.items, answers, self.reference)
        out["answered"] = len(answers)
        weights = self._local_weights(self.student)
        if self.nll and weights:
            out["nll"] = await self._nll(weights)
        out["weights"] = self.rt.current_weights(self.student)
        out["examples"] = rows[:3]
        self.last_rows = rows
        return out

    def _local_weights(self, endpoint: str) -> str | None:
        if not self.rt.config.endpoints[endpoint].served:
            return None
        weights = self.rt.current_weights(endpoint)
        return self.rt.servers.resolve_model_path(weights) if weights else None

    async def _nll(self, weights: str) -> dict[str, Any]:
        from synthkd.scoring.nll import cached_answer_nll

        pairs = [(x.instruction, self.reference[x.id]) for x in self.items if x.id in self.reference]
        values = await asyncio.to_thread(cached_answer_nll, weights, pairs, self.rt.settings.home / "nll")
        return summary(values)


def brief(figures: dict[str, Any]) -> str:
    """One line: ROUGE-L, NLL and gold accuracy with their intervals."""
    parts = []
    for key, fmt in (("rouge_l", "ROUGE-L {mean:.1f} [{ci_low:.1f}, {ci_high:.1f}]"), ("nll", "NLL {mean:.2f} [{ci_low:.2f}, {ci_high:.2f}]"),
                     ("gold_accuracy", "gold acc {mean:.2f} [{ci_low:.2f}, {ci_high:.2f}]")):
        if key in figures:
            parts.append(fmt.format(**figures[key]))
    return ", ".join(parts)


def heldout_curve(stage: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, figures) for a stage's held-out evaluations in order: base student, each iteration, the final
    imitation (Lion), teacher."""
    points: list[tuple[str, dict[str, Any]]] = []
    if isinstance(stage.get("heldout_base"), dict):
        points.append(("base student", stage["heldout_base"]))
    for it in stage.get("iterations", []) or []:
        if isinstance(it, dict) and isinstance(it.get("heldout"), dict):
            points.append((f"iteration {it.get('iteration')}", it["heldout"]))
    final = stage.get("final_imitation") if isinstance(stage.get("final_imitation"), dict) else {}
    if isinstance(final.get("heldout"), dict):  # Lion's final_imitation
        points.append(("final imitation", final["heldout"]))
    ev = stage.get("eval") if isinstance(stage.get("eval"), dict) else {}
    if isinstance(ev.get("student"), dict) and "rouge_l" in ev["student"]:  # an eval stage
        points.append(("student", ev["student"]))
    teacher = stage.get("heldout_teacher") or ev.get("teacher")
    if points and isinstance(teacher, dict):
        points.append(("teacher", teacher))
    return points


def heldout_lines(stage: dict[str, Any]) -> list[str]:
    """What `synthkd status` prints about held-out progress."""
    return [f"held-out {label:<14} {brief(fig)}" for label, fig in heldout_curve(stage)]


def _cell(figures: dict[str, Any], key: str, digits: int) -> str:
    m = figures.get(key)
    if not isinstance(m, dict) or m.get("mean") is None:
        return "-"
    return f"{m['mean']:.{digits}f} [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"


def heldout_table(stage: dict[str, Any]) -> str:
    """The held-out curve as a text table (base student -> each iteration -> teacher), or "" if none."""
    points = heldout_curve(stage)
    if not points:
        return ""
    rows = [("", "ROUGE-L vs teacher", "NLL of teacher answers", "gold accuracy")]
    for label, fig in points:
        rouge = "100 (reference)" if label == "teacher" else _cell(fig, "rouge_l", 1)
        rows.append((label, rouge, _cell(fig, "nll", 2), _cell(fig, "gold_accuracy", 2)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
