"""A tool as a pipeline declares it, and how synthkd runs it.

Built-in tools (`builtin: calculator`, `days_between`, `add_days`, `weekday`, `lookup` over a JSONL table) run in
process. A user tool (`function: module:function`, with its own JSON schema) runs in a subprocess
(`synthkd.tools.runner`) with a timeout, so a tool that hangs, crashes or prints does not take the run with it;
the module is imported from the pipeline file's directory. Whatever goes wrong (an unknown tool, arguments that
are not JSON or break the schema, the tool's own error, a timeout) becomes the tool's result, an `error: ...`
text the model sees and the trajectory records, as in real agent data.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, cast

from pydantic import Field, PlainSerializer, PlainValidator, model_validator
from pydantic_core import PydanticCustomError

from synthkd.config.endpoints import Strict
from synthkd.errors import ConfigError
from synthkd.tools import builtin
from synthkd.tools.builtin import TableRow, ToolError
from synthkd.tools.wire import JSONSchema, JSONValue, ToolSchema

_FUNCTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")
BUILTINS = ("calculator", "days_between", "add_days", "weekday", "lookup")


def _schema_as_written(value: object) -> JSONSchema:
    """A user's JSON schema as the pipeline wrote it: any JSON object (the object check is `ToolSpec`'s).

    Not validated as the JSONSchema TypedDict, which would drop the keywords it does not declare and reorder the
    rest: the schema is sent to the model and written to the dataset as written."""
    if not isinstance(value, dict):
        raise PydanticCustomError("dict_type", "Input should be a valid dictionary")
    if not all(isinstance(key, str) for key in value):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    return cast(JSONSchema, dict(value))


# The schema field: validated by `_schema_as_written`, dumped as it is (the stage fingerprint hashes it).
UserSchema = Annotated[JSONSchema, PlainValidator(_schema_as_written), PlainSerializer(lambda schema: schema)]


class ToolSpec(Strict):
    """One tool the teacher may call: a built-in one, or a Python function of the user's."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The name the model calls it by.")
    builtin: Literal["calculator", "days_between", "add_days", "weekday", "lookup"] | None = Field(
        None, description="A built-in tool: calculator, days_between, add_days, weekday, or lookup (a row of `table` by `key_column`).")
    function: str | None = Field(None, description="A user tool as module:function, imported from the pipeline file's directory; "
                                 "called with the arguments as keyword arguments; its return value (JSON-serialisable) is the result.")
    description: str | None = Field(None, description="What the tool does, for the model (built-in tools have their own).")
    parameters: UserSchema | None = Field(None, description="JSON schema of the arguments (an object schema); required for a "
                                          "user tool, built-in tools have their own.")
    table: str | None = Field(None, description="lookup: a JSONL file of rows (relative to the pipeline file).")
    key_column: str | None = Field(None, description="lookup: the column a row is found by.")
    timeout_s: float = Field(10.0, gt=0, le=600, description="A user tool's time limit per call.")

    @model_validator(mode="after")
    def _one_kind(self) -> "ToolSpec":
        if (self.builtin is None) == (self.function is None):
            raise ValueError(f"tool {self.name!r} needs exactly one of builtin: (one of {', '.join(BUILTINS)}) or function: module:function")
        if self.function is not None:
            if not _FUNCTION.match(self.function):
                raise ValueError(f"tool {self.name!r}: function {self.function!r} is not module:function")
            if self.parameters is None or not self.description:
                raise ValueError(f"tool {self.name!r} is a user tool: give it a description and parameters (a JSON schema)")
        if self.builtin == "lookup" and (not self.table or not self.key_column):
            raise ValueError(f"tool {self.name!r} (lookup) needs table: (a JSONL file) and key_column:")
        if self.parameters is not None and self.parameters.get("type") != "object":
            raise ValueError(f"tool {self.name!r}: parameters must be a JSON schema of type object")
        return self


@dataclass
class Tool:
    """A declared tool, ready to run."""

    spec: ToolSpec
    base_dir: Path
    table: dict[str, TableRow] = field(default_factory=dict)  # lookup: rows by their key (casefolded)

    @property
    def name(self) -> str:
        return self.spec.name

    def parameters(self) -> JSONSchema:
        """JSON schema of the tool's arguments: the declared one, else the built-in tool's."""
        if self.spec.parameters is not None:
            return self.spec.parameters
        if self.spec.builtin == "lookup":
            return {"type": "object", "properties": {self.spec.key_column: {"type": "string"}}, "required": [self.spec.key_column],
                    "additionalProperties": False}
        return builtin.SCHEMAS[str(self.spec.builtin)][1]

    def description(self) -> str:
        """What the tool does, for the model: the declared text, else the built-in tool's."""
        if self.spec.description:
            return self.spec.description
        if self.spec.builtin == "lookup":
            return f"Look up the row whose {self.spec.key_column} is given, in a table of {len(self.table)} rows."
        return builtin.SCHEMAS[str(self.spec.builtin)][0]

    def schema(self) -> ToolSchema:
        """The tool as OpenAI function calling (and TRL's `tools` column) takes it."""
        return {"type": "function", "function": {"name": self.name, "description": self.description(), "parameters": self.parameters()}}

    def run(self, arguments: JSONValue) -> JSONValue:
        """The tool's result; ToolError with the reason when it cannot give one."""
        problem = check_arguments(self.parameters(), arguments)
        if problem or not isinstance(arguments, dict):  # (check_arguments refuses anything but an object)
            raise ToolError(f"invalid arguments: {problem}")
        kind = self.spec.builtin
        if kind == "calculator":
            return builtin.calculate(str(arguments["expression"]))
        if kind == "days_between":
            return builtin.days_between(arguments["start"], arguments["end"])
        if kind == "add_days":
            return builtin.add_days(arguments["date"], arguments["days"])
        if kind == "weekday":
            return builtin.weekday(arguments["date"])
        if kind == "lookup":
            return builtin.lookup(self.table, str(self.spec.key_column), arguments[str(self.spec.key_column)])
        return _run_user_tool(str(self.spec.function), arguments, self.spec.timeout_s, self.base_dir)


