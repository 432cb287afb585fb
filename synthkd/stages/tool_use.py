"""`tool_use`: tool-calling trajectories. The teacher works each task with the declared tools: it calls tools, synthkd
runs them and feeds the results back, until the teacher answers or `max_steps` model calls are spent.

Two ways to ask, one output. `mode: native` sends OpenAI function calling (`tools`, `tool_choice`) and reads
`tool_calls`, for hosted APIs and servers with a tool parser. `mode: structured` is for endpoints without native
tool calling (a local vLLM model without a tool parser): the tools are described in a system prompt and each reply
is a JSON object under a schema, `{"tool": ..., "arguments": {...}}` or `{"answer": ...}`. Either way the
trajectory is written in OpenAI's form, as TRL trains on it: `messages` with assistant `tool_calls` and `tool`
messages, and a `tools` column with the tools' schemas.

A tool call that goes wrong (unknown tool, arguments that are not JSON or break the schema, the tool's error, a
timeout) is answered with an `error: ...` tool message and recorded: it stays in the trajectory, as in real agent
data. A trajectory that never answers is a failed row with its messages. Every model call is one cached request
that depends only on the task and what came before, and built-in tools are pure, so a rerun after a crash replays
each trajectory from the cache and pays only for the calls that were in flight.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from types import EllipsisType
from typing import Any, Literal, Union, cast

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model

from synthkd.client.accounting import Meter
from synthkd.client.calls import Call
from synthkd.client.replies import Result
from synthkd.config.endpoints import Sampling, Strict
from synthkd.config.stages import StageBase
from synthkd.errors import ConfigError
from synthkd.prompts import Prompt
from synthkd.records import FailedRow, StageStats, Stats
from synthkd.runtime import Runtime
from synthkd.scoring.metrics import gold_match
from synthkd.stages.base import CheckContext, Reads, RunInputs, StageImpl, StageResult, TemplateUse, Uses
from synthkd.tools.builtin import ToolError
from synthkd.tools.spec import Tool, ToolSpec, load_tools, result_text
from synthkd.tools.wire import ChatMessage, ToolCall, ToolSchema

OWN_COLUMNS = ("messages", "tools", "answer", "steps", "tool_log", "structured_messages")


class ToolUseTemplates(Strict):
    """Prompts of the tool_use stage, as jinja2 files under prompts_dir."""

    system: str | None = Field("tools/system.jinja2", description="A system message (variable: tools, the schemas): sent in "
                               "native mode, and the dataset's first message in both modes; null: none.")
    structured: str = Field("tools/structured.jinja2", description="mode: structured: the system message that describes "
                            "the tools (variable: tools) and the JSON reply protocol.")
    tool_result: str = Field("tools/tool_result.jinja2", description="mode: structured: how a tool's result is shown to the "
                             "model (variables: tool, result).")


class ToolUseStage(StageBase):
    """Tool-calling trajectories: the teacher works tasks with declared tools, synthkd runs the calls."""

    type: Literal["tool_use"]
    input: str = Field(..., description="Stage with the tasks.")
    task_column: str = Field("instruction", description="Column with the task the model is given.")
    gold_column: str | None = Field("gold", description="Column with a task's gold answer (optional per row): the stage "
                                    "reports how many trajectories reach it (a failed trajectory counts as wrong); null: none.")
    gold_tool_column: str | None = Field("gold_tool", description="Column naming the tool a task needs (optional per row): "
                                         "the stage reports how many trajectories call it with valid arguments; null: none.")
    teacher: str = Field("teacher", description="Endpoint that works the tasks.")
    tools: list[ToolSpec] = Field(..., min_length=1, description="The tools (built-in or module:function).")
    mode: Literal["native", "structured"] = Field(
        "native", description="native: OpenAI function calling (tools / tool_calls); structured: a JSON reply under a "
        "schema ({tool, arguments} or {answer}), for endpoints without a tool parser.")
    max_steps: int = Field(6, ge=1, le=50, description="Model calls per trajectory at most.")
    answer_on_last_step: bool = Field(
        True, description="The last of the max_steps calls must answer (native: tool_choice none; structured: a schema with "
        "only the answer), so a trajectory ends with what the tools gave rather than failing; false: a trajectory that has "
        "not answered by then fails (no_answer).")
    tool_choice: Literal["auto", "required"] = Field("auto", description="The first call's `tool_choice` (later calls: auto). "
                                                     "required: the teacher must call a tool first (structured mode: the first "
                                                     "reply's schema has no answer).")
    templates: ToolUseTemplates = Field(default_factory=ToolUseTemplates, description="Prompt files.")
    sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.0, max_tokens=512), description="The teacher's sampling.")


class Graded(Stats):
    """How many of the trajectories whose task has a gold value got it right."""

    n: int = 0
    correct: int = 0
    accuracy: float | None = None


@dataclass
class ToolStep:
    """One tool call of a trajectory, as its `tool_log` column keeps it."""

    step: int
    tool: str
    arguments: str  # as the model wrote them (JSON text)
    error: str | None = None  # what the tool (or the call) answered instead of a result
    error_kind: str | None = None  # unknown_tool | invalid_arguments | timeout | tool_error


class ToolUseStats(StageStats):
    """run.json entry of a tool_use stage."""

    trajectories: int = 0
    answered_after: dict[str, int] = Field(default_factory=dict)  # model calls it took -> trajectories
    tool_calls: int = 0
    tool_errors: dict[str, int] = Field(default_factory=dict)  # kind of error -> count (kept in the trajectories)
    gold: Graded | None = None  # final answers against the gold column
    right_tool: Graded | None = None  # the gold tool called with valid arguments
    detail_blocks = ("gold", "right_tool", "tool_errors")

    def lines(self) -> list[str]:
        errors = sum(self.tool_errors.values())
        gold = f"; gold {self.gold.correct}/{self.gold.n}" if self.gold and self.gold.n else ""
        gold += f"; right tool {self.right_tool.correct}/{self.right_tool.n}" if self.right_tool and self.right_tool.n else ""
        return [f"{self.trajectories} trajectories, {self.tool_calls} tool calls ({errors} answered with an error){gold}"]


@dataclass
class _Trajectory:
    row: dict[str, Any]  # the task's row: the input's columns, whatever they are, passed through
    messages: list[ChatMessage]  # OpenAI form: what the dataset keeps
    sent: list[ChatMessage]  # what the model is sent (the same in native mode; JSON turns in structured mode)
    log: list[ToolStep] = field(default_factory=list)
    answer: str | None = None
    steps: int = 0
    failure: FailedRow | None = None

    @property
    def active(self) -> bool:
        return self.answer is None and self.failure is None


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str


_JSON_TYPES: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}


def _arguments_model(tool: Tool) -> type[BaseModel] | type[dict[str, Any]]:
    """The tool's arguments as a model (its JSON schema's properties, types and required keys), so guided decoding
    can only write arguments the tool accepts; a plain object where the schema is beyond that subset.

    The plain object is a runtime type here, not an annotation: pydantic turns an open dict into the JSON schema
    `{"type": "object", "additionalProperties": true}`, which is what the endpoint is sent and what the request cache
    keys on (a JSON-value type would send, and key, another schema)."""
    schema = tool.parameters()
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    # create_model's field definitions: (annotation, default), `...` for a required field; an annotation is a
    # typing form (a Literal, a union) as often as a class, which no narrower type than object covers.
    fields: dict[str, tuple[object, EllipsisType | None]] = {}
    for key, prop in props.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        enum = prop.get("enum") if isinstance(prop, dict) else None
        # Beyond the subset: a type list (["string", "null"]), an unknown type, an enum of objects or lists.
        if (not key.isidentifier() or key.startswith("_") or (kind is not None and (not isinstance(kind, str) or kind not in _JSON_TYPES))
                or (isinstance(enum, list) and not all(isinstance(v, (str, int, float, bool)) or v is None for v in enum))):
            return dict[str, Any]
        annotation = Literal[tuple(enum)] if isinstance(enum, list) and enum else _JSON_TYPES.get(kind, Any) if isinstance(kind, str) else Any
        fields[key] = (annotation, ...) if key in required else (annotation | None, None)
    return create_model(f"{tool.name.replace('-', '_')}_arguments", __config__=ConfigDict(extra="forbid"), **fields)


def structured_answer_model() -> type[BaseModel]:
    """The schema of a structured-mode reply that must be the answer (the last step)."""
    return type("AnswerStep", (RootModel[_Answer],), {})


def structured_reply_model(tools: list[Tool], answer: bool = True) -> type[BaseModel]:
    """The schema of one structured-mode reply: a call of one of the tools, with the arguments that tool takes, or
    (unless `answer` is False: tool_choice required) the answer."""
    calls = [create_model(f"Call_{t.name.replace('-', '_')}", __config__=ConfigDict(extra="forbid"),
                          tool=(Literal[t.name], ...), arguments=(_arguments_model(t), ...)) for t in tools]  # type: ignore[valid-type]
    options = tuple(calls) + ((_Answer,) if answer else ())
    # a plain class name: providers take the schema's name only as [A-Za-z0-9_-]+ (RootModel[...] has brackets)
    return type("ToolStep" if answer else "ToolCallStep", (RootModel[Union[options]],), {})  # type: ignore[return-value,valid-type]


class ToolUseImpl(StageImpl[ToolUseStage]):
    """Step by step for every task: a model call; its tool calls run and answered; until an answer or max_steps."""

    stats_type = ToolUseStats
    fmt = "sft (messages with tool calls, tools)"

    def reads(self) -> list[Reads]:
        return [Reads("input", self.cfg.input, frozenset({self.cfg.task_column}), columns_key="task_column")]

    def uses(self) -> list[Uses]:
        return [Uses("teacher", self.cfg.teacher)]

    def templates(self) -> list[TemplateUse]:
        t = self.cfg.templates
        tools = frozenset({"tools"})
        uses = [TemplateUse("templates.system", t.system, tools)] if t.system else []
        if self.cfg.mode == "structured":
            uses += [TemplateUse("templates.structured", t.structured, tools),
                     TemplateUse("templates.tool_result", t.tool_result, frozenset({"tool", "result"}))]
        return uses

    def check(self, ctx: CheckContext) -> None:
        load_tools(self.cfg.tools, ctx.loaded.base_dir, ctx.where("tools"))

    def output_columns(self, inputs: dict[str, set[str]], ctx: CheckContext) -> set[str]:
        clash = sorted(set(inputs["input"]) & set(OWN_COLUMNS))
        if clash:
            raise ConfigError(f"the input of stage {self.cfg.name!r} has column(s) {', '.join(clash)}, which the tool_use stage "
                              "writes itself", where=ctx.where("input"), fix="rename them in the load stage (columns: {old: new})")
        own = set(OWN_COLUMNS) - ({"structured_messages"} if self.cfg.mode == "native" else set())
        return set(inputs["input"]) | own

    async def run(self, inp: RunInputs) -> StageResult:
        cfg, rt = self.cfg, inp.rt
        tools = load_tools(cfg.tools, rt.pipeline.base_dir, f"stages.{cfg.name}.tools")
        by_name = {t.name: t for t in tools}
        schemas = [t.schema() for t in tools]
        meter = Meter()
        trajectories, failed = self._start(rt, inp.get("input"), schemas)
        # structured mode: tool_choice required drops the answer from the first reply's schema, as the API's does
        reply_models = ((structured_reply_model(tools, answer=cfg.tool_choice != "required"), structured_reply_model(tools),
                         structured_answer_model()) if cfg.mode == "structured" else None)
        result_t = rt.prompts.get(cfg.templates.tool_result) if cfg.mode == "structured" else None
        for step in range(1, cfg.max_steps + 1):
            active = [t for t in trajectories if t.active]
            if not active:
                break
            last = step == cfg.max_steps and cfg.answer_on_last_step
            reply_model = None if reply_models is None else reply_models[2] if last else reply_models[0] if step == 1 else reply_models[1]
            calls = [self._call(t, step, schemas, reply_model) for t in active]
            results = await rt.call_all(cfg.teacher, f"{cfg.name}: step {step}", calls, meter)
            for t, res in zip(active, results):
                t.steps = step
                self._take(t, res, step, by_name, result_t)
        for t in trajectories:
            if t.active:
                t.failure = self._failed(t, "no_answer", f"no answer within max_steps ({cfg.max_steps}) model calls")
        # `tools` as JSON text, which TRL reads as it reads a list: the schemas of different tools do not share one
        # Arrow type, and a dataset column must have one.
        tools_json = json.dumps(schemas, ensure_ascii=False)
        # structured mode also keeps the transcript as the model saw it (protocol prompt, JSON replies, results as
        # user turns): what a student that will be asked the same way trains on (sft: messages_column).
        extra = (lambda t: {"structured_messages": t.sent}) if cfg.mode == "structured" else (lambda t: {})
        rows = [{**t.row, "messages": t.messages, "tools": tools_json, "answer": t.answer, "steps": t.steps, "tool_log": [asdict(e) for e in t.log], **extra(t)}
                for t in trajectories if t.failure is None]
        failed += [t.failure for t in trajectories if t.failure is not None]
        return StageResult(rows=rows, failed=failed, meter=meter, stats=self._stats(trajectories))

    def _start(self, rt: Runtime, rows: list[dict[str, Any]], schemas: list[ToolSchema]) -> tuple[list[_Trajectory], list[FailedRow]]:
        cfg = self.cfg
        t = cfg.templates
        system: list[ChatMessage] = [{"role": "system", "content": rt.prompts.get(t.system).render(tools=schemas)}] if t.system else []
        # structured mode: the model is sent the protocol prompt; the dataset's OpenAI form has the tools in its `tools`
        # column instead (and the native system message, if any), as a native trajectory would.
        sent_system: list[ChatMessage] = ([{"role": "system", "content": rt.prompts.get(t.structured).render(tools=schemas)}]
                                          if cfg.mode == "structured" else system)
        out: list[_Trajectory] = []
        failed: list[FailedRow] = []
        for row in rows:
            task = row.get(cfg.task_column)
            if not isinstance(task, str) or not task.strip():
                failed.append(FailedRow.of(row, "empty_input", detail=f"column {cfg.task_column} is null or blank"))
                continue
            user: ChatMessage = {"role": "user", "content": task.strip()}
            out.append(_Trajectory(dict(row), [*system, user], [*sent_system, user]))
        return out, failed

    def _call(self, t: _Trajectory, step: int, schemas: list[ToolSchema], reply_model: type[BaseModel] | None) -> Call:
        if reply_model is not None:
            return Call(messages=list(t.sent), sampling=self.cfg.sampling, schema=reply_model)
        if step == self.cfg.max_steps and self.cfg.answer_on_last_step:
            return Call(messages=list(t.sent), sampling=self.cfg.sampling, tools=schemas, tool_choice="none")
        choice = self.cfg.tool_choice if step == 1 else "auto"
        return Call(messages=list(t.sent), sampling=self.cfg.sampling, tools=schemas, tool_choice=choice)

    def _take(self, t: _Trajectory, res: Result, step: int, tools: dict[str, Tool], result_t: Prompt | None) -> None:
        if not res.ok:
            t.failure = self._failed(t, str(res.error), res.detail, res.text, step)
            return
        if result_t is not None:  # structured
            reply = res.parsed.root
            if isinstance(reply, _Answer):
                self._answer(t, reply.answer, json.dumps({"answer": reply.answer}), step)
                return
            call_id = f"call_{step}"
            given = reply.arguments.model_dump(exclude_none=True) if isinstance(reply.arguments, BaseModel) else reply.arguments
            arguments = json.dumps(given, ensure_ascii=False)
            t.messages.append({"role": "assistant", "content": "", "tool_calls": [_tool_call(call_id, reply.tool, arguments)]})
            t.sent.append({"role": "assistant", "content": res.text or ""})
            content = self._run_tool(t, step, tools, reply.tool, arguments)
            t.messages.append({"role": "tool", "tool_call_id": call_id, "name": reply.tool, "content": content})
            t.sent.append({"role": "user", "content": result_t.render(tool=reply.tool, result=content)})
            return
        if not res.tool_calls:
            self._answer(t, res.text or "", res.text or "", step)
            return
        # the calls as the client read them: OpenAI's form, names and arguments as text (replies._tool_calls)
        calls = cast(list[ToolCall], res.tool_calls)
        assistant: ChatMessage = {"role": "assistant", "content": res.text or "", "tool_calls": calls}
        t.messages.append(assistant)
        t.sent.append(assistant)
        for call in calls:
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            content = self._run_tool(t, step, tools, name, arguments)
            message: ChatMessage = {"role": "tool", "tool_call_id": call["id"], "name": name, "content": content}
            t.messages.append(message)
            t.sent.append(message)

    def _answer(self, t: _Trajectory, answer: str, sent: str, step: int) -> None:
        if not answer.strip():
            t.failure = self._failed(t, "empty_reply", "the model answered with nothing", answer, step)
            return
        t.answer = answer.strip()
        t.messages.append({"role": "assistant", "content": t.answer})
        t.sent.append({"role": "assistant", "content": sent})

    def _run_tool(self, t: _Trajectory, step: int, tools: dict[str, Tool], name: str, arguments: str) -> str:
        """Run one tool call; the result's text, or `error: ...` (recorded in the trajectory's tool_log)."""
        entry = ToolStep(step=step, tool=name, arguments=arguments)
        try:
            tool = tools.get(name)
            if tool is None:
                raise _CallError("unknown_tool", f"there is no tool named {name!r} (tools: {', '.join(tools)})")
            try:
                parsed = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise _CallError("invalid_arguments", f"arguments are not JSON ({exc.msg})") from None
            try:
                content = result_text(tool.run(parsed))
            except ToolError as exc:
                kind = "invalid_arguments" if str(exc).startswith("invalid arguments") else "timeout" if str(exc).startswith("timeout") else "tool_error"
                raise _CallError(kind, str(exc)) from None
        except _CallError as exc:
            entry.error, entry.error_kind = exc.detail, exc.kind
            content = f"error: {exc.detail}"
        t.log.append(entry)
        return content

    def _failed(self, t: _Trajectory, reason: str, detail: str | None, raw: str | None = None, step: int | None = None) -> FailedRow:
        return FailedRow.of(t.row, reason, messages=t.messages, tool_log=[asdict(e) for e in t.log], steps=t.steps, step=f"step {step or t.steps}",
                            detail=detail, raw=raw)

    def _stats(self, trajectories: list[_Trajectory]) -> ToolUseStats:
        errors: dict[str, int] = {}
        for t in trajectories:
            for entry in t.log:
                if entry.error_kind:
                    errors[entry.error_kind] = errors.get(entry.error_kind, 0) + 1
        answered = [t for t in trajectories if t.failure is None]  # the rows written
        after: dict[str, int] = {}
        for t in answered:
            after[str(t.steps)] = after.get(str(t.steps), 0) + 1
        # Over every trajectory of a task that has gold, answered or not: one that never answers is wrong.
        def graded(column: str | None, right: Any) -> Graded | None:
            if not column:
                return None
            tasks = [t for t in trajectories if t.row.get(column) not in (None, "")]
            correct = sum(1 for t in tasks if right(t, str(t.row[column])))
            return Graded(n=len(tasks), correct=correct, accuracy=correct / len(tasks) if tasks else None)

        gold = graded(self.cfg.gold_column, lambda t, g: t.failure is None and t.answer is not None and gold_match(t.answer, g))
        right_tool = graded(self.cfg.gold_tool_column, lambda t, g: any(e.tool == g and e.error_kind not in ("invalid_arguments", "unknown_tool")
                                                                         for e in t.log))
        return ToolUseStats(trajectories=len(answered), answered_after=after, tool_calls=sum(len(t.log) for t in trajectories),
                            tool_errors=errors, gold=gold, right_tool=right_tool)


class _CallError(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def _tool_call(call_id: str, name: str, arguments: str) -> ToolCall:
    """A tool call in OpenAI's form (structured mode writes its trajectories as native ones look)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
