"""`generate`: render a template per input record, call an endpoint, keep the reply in a column."""

from __future__ import annotations

from typing import Any

from synthkd.client.accounting import Meter
from synthkd.client.endpoint import Call
from synthkd.client.executor import run_calls
from synthkd.client.replies import empty_detail
from synthkd.config.endpoints import Sampling
from synthkd.config.stages import GenerateStage
from synthkd.errors import ConfigError
from synthkd.runtime import Runtime
from synthkd.stages.base import CheckContext, Reads, RowProblem, RunInputs, StageImpl, StageResult, TemplateUse, Uses, render_row


def build_calls(cfg: GenerateStage, rt: Runtime, rows: list[dict[str, Any]]) -> tuple[list[tuple[dict[str, Any], Call]], list[dict[str, Any]]]:
    """(record, call) for every record and sample, and the records that cannot be sent (failed rows);
    a pure function of config, templates and rows."""
    user = rt.prompts.get(cfg.template)
    system = rt.prompts.get(cfg.system_template) if cfg.system_template else None
    sampling = cfg.sampling or Sampling()  # the endpoint's defaults fill in the rest
    out, unsent = [], []
    for row in rows:
        try:
            messages = ([{"role": "system", "content": render_row(system, row)}] if system else []) + [{"role": "user", "content": render_row(user, row)}]
        except RowProblem as problem:
            unsent.append(problem.failed(row))
            continue
        for k in range(cfg.samples):
            out.append((row, Call(messages=messages, sampling=sampling, sample=k)))
    return out, unsent


async def run_generate(cfg: GenerateStage, rt: Runtime, rows: list[dict[str, Any]], meter: Meter) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept rows, failed rows); each in input order."""
    pairs, unsent = build_calls(cfg, rt, rows)
    for row in unsent:
        meter.failures[row["reason"]] += 1
    if not pairs:  # nothing to send: no client (nor a server) is started
        return [], unsent
    client = await rt.client(cfg.endpoint)
    with rt.reporter.step(cfg.name, len(pairs), meter) as progress:
        results = await run_calls(client, [c for _, c in pairs], meter, progress, batch=rt.batch_for(cfg.endpoint))
    kept, failed = [], unsent
    for (row, call), res in zip(pairs, results):
        base = {**row, "sample": call.sample} if cfg.samples > 1 else dict(row)
        if not res.ok or res.text is None:
            failed.append({**base, "reason": res.error, "detail": res.detail, "raw": res.text})
        elif (empty := empty_detail(res)) is not None:  # paid and cached, but nothing to train on
            meter.failures["empty_reply"] += 1
            failed.append({**base, "reason": "empty_reply", "detail": empty, "raw": res.text})
        elif res.truncated and not cfg.keep_truncated:
            meter.failures["truncated"] += 1
            failed.append({**base, "reason": "truncated", "detail": "finish_reason=length", "raw": res.text})
        else:
            out = {**base, cfg.output_column: res.text, "truncated": res.truncated}
            if cfg.reasoning_column:
                out[cfg.reasoning_column] = res.reasoning  # None when the model returns no separate trace
            if cfg.sft_format:
                out["messages"] = call.messages + [{"role": "assistant", "content": res.text}]
            kept.append(out)
    return kept, failed


class GenerateImpl(StageImpl[GenerateStage]):
    """One call per input record (and sample); the reply joins the record's columns."""

    def reads(self) -> list[Reads]:
        return [Reads("input", self.cfg.input)]

    def uses(self) -> list[Uses]:
        return [Uses("endpoint", self.cfg.endpoint)]

    def templates(self) -> list[TemplateUse]:
        names = {"template": self.cfg.template, "system_template": self.cfg.system_template}
        return [TemplateUse(key, name, None) for key, name in names.items() if name]

    def output_columns(self, inputs: dict[str, set[str]], ctx: CheckContext) -> set[str]:
        cfg = self.cfg
        # The reply would silently replace a column of the input, or one this stage writes itself.
        own = {"id", "messages", "truncated", "sample", cfg.reasoning_column} - {None}
        if cfg.output_column in own | inputs["input"]:
            what = "an input column" if cfg.output_column in inputs["input"] else "a column this stage writes itself"
            raise ConfigError(f"output_column {cfg.output_column!r} of stage {cfg.name!r} is {what}; the reply would overwrite it",
                              where=ctx.where("output_column"), fix=f"name a new column, e.g. output_column: {cfg.name}_{cfg.output_column}")
        # The reasoning column is declared always: whether a model returns a trace is only known from its replies.
        return (inputs["input"] | {cfg.output_column, "truncated"} | ({"messages"} if cfg.sft_format else set())
                | ({"sample"} if cfg.samples > 1 else set()) | ({cfg.reasoning_column} if cfg.reasoning_column else set()))

    async def run(self, inp: RunInputs) -> StageResult:
        result = StageResult(rows=[])
        result.rows, result.failed = await run_generate(self.cfg, inp.rt, inp.get("input"), result.meter)
        return result
