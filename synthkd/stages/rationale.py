"""`rationale`: step-by-step rationales from the teacher, checked against answers.

For each input the teacher writes k rationales, each with a final answer (structured output).
With gold answers, rejection sampling keeps the rationales whose normalised answer matches the
gold one; without, self-consistency keeps those of the majority answer. The kept rationales become
SFT examples in one of two student formats:

* inline: the student answers with the rationale, then "Therefore, the answer is X."
* multitask (Hsieh et al., 2023, "Distilling Step-by-Step"): two examples per rationale, one asking
  for the answer and one for the rationale, each marked by a task prefix.

With `rationale_source: reasoning` the teacher is a reasoning model: its reasoning trace (returned
apart from the reply) is the rationale and its plain-text reply the final answer. `think_format`
renders the inline target with its own template, e.g. the trace inside <think>...</think>.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from synthkd.answers import answers_match, majority, normalize_answer
from synthkd.chat import sft_example, user
from synthkd.client.accounting import Meter
from synthkd.client.endpoint import Call
from synthkd.config.endpoints import Sampling
from synthkd.config.stages import MAX_SAMPLES, StageBase
from synthkd.prompts import Prompt
from synthkd.records import FailedRow, Messages, Record, StageStats, Stats
from synthkd.runtime import Runtime
from synthkd.stages.base import ExtraDataset, Reads, RowProblem, RunInputs, StageImpl, StageResult, TemplateUse, Uses, render_row


class RationaleStage(StageBase):
    """Teacher rationales with final answers, rejection-sampled against gold (or self-consistent)."""

    type: Literal["rationale"]

    input: str = Field(..., description="Stage with the task inputs.")
    question_column: str = Field("question", description="Column with the task input.")
    gold_column: str | None = Field("answer", description="Column with gold final answers; null when there are none.")
    teacher: str = Field("teacher", description="Endpoint writing rationales.")
    samples: int = Field(4, ge=1, le=MAX_SAMPLES, description="Rationales per input (k), for diversity.")
    template: str = Field("rationale/teacher.jinja2", description="Prompt asking for step-by-step reasoning and a final answer.")
    sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.7, max_tokens=512), description="Teacher sampling.")
    self_consistency: bool = Field(True, description="Without gold: keep only the majority answer's rationales.")
    format: Literal["inline", "multitask"] = Field(
        "inline", description="inline: rationale then answer in one reply; multitask: Distilling Step-by-Step's two examples per rationale."
    )
    inline_template: str = Field("rationale/inline_target.jinja2", description="Student target for the inline format (rationale, answer).")
    answer_prefix: str = Field("[label] ", description="Task prefix of the answer example (multitask).")
    rationale_prefix: str = Field("[rationale] ", description="Task prefix of the rationale example (multitask).")
    max_rationale_chars: int = Field(2000, ge=20, description="Upper bound on a rationale (schema maxLength).")
    rationale_source: Literal["structured", "reasoning"] = Field(
        "structured", description="structured: the teacher replies with JSON {rationale, answer}; reasoning: the teacher's "
        "reasoning trace (reasoning_content / reasoning of a reasoning model) is the rationale and its reply, plain text, "
        "the final answer. With reasoning the default template is rationale/teacher_reasoning.jinja2."
    )
    think_format: str | None = Field(
        None, description="Jinja2 template (rationale, answer) of the student target in the inline format instead of "
        "inline_template, e.g. rationale/think_target.jinja2: the rationale inside <think>...</think>, then the answer."
    )

    @model_validator(mode="after")
    def _reasoning_template(self) -> "RationaleStage":
        # The default prompt asks for JSON; a reasoning teacher reasons on its own and answers in plain text.
        if self.rationale_source == "reasoning" and self.template == "rationale/teacher.jinja2":
            self.template = "rationale/teacher_reasoning.jinja2"
        return self


@lru_cache(maxsize=None)
def rationale_model(max_chars: int) -> type[BaseModel]:
    """{"rationale": str, "answer": str}, bounded so the structured-output engine must close them."""
    return create_model(
        "Rationale",
        __config__=ConfigDict(extra="forbid"),
        rationale=(str, Field(..., min_length=1, max_length=max_chars)),
        answer=(str, Field(..., min_length=1, max_length=100)),
    )


class Sample(TypedDict):
    """One parsed teacher reply: its sample number, its rationale and its final answer."""

    sample: int
    rationale: str
    answer: str


def select(samples: list[Sample], gold: str | None, self_consistency: bool) -> tuple[list[Sample], str | None]:
    """(kept samples, the answer they support), from the parsed replies.

    With gold: those whose answer matches it. Without: all, or with self-consistency those whose
    normalised answer is the majority's.
    """
    if gold is not None:
        return [s for s in samples if answers_match(s["answer"], gold)], normalize_answer(gold)
    if not self_consistency:
        return list(samples), None
    winner, _ = majority([s["answer"] for s in samples])
    return [s for s in samples if winner is not None and normalize_answer(s["answer"]) == winner], winner


def student_examples(cfg: RationaleStage, inline: Prompt, question: str, rationale: str, answer: str) -> list[tuple[str, list[dict[str, str]]]]:
    """(task, messages) training examples for one kept rationale, in the configured format."""
    if cfg.format == "inline":
        target = inline.render(rationale=rationale.strip(), answer=answer.strip())
        return [("inline", sft_example(question, target))]
    return [("answer", sft_example(cfg.answer_prefix + question, answer.strip())),
            ("rationale", sft_example(cfg.rationale_prefix + question, rationale.strip()))]


async def run_rationale(cfg: RationaleStage, rt: Runtime, rows: list[dict[str, Any]], meter: Meter
                        ) -> tuple[list[RationaleRow], list[FailedRow], RationaleSummary, list[PerInputRow]]:
    """(SFT rows, failed rows, summary, per-input rows)."""
    prompt = rt.prompts.get(cfg.template)
    inline = rt.prompts.get(cfg.think_format or cfg.inline_template)
    from_trace = cfg.rationale_source == "reasoning"
    schema = None if from_trace else rationale_model(cfg.max_rationale_chars)
    calls, sent, unsent = [], [], []
    for row in rows:
        try:
            if cfg.question_column not in row:
                raise RowProblem(f"missing_column:{cfg.question_column}", f"the row has no column {cfg.question_column}")
            messages = user(render_row(prompt, {"question": row[cfg.question_column]}))
        except RowProblem as problem:  # a failed row, never sent
            unsent.append(problem.failed(row))
            meter.failures[problem.reason] += 1
            continue
        sent.append(row)
        calls.extend(Call(messages=messages, sampling=cfg.sampling, schema=schema, sample=k) for k in range(cfg.samples))
    rows = sent
    results = await rt.call_all(cfg.teacher, f"{cfg.name}: teacher rationales (k={cfg.samples})", calls, meter) if calls else []
    out: list[RationaleRow] = []
    per_input: list[PerInputRow] = []
    failed = unsent
    for i, row in enumerate(rows):
        rid, question = str(row["id"]), str(row[cfg.question_column])
        gold = str(row[cfg.gold_column]) if cfg.gold_column and row.get(cfg.gold_column) is not None else None
        samples: list[Sample] = []
        for k, res in enumerate(results[i * cfg.samples : (i + 1) * cfg.samples]):
            if from_trace:
                reason = _trace_problem(res.ok, res.error, res.reasoning, res.text, res.truncated)
                if reason is None:
                    samples.append(Sample(sample=k, rationale=res.reasoning or "", answer=(res.text or "").strip()))
                else:
                    failed.append(FailedRow.of({"id": rid, "sample": k}, reason, detail=res.detail, raw=res.text))
            elif res.ok and res.parsed is not None:
                samples.append(Sample(sample=k, rationale=res.parsed.rationale, answer=res.parsed.answer))
            else:
                failed.append(FailedRow.of({"id": rid, "sample": k}, res.error or "empty", detail=res.detail, raw=res.text))
        kept, supported = select(samples, gold, cfg.self_consistency)
        for s in samples:
            if s not in kept:
                failed.append(FailedRow.of({"id": rid, "sample": s["sample"]}, "wrong_answer" if gold is not None else "minority_answer",
                                           detail=f"answer {s['answer']!r}", raw=s["rationale"]))
        for s in kept:
            for task, messages in student_examples(cfg, inline, question, s["rationale"], s["answer"]):
                out.append(RationaleRow(id=f"{rid}:{s['sample']}:{task}", input_id=rid, task=task, question=question, gold=gold,
                                        rationale=s["rationale"], answer=s["answer"], messages=messages))
        per_input.append(PerInputRow(id=rid, samples=cfg.samples, parsed=len(samples), kept=len(kept),
                                     kept_fraction=len(kept) / cfg.samples, answer=supported))
    summary = RationaleSummary(
        inputs=len(rows), samples=len(rows) * cfg.samples, kept=sum(p.kept for p in per_input),
        mean_kept_fraction=sum(p.kept_fraction for p in per_input) / len(per_input) if per_input else 0.0,
        inputs_with_none_kept=sum(1 for p in per_input if p.kept == 0),
        format=cfg.format, training_examples=len(out), gold=cfg.gold_column is not None,
    )
    return out, failed, summary, per_input


def _trace_problem(ok: bool, error: str | None, reasoning: str | None, text: str | None, truncated: bool) -> str | None:
    """Why a reasoning teacher's reply gives no (rationale, answer) pair, or None when it does."""
    if not ok:
        return error
    if truncated:
        return "truncated"
    if not (reasoning or "").strip():
        return "no_reasoning"  # the endpoint returned no trace: not a reasoning model, or its parser is off
    if not (text or "").strip():
        return "no_answer"
    return None