def load_tools(specs: list[ToolSpec], base_dir: Path, where: str) -> list[Tool]:
    """The declared tools, checked before anything is spent: unique names, lookup tables readable and keyed,
    user functions importable (in a subprocess, as they run). Raises ConfigError."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"two tools are named {dup!r}", where=where, fix="give each tool its own name")
    tools = []
    for i, spec in enumerate(specs):
        tool = Tool(spec, base_dir)
        if spec.builtin == "lookup":
            tool.table = _read_table(base_dir, spec, f"{where}.{i}.table")
        if spec.function is not None:
            _check_importable(spec.function, base_dir, f"{where}.{i}.function")
        tools.append(tool)
    return tools


def _read_table(base_dir: Path, spec: ToolSpec, where: str) -> dict[str, TableRow]:
    path = Path(str(spec.table)).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"lookup table {path} cannot be read ({exc.strerror or exc})", where=where,
                          fix="point table: at a JSONL file, relative to the pipeline file") from None
    table: dict[str, TableRow] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"line {n} of lookup table {path} is not JSON ({exc.msg})", where=where, fix="one JSON object per line") from None
        if not isinstance(row, dict) or spec.key_column not in row:
            raise ConfigError(f"line {n} of lookup table {path} has no column {spec.key_column!r}", where=where,
                              fix="give every row the key_column, or name the column the rows have")
        table[str(row[spec.key_column]).strip().casefold()] = row
    if not table:
        raise ConfigError(f"lookup table {path} has no rows", where=where, fix="give it at least one JSON line")
    return table


def _env(base_dir: Path) -> dict[str, str]:
    """The tool process's environment: the pipeline's directory first on the path (where user tools live), then this
    same synthkd, installed or not (the runner is part of it)."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(base_dir), package_root, env.get("PYTHONPATH")) if p)
    return env


def _check_importable(function: str, base_dir: Path, where: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "synthkd.tools.runner", "--check", function], cwd=base_dir, env=_env(base_dir),
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        why = (proc.stdout.strip() or proc.stderr.strip().splitlines()[-1:] or ["unknown"])[0] if (proc.stdout or proc.stderr) else "unknown"
        raise ConfigError(f"tool function {function} cannot be used: {why}", where=where,
                          fix="name a module importable from the pipeline file's directory (or PYTHONPATH) and a function in it")


def _run_user_tool(function: str, arguments: dict[str, JSONValue], timeout: float, base_dir: Path) -> JSONValue:
    try:
        proc = subprocess.run([sys.executable, "-m", "synthkd.tools.runner", function], input=json.dumps(arguments), cwd=base_dir,
                              env=_env(base_dir), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolError(f"timeout: no result within {timeout:g} s") from None
    try:
        reply = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ToolError(f"the tool process failed (exit {proc.returncode}): {tail[:300]}") from None
    if not reply.get("ok"):
        raise ToolError(str(reply.get("error"))[:500])
    return reply.get("result")


_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}


def check_arguments(schema: JSONSchema, arguments: JSONValue) -> str | None:
    """Why `arguments` break an object schema (required keys, property types, enums, no extra keys where the schema
    forbids them), or None. The common subset of JSON schema that tool definitions use."""
    if not isinstance(arguments, dict):
        return f"expected a JSON object, got {type(arguments).__name__}"
    props = schema.get("properties") or {}
    missing = [k for k in schema.get("required") or [] if k not in arguments]
    if missing:
        return f"missing {', '.join(missing)}"
    if schema.get("additionalProperties") is False:
        extra = sorted(set(arguments) - set(props))
        if extra:
            return f"unknown argument(s) {', '.join(extra)}"
    for key, value in arguments.items():
        prop: JSONSchema = props.get(key) or {}
        kind = prop.get("type")
        expected = _TYPES.get(kind) if isinstance(kind, str) else None
        if expected is not None and (not isinstance(value, expected) or (kind in ("integer", "number") and isinstance(value, bool))):
            return f"{key} must be {kind}, got {type(value).__name__}"
        if "enum" in prop and value not in prop["enum"]:
            return f"{key} must be one of {prop['enum']}"
    return None


def result_text(value: JSONValue) -> str:
    """A tool's result as the tool message's content."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
