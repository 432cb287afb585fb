"""`eval`: the student against the teacher on a held-out set.

The judge scores both answers in one call, twice with the order swapped (as Lion's referee), and
the run reports the student's share of the teacher's total score (the Lion paper's "% of ChatGPT
capability"), win/tie/loss counts, and exact-match accuracy where gold answers exist.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal, Sequence

from pydantic import Field

from synthkd.answers import answers_match, extract_final_answer
from synthkd.client.accounting import Meter
from synthkd.config.endpoints import Sampling, Strict
from synthkd.config.stages import StageBase
from synthkd.judging import Judgement, both_orders
from synthkd.chat import answer_call
from synthkd.records import FailedRow, HeldoutFigures, Interval, Record, StageStats, Stats
from synthkd.runtime import Runtime
from synthkd.stages.base import Reads, RunInputs, StageImpl, StageResult, TemplateUse, Uses, split_blank
from synthkd.scoring.code_judge import code_judgement, is_code_judge
from synthkd.items import Item, read_items
from synthkd.scoring.heldout import score_answers
from synthkd.scoring.metrics import summary as metric_summary
from synthkd.scoring.nll import cached_answer_nll


class EvalTemplates(Strict):
    """Prompts of the eval stage, as jinja2 files under prompts_dir."""

    answer: str = Field("common/answer.jinja2", description="How student and teacher are asked (variable: instruction).")
    pairwise: str = Field("common/referee.jinja2", description="Judge two answers 1-10 in one call (instruction, answer_1, answer_2).")


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


def summarize(rows: Sequence[EvalRow]) -> EvalSummary:
    """The numbers run.json reports, from scored rows (pure: tested on scripted judgements)."""
    judged = [r for r in rows if r.student_score is not None and r.teacher_score is not None]
    out = EvalSummary(n=len(rows), judged=len(judged))
    if judged:
        s_total = sum(r.student_score or 0.0 for r in judged)
        t_total = sum(r.teacher_score or 0.0 for r in judged)
        out.wins, out.ties, out.losses = (sum(1 for r in judged if r.outcome == o) for o in ("win", "tie", "loss"))
        out.student_share_of_teacher = s_total / t_total if t_total else 0.0
        out.mean_student_score, out.mean_teacher_score = s_total / len(judged), t_total / len(judged)
    student = [r.student_exact_match for r in rows if r.student_exact_match is not None]
    teacher = [r.teacher_exact_match for r in rows if r.teacher_exact_match is not None]
    if student:
        out.exact_match, out.exact_match_n = sum(student) / len(student), len(student)
    if teacher:
        out.teacher_exact_match, out.teacher_exact_match_n = sum(teacher) / len(teacher), len(teacher)
    return out


def outcome(student: float, teacher: float) -> str:
    return "win" if student > teacher else "loss" if student < teacher else "tie"


async def run_eval(cfg: EvalStage, rt: Runtime, rows: list[dict[str, Any]], meter: Meter) -> tuple[list[EvalRow], list[FailedRow], EvalSummary]:
    """(scored rows, failed rows, summary)."""
    t_answer = rt.prompts.get(cfg.templates.answer)
    rows, empty = split_blank(rows, cfg.question_column)  # a null question is no question: not sent, not scored
    items = read_items(rows, cfg.question_column, cfg.gold_column)
    # The gold cell as the data has it (a number stays a number in the dataset); matched as text.
    golds = [r.get(cfg.gold_column) if cfg.gold_column else None for r in rows]
    calls = [answer_call(t_answer, x.instruction, cfg.answer_sampling) for x in items]
    student = await rt.call_all(cfg.student, f"{cfg.name}: student answers", calls, meter)
    teacher = await rt.call_all(cfg.teacher, f"{cfg.name}: teacher answers", calls, meter) if cfg.teacher else [None] * len(items)
    out: list[EvalRow] = []
    failed: list[FailedRow] = list(empty)
    for x, gold, s, t in zip(items, golds, student, teacher):
        if not s.ok or s.text is None or (t is not None and (not t.ok or t.text is None)):
            bad = s if not s.ok else t
            failed.append(FailedRow.of({"id": x.id, "instruction": x.instruction, "gold": gold}, bad.error or "empty", detail=bad.detail, raw=bad.text))
            continue
        row = EvalRow(id=x.id, instruction=x.instruction, gold=gold, student_answer=s.text.strip(), teacher_answer=t.text.strip() if t else None)
        if gold is not None:
            row.student_exact_match = answers_match(extract_final_answer(row.student_answer), str(gold))
            if row.teacher_answer is not None:
                row.teacher_exact_match = answers_match(extract_final_answer(row.teacher_answer), str(gold))
        out.append(row)
    figures: dict[str, HeldoutFigures] = {}
    if cfg.teacher:
        figures = await _judge_free(cfg, rt, items, out)
    if cfg.teacher and is_code_judge(cfg.judge):
        for row in out:
            j = code_judgement(cfg.judge, row.teacher_answer or "", row.student_answer, None if row.gold is None else str(row.gold))
            row.student_score, row.teacher_score, row.outcome = j.b, j.a, outcome(j.b, j.a)
    elif cfg.teacher:
        judged = await both_orders(rt, cfg.judge, f"{cfg.name}: judge student vs teacher", rt.prompts.get(cfg.templates.pairwise),
                                   [(r.instruction, r.student_answer, r.teacher_answer or "") for r in out], cfg.judge_sampling, meter)
        for row, j in zip(out, judged):
            if isinstance(j, Judgement):  # the student's answer is a
                row.student_score, row.teacher_score, row.outcome = j.a, j.b, outcome(j.a, j.b)
            else:
                row.judge_failure = j.error
    summary = summarize(out)
    summary.student, summary.teacher = figures.get("student"), figures.get("teacher")
    for who, ep in (("student", cfg.student), ("teacher", cfg.teacher)):
        if ep and rt.config.endpoints[ep].served:
            setattr(summary, f"{who}_weights", rt.current_weights(ep))
    return out, failed, summary


async def _judge_free(cfg: EvalStage, rt: Runtime, items: list[Item], rows: list[EvalRow]) -> dict[str, HeldoutFigures]:
    """ROUGE-L against the teacher, gold accuracy and (local weights) NLL of the teacher's answers, with intervals;
    sets each row's `rouge_l`. {"student": figures, "teacher": figures}."""
    answered = {r.id for r in rows}
    items = [x for x in items if x.id in answered]
    student = {r.id: r.student_answer for r in rows}
    teacher = {r.id: r.teacher_answer or "" for r in rows}
    scored, student_figures = score_answers(items, student, teacher)
    _, teacher_figures = score_answers(items, teacher, teacher)
    figures = {"student": student_figures, "teacher": teacher_figures}
    rouge = {sc.id: sc.rouge_l for sc in scored}
    for r in rows:
        r.rouge_l = rouge.get(r.id)
    if not cfg.nll:
        return figures
    pairs = [(r.instruction, r.teacher_answer or "") for r in rows]
    for who, endpoint in (("student", cfg.student), ("teacher", cfg.teacher)):
        weights = rt.current_weights(endpoint) if endpoint and rt.config.endpoints[endpoint].served else None
        if weights and pairs:
            values = await asyncio.to_thread(cached_answer_nll, rt.servers.resolve_model_path(weights), pairs, rt.settings.home / "nll")
            figures[who].nll = Interval.model_validate(metric_summary(values))
    return figures


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
        result.stats = EvalStats(eval=summary)
        return result
