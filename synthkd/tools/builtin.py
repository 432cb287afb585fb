"""Built-in tools that need no network: arithmetic, a lookup in a JSONL table, date arithmetic.

Each is a pure function of its arguments (and, for the lookup, its table), so a trajectory's tool results, like
its model replies, are the same on a rerun: a resumed run reads its model turns back from the cache.
"""

from __future__ import annotations

import ast
import datetime as dt
import math
import operator
from typing import Any, Callable

from synthkd.tools.wire import JSONSchema, JSONValue

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max,
                                             "log": math.log, "exp": math.exp}
_CONSTANTS = {"pi": math.pi, "e": math.e}


# A row of a lookup table: one JSON object of its JSONL file.
TableRow = dict[str, JSONValue]


class ToolError(Exception):
    """A tool could not do what it was asked; the message goes back to the model as the tool's result."""


def calculate(expression: str) -> float | int:
    """Evaluate an arithmetic expression (+ - * / // % **, parentheses, sqrt abs round min max log exp, pi e).

    Parsed, never `eval`ed: a name or call outside that list is refused; huge powers are refused before they run."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 1e6):
                raise ToolError("power too large")
            try:
                return _BINARY[type(node.op)](left, right)
            except ZeroDivisionError:
                raise ToolError("division by zero") from None
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](value(node.operand))
        if isinstance(node, ast.Name) and node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords:
            try:
                return _FUNCTIONS[node.func.id](*[value(a) for a in node.args])
            except (TypeError, ValueError) as exc:
                raise ToolError(f"{node.func.id}: {exc}") from None
        raise ToolError(f"not allowed in an expression: {ast.unparse(node)!r}")

    result = value(tree.body)
    if isinstance(result, float) and result.is_integer() and abs(result) < 1e15:
        return int(result)
    return round(result, 10) if isinstance(result, float) else result


def _date(text: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(text).strip())
    except ValueError:
        raise ToolError(f"{name} must be a date as YYYY-MM-DD, not {text!r}") from None


def days_between(start: str, end: str) -> int:
    """Days from `start` to `end` (negative when `end` is earlier)."""
    return (_date(end, "end") - _date(start, "start")).days


def add_days(date: str, days: int) -> str:
    """The date `days` after `date` (before it for a negative number)."""
    try:
        return (_date(date, "date") + dt.timedelta(days=int(days))).isoformat()
    except OverflowError:
        raise ToolError("the date falls outside the calendar") from None


def weekday(date: str) -> str:
    """The day of the week of `date`."""
    return _date(date, "date").strftime("%A")


def lookup(table: dict[str, TableRow], key_column: str, key: str) -> TableRow:
    """The row of `table` whose `key_column` equals `key` (case and surrounding space ignored)."""
    row = table.get(str(key).strip().casefold())
    if row is None:
        raise ToolError(f"no row with {key_column} {key!r}")
    return row


# name -> (description, JSON schema of the arguments); the implementations are bound in synthkd.tools.spec.
SCHEMAS: dict[str, tuple[str, JSONSchema]] = {
    "calculator": ("Evaluate an arithmetic expression, e.g. (3 + 4) * 2 or sqrt(16).",
                   {"type": "object", "properties": {"expression": {"type": "string", "description": "The expression."}},
                    "required": ["expression"], "additionalProperties": False}),
    "days_between": ("Count the days from one date to another (dates as YYYY-MM-DD).",
                     {"type": "object", "properties": {"start": {"type": "string"}, "end": {"type": "string"}},
                      "required": ["start", "end"], "additionalProperties": False}),
    "add_days": ("The date a number of days after a date (YYYY-MM-DD; negative days go back).",
                 {"type": "object", "properties": {"date": {"type": "string"}, "days": {"type": "integer"}},
                  "required": ["date", "days"], "additionalProperties": False}),
    "weekday": ("The day of the week of a date (YYYY-MM-DD).",
                {"type": "object", "properties": {"date": {"type": "string"}}, "required": ["date"], "additionalProperties": False}),
}
