"""`generate`: render a template per input record, call an endpoint, keep the reply in a column."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from synthkd.client.accounting import Meter
from synthkd.client.endpoint import Call
from synthkd.client.executor import run_calls
from synthkd.client.replies import Result
from synthkd.config.endpoints import Sampling
from synthkd.config.stages import MAX_SAMPLES, Select, StageBase
from synthkd.pairs import preference_pair
from synthkd.errors import ConfigError
from synthkd.records import FailedRow, PreferencePair, StageStats
from synthkd.runtime import Runtime
from synthkd.selection import GOLD, CandidateRow, Selected, SelectionSummary, check_sampled, no_candidate, pick, row_gold, unusable
from synthkd.stages.base import (CheckContext, ExtraDataset, Reads, RowProblem, RunInputs, StageImpl, StageResult, TemplateUse, Uses,
                                 render_row)


class GenerateStage(StageBase):
    """Render a template for each input record, call an endpoint, store the reply in a column."""

    type: Literal["generate"]

    input: str = Field(..., description="Name of an earlier stage whose records this stage reads.")
    endpoint: str = Field(..., description="Endpoint name from `endpoints:`.")
    template: str = Field(..., description="Jinja2 template of the user message, relative to prompts_dir.")
    system_template: str | None = Field(None, description="Optional jinja2 template of a system message.")
    output_column: str = Field("response", description="Column the reply text (or parsed object) goes to.")
    # The caps keep a typo (an extra zero or three) from building billions of requests before any message.
    samples: int = Field(1, ge=1, le=MAX_SAMPLES, description="Samples per record; each is its own cached request.")
    sampling: Sampling | None = Field(None, description="Overrides of the endpoint's sampling parameters.")
    keep_truncated: bool = Field(True, description="Keep replies cut by max_tokens (flagged `truncated`).")
    sft_format: bool = Field(
        True, description="Also write a `messages` column (user prompt + reply) so the set feeds TRL SFT as is."
    )
    reasoning_column: str | None = Field(
        "reasoning", description="Column the reply's separate reasoning trace goes to (reasoning_content / reasoning, "
        "as reasoning models and vLLM's reasoning parsers return it); null when the reply has none. null: no such column."
    )
    # Left out of the fingerprint when unset, so the stages of runs made before `select` existed stay done.
    select: Select | None = Field(
        None, exclude_if=lambda value: value is None,
        description="Best-of-n: ask select.n candidates per row and keep the one a rule that is code chooses, with a "
        "`selection` column saying which and why; the candidates go to the dataset <stage>.candidates and, where "
        "the row has gold, gold-matching over mismatching answers to <stage>.pairs (TRL preference format). "
        "null: one reply per sample, all kept. Not with samples > 1 (select keeps one of n, samples keeps all).")

    @model_validator(mode="after")
    def _select_or_samples(self) -> "GenerateStage":
        if self.select is not None and self.samples > 1:
            raise ValueError(f"select keeps one of n candidates per row and samples: {self.samples} keeps every sample: "
                             "use one of them (select.n sets how many candidates are asked)")
        return self

    @property
    def per_row(self) -> int:
        """Requests per input row: the candidates of `select`, else `samples`."""
        return self.select.n if self.select is not None else self.samples


def build_calls(cfg: GenerateStage, rt: Runtime, rows: list[dict[str, Any]]) -> tuple[list[tuple[dict[str, Any], Call]], list[FailedRow]]:
    """(record, call) for every record and sample, and the records that cannot be sent (failed rows);
    a pure function of config, templates and rows."""
    user = rt.prompts.get(cfg.template)
    system = rt.prompts.get(cfg.system_template) if cfg.system_template else None
    sampling = cfg.sampling or Sampling()  # the endpoint's defaults fill in the rest
    out: list[tuple[dict[str, Any], Call]] = []
    unsent: list[FailedRow] = []
    for row in rows:
        try:
            messages = ([{"role": "system", "content": render_row(system, row)}] if system else []) + [{"role": "user", "content": render_row(user, row)}]
        except RowProblem as problem:
            unsent.append(problem.failed(row))
            continue
        for k in range(cfg.per_row):
            out.append((row, Call(messages=messages, sampling=sampling, sample=k)))
    return out, unsent


async def _ask(cfg: GenerateStage, rt: Runtime, calls: list[tuple[dict[str, Any], Call]], meter: Meter) -> list[Result]:
    """The results of the calls, in order."""
    client = await rt.client(cfg.endpoint)
    with rt.reporter.step(cfg.name, len(calls), meter) as progress:
        return await run_calls(client, [c for _, c in calls], meter, progress, batch=rt.batch_for(cfg.endpoint))


def _reply_row(cfg: GenerateStage, base: dict[str, Any], call: Call, res: Result) -> dict[str, Any]:
    """The output row of a kept reply: the input row's columns plus the reply (and its trace, and `messages`)."""
    out = {**base, cfg.output_column: res.text, "truncated": res.truncated}
    if cfg.reasoning_column:
        out[cfg.reasoning_column] = res.reasoning  # None when the model returns no separate trace
    if cfg.sft_format:
        out["messages"] = call.messages + [{"role": "assistant", "content": res.text}]
    return out