class RationaleRow(Record):
    """One student training example made from one kept rationale."""

    id: str
    input_id: str
    task: str
    question: str
    gold: str | None = None
    rationale: str
    answer: str
    messages: Messages


class PerInputRow(Record):
    """How many of an input's k rationales were kept, and the answer they support."""

    id: str
    samples: int
    parsed: int
    kept: int
    kept_fraction: float
    answer: str | None = None


class RationaleSummary(Stats):
    """The rationale stage's figures."""

    inputs: int = 0
    samples: int = 0
    kept: int = 0
    mean_kept_fraction: float = 0.0
    inputs_with_none_kept: int = 0
    format: str | None = None
    training_examples: int = 0
    gold: bool | None = None


class RationaleStats(StageStats):
    """run.json entry of a rationale stage."""

    rationale: RationaleSummary | None = None
    detail_blocks = ("rationale",)


class RationaleImpl(StageImpl[RationaleStage]):
    """k rationales per input; the kept ones become SFT rows; per-input counts beside them."""

    row_type = RationaleRow
    stats_type = RationaleStats
    fmt = "sft (messages)"

    def reads(self) -> list[Reads]:
        cfg = self.cfg
        return [Reads("input", cfg.input, frozenset({cfg.question_column} | ({cfg.gold_column} if cfg.gold_column else set())))]

    def uses(self) -> list[Uses]:
        return [Uses("teacher", self.cfg.teacher)]

    def templates(self) -> list[TemplateUse]:
        target = ("think_format", self.cfg.think_format) if self.cfg.think_format else ("inline_template", self.cfg.inline_template)
        return [TemplateUse("template", self.cfg.template, frozenset({"question"})),
                TemplateUse(*target, frozenset({"rationale", "answer"}))]

    async def run(self, inp: RunInputs) -> StageResult:
        result = StageResult(rows=[])
        result.rows, result.failed, summary, per_input = await run_rationale(self.cfg, inp.rt, inp.get("input"), result.meter)
        result.stats = RationaleStats(rationale=summary)
        result.datasets.append(ExtraDataset("per_input", per_input, PerInputRow,
                                            f"Stage {self.cfg.name}: rationales kept per input (rejection sampling / self-consistency)."))
        return result
