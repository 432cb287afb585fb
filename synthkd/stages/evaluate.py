"""`eval`: the student against the teacher on a held-out set.

The judge scores both answers in one call, twice with the order swapped (as Lion's referee), and
the run reports the student's share of the teacher's total score (the Lion paper's "% of ChatGPT
capability"), win/tie/loss counts, and exact-match accuracy where gold answers exist.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import Field

from synthkd.answers import answers_match, extract_final_answer
from synthkd.client.accounting import Meter
from synthkd.config.endpoints import Sampling, Strict
from synthkd.config.stages import StageBase
from synthkd.judging import Judgement, both_orders
from synthkd.chat import answer_call
from synthkd.records import HeldoutFigures, Interval, Record, StageStats, Stats
from synthkd.runtime import Runtime
from synthkd.stages.base import Reads, RunInputs, StageImpl, StageResult, TemplateUse, Uses, split_blank
from synthkd.scoring.code_judge import code_judgement, is_code_judge
from synthkd.scoring.heldout import heldout_items, score_answers
from synthkd.scoring.metrics import summary as metric_summary
from synthkd.scoring.nll import cached_answer_nll


class EvalTemplates(Strict):
    """Prompts of the eval stage, as jinja2 files under prompts_dir."""

    answer: str = Field("lion/answer.jinja2", description="How student and teacher are asked (variable: instruction).")
    pairwise: str = Field("lion/referee.jinja2", description="Judge two answers 1-10 in one call (instruction, answer_1, answer_2).")


class EvalStage(StageBase):
    """Student against teacher on a held-out set: judge in both orders, and exact match where gold exists."""

    type: Literal["eval"]

    input: str = Field(..., description="Stage with the held-out set.")
    question_column: str = Field("instruction", description="Column with the instruction or question.")
    gold_column: str | None = Field(None, description="Column with gold final answers: adds exact-match accuracy.")
    student: str = Field("student", description="Endpoint of the student (served from its newest checkpoint, or remote).")
    teacher: str | None = Field("teacher", description="Endpoint of the teacher; null: no judged comparison, exact match only.")
    judge: str = Field("judge", description="Endpoint of the judge, or a judge that is code: code:rouge_l, code:exact_match.")
    nll: bool = Field(True, description="Also report the NLL of the teacher's answers under the student and the teacher (served, local weights).")
    templates: EvalTemplates = Field(default_factory=EvalTemplates, description="Prompt files.")
    answer_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.0, max_tokens=1024), description="Student and teacher answers.")
    judge_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.0, max_tokens=64), description="Judge calls.")


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers run.json reports, from scored rows (pure: tested on scripted judgements)."""
    judged = [r for r in rows if r.get("student_score") is not None]
    out: dict[str, Any] = {"n": len(rows), "judged": len(judged)}
    if judged:
        s_total = sum(r["student_score"] for r in judged)
        t_total = sum(r["teacher_score"] for r in judged)
        out.update({
            "wins": sum(1 for r in judged if r["outcome"] == "win"),
            "ties": sum(1 for r in judged if r["outcome"] == "tie"),
            "losses": sum(1 for r in judged if r["outcome"] == "loss"),
            "student_share_of_teacher": s_total / t_total if t_total else 0.0,
            "mean_student_score": s_total / len(judged),
            "mean_teacher_score": t_total / len(judged),
        })
    for who in ("student", "teacher"):
        graded = [r[f"{who}_exact_match"] for r in rows if r.get(f"{who}_exact_match") is not None]
        if graded:
            key = "exact_match" if who == "student" else "teacher_exact_match"
            out[key] = sum(graded) / len(graded)
            out[f"{key}_n"] = len(graded)
    return out


def outcome(student: float, teacher: float) -> str:
    return "win" if student > teacher else "loss" if student < teacher else "tie"


