"""`conversation`: multi-turn dialogues, a simulated user and the teacher taking turns.

From each seed row (a topic, a first user message, or a persona with a goal: whatever columns the templates
read), a user-simulator endpoint writes each next user message from the seed and the conversation so far, and
the teacher answers it, for up to `max_turns` exchanges or until the simulator ends the conversation (it
replies with `end_marker`). The two roles may be one endpoint: the simulator is asked through its own
template, the teacher sees the conversation itself (after an optional system message).

Every turn is one request through the engine (cache, budget, retries, batch mode, replicas): a turn's request
is a pure function of the seed and the replies before it, so a rerun after a crash reads every finished turn
from the cache and continues each conversation where it stopped, paying only for the calls that were in flight.
All conversations advance together, one turn at a time, so each turn's calls go out at once.

Output: the seed's columns plus `messages` (TRL's conversational format: the teacher's system message, if any, then the
exchanges), `turns`, `ended_by` and `turn_meta`
(per exchange: where the user message came from, the teacher's finish reason, truncation). A conversation that
fails at some turn is a failed row with the reason, the step and the turns it had.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, NotRequired, TypedDict

from pydantic import Field

from synthkd.client.accounting import Meter
from synthkd.client.calls import Call
from synthkd.client.replies import Result
from synthkd.config.endpoints import Sampling, Strict
from synthkd.config.stages import StageBase
from synthkd.errors import ConfigError
from synthkd.prompts import Prompt
from synthkd.records import FailedRow, StageStats
from synthkd.runtime import Runtime
from synthkd.selection import unusable
from synthkd.stages.base import CheckContext, Reads, RowProblem, RunInputs, StageImpl, StageResult, TemplateUse, Uses, render_row

OWN_COLUMNS = ("messages", "turns", "ended_by", "turn_meta")
# What the user-simulator template gets besides the seed's columns.
SIMULATOR_VARIABLES = frozenset({"seed", "transcript", "turn", "max_turns", "end_marker"})


class ConversationTemplates(Strict):
    """Prompts of the conversation stage, as jinja2 files under prompts_dir."""

    user_turn: str = Field(
        "chat/user_turn.jinja2", description="The user simulator's request: the seed's columns (also as `seed`, a mapping, "
        "so a template may read optional ones: seed.get('persona')), `transcript` (the messages so far, each with role and "
        "content), `turn` (the number of the user message to write), `max_turns` and `end_marker`; its reply is the "
        "next user message, or the end marker.")
    teacher_system: str | None = Field(
        None, description="A system message for the teacher, rendered from the seed's columns (and `seed`), e.g. "
        "chat/teacher_system.jinja2; null: the teacher sees the conversation alone.")


class ConversationStage(StageBase):
    """Multi-turn conversations: a simulated user and the teacher take turns, from seed rows."""

    type: Literal["conversation"]
    input: str = Field(..., description="Stage with the seeds (any columns the templates read: a topic, a persona, a goal).")
    user: str = Field("user", description="Endpoint that simulates the user (it may be the teacher's endpoint).")
    teacher: str = Field("teacher", description="Endpoint that answers as the assistant.")
    max_turns: int = Field(3, ge=1, le=50, description="Exchanges (a user message and the teacher's answer) at most.")
    first_message_column: str | None = Field(
        "first_message", description="Column whose text, where a seed has it, is the first user message as it is (no "
        "simulator call for turn 1); null or missing: the simulator writes every user message.")
    end_marker: str = Field("[END]", min_length=1, description="The simulator ends the conversation by replying with this "
                            "(its reply starts with it); text before the marker is kept as a last user message.")
    templates: ConversationTemplates = Field(default_factory=ConversationTemplates, description="Prompt files.")
    user_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.8, max_tokens=128),
                                    description="The simulator's sampling.")
    teacher_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.7, max_tokens=512),
                                       description="The teacher's sampling.")


class ConversationStats(StageStats):
    """run.json entry of a conversation stage."""

    conversations: int = 0
    exchanges: int = 0  # teacher answers kept, over all conversations
    ended_by: dict[str, int] = Field(default_factory=dict)  # simulator | max_turns
    failed_at_turn: dict[str, int] = Field(default_factory=dict)  # "user 2", "teacher 3", ...

    def lines(self) -> list[str]:
        ends = ", ".join(f"{k} {v}" for k, v in sorted(self.ended_by.items()))
        mean = self.exchanges / self.conversations if self.conversations else 0.0
        return [f"{self.conversations} conversations, {mean:.1f} exchanges each; ended by {ends or '-'}"]


class TurnMeta(TypedDict):
    """One exchange of a conversation, as its `turn_meta` column keeps it."""

    turn: int
    user_from: Literal["seed", "simulator"]  # the seed's first message, or the simulator's
    finish_reason: NotRequired[str | None]  # the teacher's (absent until the teacher has answered)
    truncated: NotRequired[bool]


@dataclass
class _Dialogue:
    """One conversation in progress. `messages` are the exchanges; `system` the teacher's system message, if any."""

    row: dict[str, Any]  # the seed: the input's columns, whatever they are, passed through
    system: list[dict[str, str]] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    meta: list[TurnMeta] = field(default_factory=list)
    ended_by: str | None = None
    failure: FailedRow | None = None
    last_user: bool = False  # the simulator's message came with the end marker: this exchange is the last

    @property
    def active(self) -> bool:
        return self.ended_by is None and self.failure is None

    def fail(self, turn: int, step: str, reason: str, detail: str | None, raw: str | None = None) -> None:
        self.failure = FailedRow.of(self.row, reason, messages=self.system + self.messages, turns=len(self.meta), step=f"{step} {turn}",
                                    detail=detail, raw=raw)

    def output(self) -> dict[str, Any]:
        """The dataset row: the seed's columns (any, as they came) and the conversation's."""
        # the conversation as the teacher had it: its system message (if any), then the exchanges
        return {**self.row, "messages": self.system + self.messages, "turns": len(self.meta), "ended_by": self.ended_by,
                "turn_meta": self.meta}


