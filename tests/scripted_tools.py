"""A scripted tool-using teacher for the tool_use tests (`--reply-hook tests.scripted_tools:reply`).

Model `teacher` reads the task (the first user message) and what the tools said so far:
* "What is A times B?" calls calculator with "A * B", then answers "The answer is <result>.";
* "What is the capital of C?" calls lookup_capital with C, then answers with the row's capital;
* "Use the broken tool" calls a tool that does not exist, then (after the error) answers "I could not.";
* "Count with bad arguments" calls calculator with a number instead of a string, then answers;
* "weather in C?", "slow tool", "crashing tool" call the user tools weather, slow_tool and crash_tool;
* "Never stop" calls calculator forever (a trajectory that never answers);
* anything else answers at once.
Natively (the request has `tools`) it returns tool calls; in structured mode (a JSON schema reply format) the
same decisions as `{"tool": ..., "arguments": ...}` / `{"answer": ...}` JSON text.
"""

from __future__ import annotations

import json
import re
from typing import Any


def _decide(task: str, results: list[str]) -> tuple[str, dict[str, Any]] | str:
    """(tool, arguments) to call next, or the answer."""
    if m := re.search(r"What is (\d+) times (\d+)\?", task):
        return ("calculator", {"expression": f"{m.group(1)} * {m.group(2)}"}) if not results else f"The answer is {results[-1]}."
    if m := re.search(r"capital of ([A-Za-z ]+)\?", task):
        if not results:
            return ("lookup_capital", {"country": m.group(1).strip()})
        if results[-1].startswith("error"):
            return "I do not know."
        return f"The capital is {json.loads(results[-1])['capital']}."
    if "broken tool" in task:
        return ("no_such_tool", {}) if not results else "I could not."
    if "bad arguments" in task:
        return ("calculator", {"expression": 12}) if not results else "The tool refused."
    if m := re.search(r"weather in ([A-Za-z ]+)\?", task):
        return ("weather", {"city": m.group(1).strip()}) if not results else f"It says: {results[-1]}"
    if "slow tool" in task:
        return ("slow_tool", {}) if not results else "The tool took too long."
    if "crashing tool" in task:
        return ("crash_tool", {}) if not results else "The tool failed."
    if "Never stop" in task:
        return ("calculator", {"expression": f"{len(results)} + 1"})
    return "Nothing to compute."


def reply(body: dict[str, Any], index: int) -> Any:
    if body.get("model") != "teacher":
        return None
    messages = body.get("messages") or []
    task = next((m["content"] for m in messages if m.get("role") == "user"), "")
    structured = (body.get("response_format") or {}).get("type") == "json_schema"
    if structured:
        results = [m["content"].split(": ", 1)[1] for m in messages[2:] if m.get("role") == "user" and m["content"].startswith("Result of ")]
    else:
        results = [m["content"] for m in messages if m.get("role") == "tool"]
    decision = _decide(task, results)
    if isinstance(decision, str):
        return json.dumps({"answer": decision}) if structured else decision
    tool, arguments = decision
    if structured:
        return json.dumps({"tool": tool, "arguments": arguments})
    return {"tool_calls": [{"name": tool, "arguments": arguments}]}