async def run_eval(cfg: EvalStage, rt: Runtime, rows: list[dict[str, Any]], meter: Meter) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(scored rows, failed rows, summary)."""
    t_answer = rt.prompts.get(cfg.templates.answer)
    rows, empty = split_blank(rows, cfg.question_column)  # a null question is no question: not sent, not scored
    items = [{"id": str(r["id"]), "instruction": str(r[cfg.question_column]), "gold": r.get(cfg.gold_column) if cfg.gold_column else None} for r in rows]
    calls = [answer_call(t_answer, x["instruction"], cfg.answer_sampling) for x in items]
    student = await rt.call_all(cfg.student, f"{cfg.name}: student answers", calls, meter)
    teacher = await rt.call_all(cfg.teacher, f"{cfg.name}: teacher answers", calls, meter) if cfg.teacher else [None] * len(items)
    out: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = list(empty)
    extra: dict[str, Any] = {}
    for x, s, t in zip(items, student, teacher):
        if not s.ok or s.text is None or (t is not None and (not t.ok or t.text is None)):
            bad = s if not s.ok else t
            failed.append({**x, "reason": bad.error, "detail": bad.detail, "raw": bad.text})
            continue
        row: dict[str, Any] = {**x, "student_answer": s.text.strip(), "teacher_answer": t.text.strip() if t else None}
        if x["gold"] is not None:
            row["student_exact_match"] = answers_match(extract_final_answer(row["student_answer"]), str(x["gold"]))
            if t is not None:
                row["teacher_exact_match"] = answers_match(extract_final_answer(row["teacher_answer"]), str(x["gold"]))
        out.append(row)
    if cfg.teacher:
        await _judge_free(cfg, rt, out, extra)
    if cfg.teacher and is_code_judge(cfg.judge):
        for row in out:
            j = code_judgement(cfg.judge, row["teacher_answer"], row["student_answer"], row.get("gold"))
            row.update(student_score=j.b, teacher_score=j.a, outcome=outcome(j.b, j.a))
    elif cfg.teacher:
        judged = await both_orders(rt, cfg.judge, f"{cfg.name}: judge student vs teacher", rt.prompts.get(cfg.templates.pairwise),
                                   [(r["instruction"], r["student_answer"], r["teacher_answer"]) for r in out], cfg.judge_sampling, meter)
        for row, j in zip(out, judged):
            if isinstance(j, Judgement):  # the student's answer is a
                row.update(student_score=j.a, teacher_score=j.b, outcome=outcome(j.a, j.b))
            else:
                row.update(student_score=None, teacher_score=None, outcome=None, judge_failure=j.error)
    weights = {f"{who}_weights": rt.current_weights(ep) for who, ep in (("student", cfg.student), ("teacher", cfg.teacher))
               if ep and rt.config.endpoints[ep].served}
    return out, failed, {**summarize(out), **extra, **weights}


async def _judge_free(cfg: EvalStage, rt: Runtime, rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    """ROUGE-L against the teacher, gold accuracy and (local weights) NLL of the teacher's answers, with intervals."""
    items = heldout_items(rows, "instruction", "gold")
    student = {r["id"]: r["student_answer"] for r in rows}
    teacher = {r["id"]: r["teacher_answer"] for r in rows}
    scored, extra["student"] = score_answers(items, student, teacher)
    _, extra["teacher"] = score_answers(items, teacher, teacher)
    for r, sc in zip(rows, scored):
        r["rouge_l"] = sc.rouge_l
    if not cfg.nll:
        return
    pairs = [(r["instruction"], r["teacher_answer"]) for r in rows]
    for who, endpoint in (("student", cfg.student), ("teacher", cfg.teacher)):
        weights = rt.current_weights(endpoint) if endpoint and rt.config.endpoints[endpoint].served else None
        if weights and pairs:
            values = await asyncio.to_thread(cached_answer_nll, rt.servers.resolve_model_path(weights), pairs, rt.settings.home / "nll")
            extra[who].nll = Interval.model_validate(metric_summary(values))


class EvalRow(Record):
    """One held-out prompt: both answers, their judge scores and exact match where gold exists."""

    id: str
    instruction: str
    gold: Any = None
    student_answer: str
    teacher_answer: str | None = None
    student_exact_match: bool | None = None
    teacher_exact_match: bool | None = None
    rouge_l: float | None = None
    student_score: float | None = None
    teacher_score: float | None = None
    outcome: str | None = None
    judge_failure: str | None = None  # the judge's call failed: the scores are missing, the answers are kept


class EvalSummary(Stats):
    """The eval stage's figures (see `summarize`), plus judge-free figures of student and teacher."""

    n: int = 0
    judged: int = 0
    wins: int | None = None
    ties: int | None = None
    losses: int | None = None
    student_share_of_teacher: float | None = None
    mean_student_score: float | None = None
    mean_teacher_score: float | None = None
    exact_match: float | None = None
    exact_match_n: int | None = None
    teacher_exact_match: float | None = None
    teacher_exact_match_n: int | None = None
    student_weights: str | None = None  # the checkpoint a served student answered from
    teacher_weights: str | None = None
    student: HeldoutFigures | None = None  # ROUGE-L, NLL, gold accuracy with intervals
    teacher: HeldoutFigures | None = None


class EvalStats(StageStats):
    """run.json entry of an eval stage."""

    eval: EvalSummary | None = None
    detail_blocks = ("eval",)


class EvalImpl(StageImpl[EvalStage]):
    """Student (and teacher) answer every held-out prompt; judged, or scored by code."""

    row_type = EvalRow
    stats_type = EvalStats

    def reads(self) -> list[Reads]:
        cfg = self.cfg
        return [Reads("input", cfg.input, frozenset({cfg.question_column} | ({cfg.gold_column} if cfg.gold_column else set())))]

    def uses(self) -> list[Uses]:
        cfg = self.cfg
        return [Uses("student", cfg.student), Uses("teacher", cfg.teacher), Uses("judge", cfg.judge if cfg.teacher else None, judge=True)]

    def templates(self) -> list[TemplateUse]:
        t = self.cfg.templates
        return [TemplateUse("templates.answer", t.answer, frozenset({"instruction"}))] + (
            [TemplateUse("templates.pairwise", t.pairwise, frozenset({"instruction", "answer_1", "answer_2"}))] if self.cfg.teacher else [])

    async def run(self, inp: RunInputs) -> StageResult:
        result = StageResult(rows=[])
        result.rows, result.failed, summary = await run_eval(self.cfg, inp.rt, inp.get("input"), result.meter)
        result.stats = EvalStats(eval=EvalSummary.strict(summary))
        return result