def keep_all(cfg: GenerateStage, calls: list[tuple[dict[str, Any], Call]], results: list[Result], meter: Meter) -> tuple[list[dict[str, Any]], list[FailedRow]]:
    """Without `select`: (a row per usable reply, a failed row per other one), in call order."""
    kept: list[dict[str, Any]] = []
    failed: list[FailedRow] = []
    for (row, call), res in zip(calls, results):
        base = {**row, "sample": call.sample} if cfg.samples > 1 else dict(row)
        if (bad := unusable(res, meter)) is not None:
            failed.append(FailedRow.of(base, bad[0], detail=bad[1], raw=res.text))
        elif res.truncated and not cfg.keep_truncated:
            meter.failures["truncated"] += 1
            failed.append(FailedRow.of(base, "truncated", detail="finish_reason=length", raw=res.text))
        else:
            kept.append(_reply_row(cfg, base, call, res))
    return kept, failed


class GenerateStats(StageStats):
    """run.json entry of a generate stage (`selection` only with `select`)."""

    selection: SelectionSummary | None = None
    detail_blocks = ("selection",)

    def lines(self) -> list[str]:
        s = self.selection
        if s is None:
            return super().lines()
        rules = ", ".join(f"{rule} {count}" for rule, count in sorted(s.by_rule.items()))
        return [f"best of n: {rules or 'none kept'}; {s.passed}/{s.candidates} candidates passed the checks; {s.pairs} pairs"]


def select_rows(cfg: GenerateStage, calls: list[tuple[dict[str, Any], Call]], results: list[Result], meter: Meter) -> Selected:
    """With `select`: per input row, its n candidates (consecutive in `calls`) checked, one kept by the rule."""
    sel = cfg.select
    assert sel is not None
    # keep_truncated: false refuses cut replies with select too, as it does without.
    checks = sel.checks.model_copy(update={"not_truncated": sel.checks.not_truncated or not cfg.keep_truncated})
    out = Selected()
    for start in range(0, len(calls), sel.n):
        row, call = calls[start]
        replies = results[start:start + sel.n]
        picked = pick(str(row.get("id")), replies, row_gold(row, sel.gold_column), sel.rule, checks, meter)
        out.candidates += picked.candidates
        if picked.winner is None or picked.choice is None:
            out.failed.append(no_candidate(row, picked.candidates, meter))
            continue
        winner = picked.winner
        out.rows.append({**_reply_row(cfg, dict(row), call, replies[winner.sample]), "selection": picked.selection(sel.n)})
        if picked.choice.rule == GOLD:
            out.pairs += _gold_pairs(call, winner, picked.passed)
    return out