class ConversationImpl(StageImpl[ConversationStage]):
    """Turn by turn for every seed: the simulator's user message (or the seed's first message), then the teacher's answer."""

    stats_type = ConversationStats
    fmt = "sft (messages, multi-turn)"

    def reads(self) -> list[Reads]:
        return [Reads("input", self.cfg.input)]

    def uses(self) -> list[Uses]:
        return [Uses("user", self.cfg.user), Uses("teacher", self.cfg.teacher)]

    def templates(self) -> list[TemplateUse]:
        t = self.cfg.templates
        uses = [TemplateUse("templates.user_turn", t.user_turn, None, also=SIMULATOR_VARIABLES)]
        if t.teacher_system:
            uses.append(TemplateUse("templates.teacher_system", t.teacher_system, None, also=frozenset({"seed"})))
        return uses

    def output_columns(self, inputs: dict[str, set[str]], ctx: CheckContext) -> set[str]:
        clash = sorted(set(inputs["input"]) & (set(OWN_COLUMNS) | SIMULATOR_VARIABLES))
        if clash:
            raise ConfigError(f"the input of stage {self.cfg.name!r} has column(s) {', '.join(clash)}, which the conversation "
                              "stage writes or gives its templates itself", where=ctx.where("input"),
                              fix="rename them in the load stage (columns: {old: new})")
        return set(inputs["input"]) | set(OWN_COLUMNS)

    async def run(self, inp: RunInputs) -> StageResult:
        cfg, rt = self.cfg, inp.rt
        user_t = rt.prompts.get(cfg.templates.user_turn)
        system_t = rt.prompts.get(cfg.templates.teacher_system) if cfg.templates.teacher_system else None
        meter = Meter()
        dialogues = [_Dialogue(dict(row)) for row in inp.get("input")]
        for d in dialogues:
            try:
                d.system = [{"role": "system", "content": render_row(system_t, {**d.row, "seed": d.row})}] if system_t else []
            except RowProblem as problem:
                d.failure = problem.failed(d.row, messages=[], turns=0, step="teacher_system")
        for turn in range(1, cfg.max_turns + 1):
            await self._user_turn(rt, user_t, [d for d in dialogues if d.active], turn, meter)
            await self._teacher_turn(rt, [d for d in dialogues if d.active], turn, meter)
        for d in dialogues:
            if d.active:
                d.ended_by = "max_turns"
        rows = [d.output() for d in dialogues if d.failure is None]
        failed = [d.failure for d in dialogues if d.failure is not None]
        stats = ConversationStats(conversations=len(rows), exchanges=sum(r["turns"] for r in rows),
                                  ended_by=_count(r["ended_by"] for r in rows), failed_at_turn=_count(str(f.step) for f in failed))
        return StageResult(rows=rows, failed=failed, meter=meter, stats=stats)

    async def _user_turn(self, rt: Runtime, template: Prompt, dialogues: list[_Dialogue], turn: int, meter: Meter) -> None:
        """Each active conversation's next user message: the seed's first message at turn 1, else the simulator's."""
        cfg = self.cfg
        asked: list[tuple[_Dialogue, Call]] = []
        for d in dialogues:
            first = d.row.get(cfg.first_message_column) if cfg.first_message_column and turn == 1 else None
            if isinstance(first, str) and first.strip():
                d.messages.append({"role": "user", "content": first.strip()})
                d.meta.append({"turn": turn, "user_from": "seed"})
                continue
            values = {**d.row, "seed": d.row, "transcript": list(d.messages), "turn": turn, "max_turns": cfg.max_turns,
                      "end_marker": cfg.end_marker}
            try:
                prompt = render_row(template, values)
            except RowProblem as problem:
                d.fail(turn, "user", problem.reason, problem.detail)
                continue
            asked.append((d, Call(messages=[{"role": "user", "content": prompt}], sampling=cfg.user_sampling)))
        if not asked:
            return
        results = await rt.call_all(cfg.user, f"{cfg.name}: turn {turn}, user simulator", [c for _, c in asked], meter)
        for (d, _), res in zip(asked, results):
            self._take_user(d, res, turn, meter)

    def _take_user(self, d: _Dialogue, res: Result, turn: int, meter: Meter) -> None:
        if not res.ok or res.text is None:
            d.fail(turn, "user", str(res.error), res.detail, res.text)
            return
        text = res.text.strip()
        message, ended = _before_marker(text, self.cfg.end_marker)
        if not message:
            if ended and d.meta:  # the simulator ends a conversation that has had at least one exchange
                d.ended_by = "simulator"
            elif ended:
                d.fail(turn, "user", "ended_before_start", f"the simulator ended the conversation before its first message: {text[:200]}", res.text)
            else:
                meter.failures["empty_reply"] += 1
                d.fail(turn, "user", "empty_reply", "the simulator wrote an empty user message", res.text)
            return
        d.messages.append({"role": "user", "content": message})
        d.meta.append({"turn": turn, "user_from": "simulator"})
        d.last_user = ended

    async def _teacher_turn(self, rt: Runtime, dialogues: list[_Dialogue], turn: int, meter: Meter) -> None:
        """The teacher answers every conversation whose last message is the user's."""
        cfg = self.cfg
        waiting = [d for d in dialogues if d.messages and d.messages[-1]["role"] == "user"]
        if not waiting:
            return
        calls = [Call(messages=d.system + d.messages, sampling=cfg.teacher_sampling) for d in waiting]
        results = await rt.call_all(cfg.teacher, f"{cfg.name}: turn {turn}, teacher", calls, meter)
        for d, res in zip(waiting, results):
            if (bad := unusable(res, meter)) is not None:
                d.fail(turn, "teacher", bad[0], bad[1], res.text)
                continue
            d.messages.append({"role": "assistant", "content": str(res.text).strip()})
            d.meta[-1].update(finish_reason=res.finish_reason, truncated=res.truncated)
            if d.last_user:
                d.ended_by = "simulator"


def _before_marker(text: str, marker: str) -> tuple[str, bool]:
    """(the user message, whether the simulator ended the conversation): text before the end marker, if any."""
    at = text.find(marker)
    if at < 0:
        return text, False
    return text[:at].strip(), True


def _count(values: Iterable[object]) -> dict[str, int]:
    """How often each value occurs, by its text."""
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out
