"""`conversation_eval`: the student on held-out conversations, turn by turn.

For every assistant turn of every conversation (the teacher's, from a `conversation` stage run on held-out seeds),
the student is given the conversation before that turn, exactly as the teacher had it, and answers; its answer is
scored against the teacher's turn (ROUGE-L), and, where synthkd serves the student's weights, the student's NLL of
the teacher's turn is computed in that same context. No judge: the figures are the teacher-forced ones MiniLLM and
DistiLLM report, per turn, so a student that only learned first turns shows it.

It also writes `<stage>.pairs`: at every turn where the student's answer differs from the teacher's, the teacher's
turn chosen over the student's in the same context (TRL's conversational preference format; margin = 1 - ROUGE-L
/ 100). Run on the training conversations, that is DPO data of DistiLLM-2's black-box kind, at no teacher cost.
"""

from __future__ import annotations

import asyncio
from typing import Literal, NotRequired

from pydantic import Field
# pydantic validates a TypedDict (TurnScore, in the stats) only in its typing_extensions form on Python < 3.12
from typing_extensions import TypedDict

from synthkd.client.accounting import Meter
from synthkd.client.calls import Call
from synthkd.config.endpoints import Sampling
from synthkd.config.stages import StageBase
from synthkd.pairs import preference_pair
from synthkd.records import FailedRow, Interval, Messages, PreferencePair, Record, StageStats
from synthkd.scoring.metrics import rouge_l_f1, summary
from synthkd.scoring.nll import cached_answer_nll
from synthkd.stages.base import ExtraDataset, Reads, RunInputs, StageImpl, StageResult, Uses


class ConversationEvalStage(StageBase):
    """Score a student on held-out conversations: its answer at every assistant turn, given the teacher's history."""

    type: Literal["conversation_eval"]
    input: str = Field(..., description="Stage with the held-out conversations (a `messages` column), e.g. a conversation stage on held-out seeds.")
    student: str = Field("student", description="Endpoint of the student (served from its newest checkpoint, or remote).")
    sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.0, max_tokens=256), description="The student's answers (greedy).")
    nll: bool = Field(True, description="Also the student's NLL of each teacher turn in its context (a served student, local weights).")


class TurnRow(Record):
    """One assistant turn of a held-out conversation: the teacher's and the student's answer in the same context."""

    id: str
    turn: int  # 1-based: the n-th assistant turn of the conversation
    context: int  # messages before it
    reference: str
    answer: str | None  # None: the student's call failed
    rouge_l: float | None
    nll: float | None = None


class _Turn(TypedDict):
    """An assistant turn to score: where it is, and the teacher's answer (the start of its TurnRow)."""

    id: str
    turn: int
    context: int
    reference: str


class _ScoredTurn(_Turn):
    """A scored turn, as the dataset keeps it (a TurnRow; `nll` only where it was computed)."""

    answer: str
    rouge_l: float
    nll: NotRequired[float | None]


class TurnScore(TypedDict):
    """The student's mean ROUGE-L on the n-th assistant turn of the conversations, over n of them. A dict in the
    stats (not a model), so the report's "Stage results" table prints it as it always has."""

    rouge_l: float
    n: int


class ConversationEvalStats(StageStats):
    """run.json entry of a conversation_eval stage."""

    turns: int = 0
    rouge_l: Interval | None = None  # summary over turns
    nll: Interval | None = None
    by_turn: dict[str, TurnScore] = Field(default_factory=dict)  # by turn number: "1", "2", ...
    student_weights: str | None = None
    detail_blocks = ("rouge_l", "nll", "by_turn")

    def lines(self) -> list[str]:
        r = self.rouge_l or Interval()
        nll = f", NLL {self.nll.mean or 0:.2f}" if self.nll else ""
        per = "  ".join(f"turn {k}: {v['rouge_l']:.1f}" for k, v in sorted(self.by_turn.items(), key=lambda kv: int(kv[0])))
        return [f"{self.turns} turns, ROUGE-L {r.mean or 0:.1f} [{r.ci_low or 0:.1f}, {r.ci_high or 0:.1f}]{nll}; {per}"]


class ConversationEvalImpl(StageImpl[ConversationEvalStage]):
    """Teacher-forced: the student answers each assistant turn given everything before it."""

    row_type = TurnRow
    stats_type = ConversationEvalStats

    def reads(self) -> list[Reads]:
        return [Reads("input", self.cfg.input, frozenset({"messages"}))]

    def uses(self) -> list[Uses]:
        return [Uses("student", self.cfg.student)]

    async def run(self, inp: RunInputs) -> StageResult:
        cfg, rt = self.cfg, inp.rt
        items: list[tuple[_Turn, Messages]] = []  # (the turn, its context)
        for n, row in enumerate(inp.get("input")):
            messages: Messages = [{"role": m["role"], "content": m.get("content") or ""} for m in row.get("messages") or []]
            turn = 0
            for i, m in enumerate(messages):
                if m["role"] == "assistant" and m["content"].strip():
                    turn += 1
                    items.append(({"id": str(row.get("id", n)), "turn": turn, "context": i, "reference": m["content"]}, messages[:i]))
        meter = Meter()
        results = await rt.call_all(cfg.student, f"{cfg.name}: student answers each turn",
                                    [Call(messages=context, sampling=cfg.sampling) for _, context in items], meter)
        rows: list[_ScoredTurn] = []
        failed: list[FailedRow] = []
        pairs: list[PreferencePair] = []
        for (row, context), res in zip(items, results):
            if res.ok and res.text is not None:
                answer = res.text.strip()
                rows.append({**row, "answer": answer, "rouge_l": rouge_l_f1(answer, row["reference"])})
                if answer != row["reference"].strip():
                    last_user = next((m["content"] for m in reversed(context) if m["role"] == "user"), "")
                    pairs.append(preference_pair(f"{row['id']}:t{row['turn']}", last_user, row["reference"], answer,
                                                 round(1 - rows[-1]["rouge_l"] / 100, 4), "teacher_over_student_turn", prompt=context))
            else:
                failed.append(FailedRow.of(row, str(res.error), detail=res.detail, raw=res.text))
        weights = rt.current_weights(cfg.student) if rt.config.endpoints[cfg.student].served else None
        nll = None
        if cfg.nll and weights and items:
            values = await asyncio.to_thread(cached_answer_nll, rt.servers.resolve_model_path(weights),
                                             [(context, row["reference"]) for row, context in items], rt.settings.home / "nll")
            by_key = {(row["id"], row["turn"]): v for (row, _), v in zip(items, values)}
            for r in rows:
                r["nll"] = by_key.get((r["id"], r["turn"]))
            nll = _interval(values)
        by_turn: dict[str, list[float]] = {}  # turn -> the scores of its rows
        for r in rows:
            by_turn.setdefault(str(r["turn"]), []).append(r["rouge_l"])
        stats = ConversationEvalStats(turns=len(rows), rouge_l=_interval([r["rouge_l"] for r in rows]) if rows else None, nll=nll,
                                      by_turn={k: {"rouge_l": sum(v) / len(v), "n": len(v)} for k, v in by_turn.items()},
                                      student_weights=weights)
        return StageResult(rows=rows, failed=failed, meter=meter, stats=stats, datasets=[ExtraDataset(
            "pairs", pairs, PreferencePair, f"Stage {cfg.name}: the teacher's turn chosen over the student's answer in the same "
            "context, at every turn where they differ (DPO-ready).")])


def _interval(values: list[float]) -> Interval:
    """The mean of `values` with its bootstrap interval, as run.json keeps it."""
    return Interval.model_validate(summary(values))