def _gold_pairs(call: Call, winner: CandidateRow, passed: list[CandidateRow]) -> list[PreferencePair]:
    """Teacher-side preference pairs of one row: its gold-matching kept answer over each mismatching one that passed."""
    instruction = next((m["content"] for m in reversed(call.messages) if m["role"] == "user"), "")
    pairs, seen = [], {winner.text}
    for c in passed:
        if c.gold_match is False and c.text not in seen:
            seen.add(c.text)
            pairs.append(preference_pair(f"{winner.id}:s{winner.sample}>s{c.sample}", instruction, str(winner.text), str(c.text),
                                         1.0, "gold_match", prompt=call.messages))
    return pairs


class GenerateImpl(StageImpl[GenerateStage]):
    """One call per input record (and sample); the reply joins the record's columns. With `select`, n calls per
    record and one reply kept, chosen by code."""

    stats_type = GenerateStats

    def reads(self) -> list[Reads]:
        sel = self.cfg.select
        # An explicitly named gold column, or rule gold, must exist; auto on an input without one is consensus.
        if sel is not None and sel.rule != "consensus" and (sel.rule == "gold" or "gold_column" in sel.model_fields_set):
            return [Reads("input", self.cfg.input, frozenset({sel.gold_column}), columns_key="select.gold_column")]
        return [Reads("input", self.cfg.input)]

    def uses(self) -> list[Uses]:
        return [Uses("endpoint", self.cfg.endpoint)]

    def templates(self) -> list[TemplateUse]:
        names = {"template": self.cfg.template, "system_template": self.cfg.system_template}
        return [TemplateUse(key, name, None) for key, name in names.items() if name]

    def check(self, ctx: CheckContext) -> None:
        cfg = self.cfg
        if cfg.select is None:
            return
        temperature = ctx.loaded.config.endpoints[cfg.endpoint].sampling.merged(cfg.sampling).temperature
        check_sampled("select.n", cfg.select.n, temperature, cfg.name, ctx.where("select.n"),
                      "sample the candidates, e.g. sampling: {temperature: 0.7}, or set select.n: 1 (greedy, format checks only)")

    def output_columns(self, inputs: dict[str, set[str]], ctx: CheckContext) -> set[str]:
        cfg = self.cfg
        # The reply would silently replace a column of the input, or one this stage writes itself.
        own = {"id", "messages", "truncated", "sample", cfg.reasoning_column, "selection" if cfg.select else None} - {None}
        if cfg.output_column in own | inputs["input"]:
            what = "an input column" if cfg.output_column in inputs["input"] else "a column this stage writes itself"
            raise ConfigError(f"output_column {cfg.output_column!r} of stage {cfg.name!r} is {what}; the reply would overwrite it",
                              where=ctx.where("output_column"), fix=f"name a new column, e.g. output_column: {cfg.name}_{cfg.output_column}")
        # The reasoning column is declared always: whether a model returns a trace is only known from its replies.
        return (inputs["input"] | {cfg.output_column, "truncated"} | ({"messages"} if cfg.sft_format else set())
                | ({"sample"} if cfg.samples > 1 else set()) | ({cfg.reasoning_column} if cfg.reasoning_column else set())
                | ({"selection"} if cfg.select else set()))

    async def run(self, inp: RunInputs) -> StageResult:
        cfg, result = self.cfg, StageResult(rows=[])
        calls, result.failed = build_calls(cfg, inp.rt, inp.get("input"))
        for row in result.failed:
            result.meter.failures[row.reason] += 1
        # Nothing to send: no client (nor a server) is started.
        results = await _ask(cfg, inp.rt, calls, result.meter) if calls else []
        if cfg.select is None:
            result.rows, failed = keep_all(cfg, calls, results, result.meter)
            result.failed += failed
            return result
        sel = select_rows(cfg, calls, results, result.meter)
        result.rows, result.failed = sel.rows, result.failed + sel.failed
        result.stats = GenerateStats(selection=sel.summary())
        result.datasets += [
            ExtraDataset("candidates", sel.candidates, CandidateRow, f"Stage {cfg.name}: every candidate answer (select.n per row), "
                         "whether it passed the format checks, and which one was kept."),
            ExtraDataset("pairs", sel.pairs, PreferencePair, f"Stage {cfg.name}: teacher-side preference pairs, a gold-matching "
                         "candidate over a mismatching one (TRL conversational preference format)."),
        ]
        return result
