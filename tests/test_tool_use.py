"""The `tool_use` stage against the test server with a scripted tool-using teacher: trajectories in OpenAI's form
(assistant tool_calls, tool results, a tools column) natively and in structured mode, built-in and user tools
run for real (a user tool in a subprocess with a timeout), failed tool calls kept in the trajectory, a
trajectory that never answers kept as a failed row, faults and kill -9 survived, bad tool declarations
stopped before any call."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, check_run_outputs, read_rows, remote_endpoint, run_cli, run_json
from tests.fakeserver import running_server
from tests.test_resume import _kill_when_cached

HOOK = "tests.scripted_tools:reply"
TASKS = [
    {"id": "t1", "instruction": "What is 17 times 23?", "gold": "391", "gold_tool": "calculator"},
    {"id": "t2", "instruction": "What is the capital of Peru?", "gold": "Lima", "gold_tool": "lookup_capital"},
    {"id": "t7", "instruction": "Count with bad arguments, again.", "gold_tool": "calculator"},
    {"id": "t3", "instruction": "Use the broken tool, please."},
    {"id": "t4", "instruction": "Count with bad arguments."},
    {"id": "t5", "instruction": "Never stop."},
    {"id": "t6", "instruction": "Say hi."},
]
TOOLS_MODULE = '''
import time

def weather(city):
    return {"city": city, "sky": "clear" if len(city) % 2 else "rain"}

def slow_tool():
    time.sleep(30)

def crash_tool():
    raise RuntimeError("the sensor is offline")
'''


def _pipeline(tmp: Path, url: str, tasks: list[dict[str, Any]] = TASKS, tools: list[dict[str, Any]] | None = None, **stage: Any) -> Path:
    (tmp / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    (tmp / "capitals.jsonl").write_text("".join(json.dumps({"country": c, "capital": k}) + "\n"
                                                for c, k in [("Peru", "Lima"), ("Chile", "Santiago")]))
    (tmp / "mytools.py").write_text(TOOLS_MODULE)
    spec = {
        "name": "tools", "prompts_dir": str(REPO / "prompts"),
        "endpoints": {"teacher": remote_endpoint(url, "teacher", concurrency=4)},
        "stages": [
            {"name": "tasks", "type": "load", "path": str(tmp / "tasks.jsonl")},
            {"name": "traj", "type": "tool_use", "input": "tasks", "max_steps": 4,
             "tools": tools if tools is not None else [{"name": "calculator", "builtin": "calculator"},
                                                      {"name": "lookup_capital", "builtin": "lookup", "table": "capitals.jsonl", "key_column": "country"}],
             **stage},
        ],
    }
    path = tmp / "tools.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


def test_native_trajectories(tmp_path: Path) -> None:
    with running_server(reply_hook=HOOK, log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        out = tmp_path / "run"
        proc = run_cli("run", str(_pipeline(tmp_path, server.base_url)), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["id"]: r for r in read_rows(out, "traj")}
    t1 = rows["t1"]
    assert _roles(t1["messages"]) == ["system", "user", "assistant", "tool", "assistant"]
    call = t1["messages"][2]["tool_calls"][0]
    assert call["function"]["name"] == "calculator" and json.loads(call["function"]["arguments"]) == {"expression": "17 * 23"}
    assert t1["messages"][3] == {"role": "tool", "tool_call_id": call["id"], "name": "calculator", "content": "391"}
    assert t1["answer"] == "The answer is 391." and t1["steps"] == 2
    assert json.loads(rows["t2"]["messages"][3]["content"]) == {"country": "Peru", "capital": "Lima"}
    assert rows["t2"]["answer"] == "The capital is Lima."
    # Failed tool calls stay in the trajectory, answered with the error, and are counted.
    assert rows["t3"]["messages"][3]["content"].startswith("error: there is no tool named 'no_such_tool'")
    assert rows["t3"]["tool_log"][0]["error_kind"] == "unknown_tool"
    assert rows["t4"]["messages"][3]["content"] == "error: invalid arguments: expression must be string, got int"
    assert rows["t6"]["steps"] == 1 and _roles(rows["t6"]["messages"]) == ["system", "user", "assistant"]
    # A trajectory that never answers fails, with what it did (this endpoint ignores tool_choice "none" on the last step).
    (t5,) = read_rows(out, "traj", failed=True)
    assert t5["id"] == "t5" and t5["reason"] == "no_answer" and len(t5["tool_log"]) == 4
    tools = json.loads(t1["tools"])
    assert [t["function"]["name"] for t in tools] == ["calculator", "lookup_capital"]
    stage = run_json(out)["stages"]["traj"]
    assert stage["trajectories"] == 6 and stage["tool_errors"] == {"unknown_tool": 1, "invalid_arguments": 2}
    assert stage["gold"] == {"n": 2, "correct": 2, "accuracy": 1.0}
    # the right tool with valid arguments: t1 and t2 yes, t7 called it with arguments the schema refuses
    assert stage["right_tool"] == {"n": 3, "correct": 2, "accuracy": 2 / 3}
    # The teacher was offered the tools natively, with tool_choice auto.
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(entry["tools"] == ["calculator", "lookup_capital"] for entry in log)
    check_run_outputs(out)


def test_structured_mode_writes_the_same_form(tmp_path: Path) -> None:
    tasks = [t for t in TASKS if t["id"] in ("t1", "t2", "t6")]
    with running_server(reply_hook=HOOK, log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        out = tmp_path / "run"
        proc = run_cli("run", str(_pipeline(tmp_path, server.base_url, tasks, mode="structured")), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["id"]: r for r in read_rows(out, "traj")}
    t1 = rows["t1"]
    assert _roles(t1["messages"]) == ["system", "user", "assistant", "tool", "assistant"]
    assert t1["messages"][2]["tool_calls"][0]["function"]["name"] == "calculator" and t1["messages"][3]["content"] == "391"
    assert t1["answer"] == "The answer is 391." and rows["t2"]["answer"] == "The capital is Lima."
    # The dataset's form is the native one (the tools in `tools`); the model was sent the protocol prompt instead.
    assert "JSON" not in t1["messages"][0]["content"]
    sent = t1["structured_messages"]
    assert "calculator" in sent[0]["content"] and "JSON" in sent[0]["content"]
    assert json.loads(sent[2]["content"]) == {"tool": "calculator", "arguments": {"expression": "17 * 23"}}
    assert sent[3] == {"role": "user", "content": "Result of calculator: 391"}
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(entry["tools"] is None and entry["response_format"] == "json_schema" for entry in log)


def test_user_tools_run_in_a_subprocess(tmp_path: Path) -> None:
    tools = [{"name": "weather", "function": "mytools:weather", "description": "The weather in a city.",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
             {"name": "slow_tool", "function": "mytools:slow_tool", "description": "Slow.", "timeout_s": 1,
              "parameters": {"type": "object", "properties": {}}},
             {"name": "crash_tool", "function": "mytools:crash_tool", "description": "Crashes.",
              "parameters": {"type": "object", "properties": {}}}]
    tasks = [{"id": "w", "instruction": "What is the weather in Oslo?"}, {"id": "s", "instruction": "Try the slow tool."},
             {"id": "c", "instruction": "Try the crashing tool."}]
    with running_server(reply_hook=HOOK) as server:
        out = tmp_path / "run"
        proc = run_cli("run", str(_pipeline(tmp_path, server.base_url, tasks, tools)), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["id"]: r for r in read_rows(out, "traj")}
    assert json.loads(rows["w"]["messages"][3]["content"]) == {"city": "Oslo", "sky": "rain"}
    assert rows["s"]["tool_log"][0]["error_kind"] == "timeout"
    assert rows["c"]["tool_log"][0]["error_kind"] == "tool_error" and "the sensor is offline" in rows["c"]["messages"][3]["content"]


def test_faults_and_kill9_mid_trajectories(tmp_path: Path) -> None:
    tasks = [{"id": f"m{i}", "instruction": f"What is {i} times {i + 3}?", "gold": str(i * (i + 3))} for i in range(14)]
    faults = [{"kind": "server_error", "rate": 0.3, "times": 1, "status": 500}]
    with running_server(reply_hook=HOOK, latency_ms=120, faults=faults, log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        pipeline = _pipeline(tmp_path, server.base_url, tasks, max_steps=3)
        clean = tmp_path / "clean"
        assert run_cli("run", str(pipeline), "--out", str(clean)).returncode == 0
        assert run_json(clean)["stages"]["traj"]["gold"]["correct"] == 14
        server.reset()
        killed = tmp_path / "killed"
        cached = _kill_when_cached(pipeline, killed, 10)
        assert cached < 28
        server.reset()
        proc = run_cli("run", str(pipeline), "--out", str(killed))
        assert proc.returncode == 0, proc.stderr
        asked = server.stats().get("chat_requests", 0) - server.stats().get("fault_server_error", 0)
        assert asked == 28 - cached  # each answered turn read back from the cache, none paid twice
    assert read_rows(killed, "traj") == read_rows(clean, "traj")


@pytest.mark.parametrize("tools,expect", [
    ([{"name": "x", "builtin": "teleport"}], "tools.0.builtin"),
    ([{"name": "x", "function": "nowhere_module:f", "description": "d", "parameters": {"type": "object"}}], "nowhere_module"),
    ([{"name": "x", "function": "mytools:weather"}], "description and parameters"),
    ([{"name": "x", "builtin": "lookup", "table": "missing.jsonl", "key_column": "k"}], "missing.jsonl"),
    ([{"name": "x", "builtin": "calculator"}, {"name": "x", "builtin": "weekday"}], "two tools are named"),
    ([], "tools"),
])
def test_bad_tool_declarations_exit_2(tmp_path: Path, tools: list[dict[str, Any]], expect: str) -> None:
    proc = run_cli("validate", str(_pipeline(tmp_path, "http://127.0.0.1:9/v1", tools=tools)))
    assert proc.returncode == 2 and expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_structured_mode_constrains_arguments_and_honours_required(tmp_path: Path) -> None:
    # No script: the test server writes whatever the reply schema allows. Each tool's arguments are its own schema,
    # so every call it makes is one the tool accepts; tool_choice required leaves the first reply no answer to give,
    # and the last step (answer_on_last_step) nothing but the answer.
    tasks = [{"id": f"r{i}", "instruction": f"Task number {i}."} for i in range(6)]
    with running_server() as server:
        out = tmp_path / "run"
        pipeline = _pipeline(tmp_path, server.base_url, tasks, mode="structured", tool_choice="required", max_steps=2)
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(out, "traj")
    assert len(rows) == 6
    for row in rows:
        assert _roles(row["messages"]) == ["system", "user", "assistant", "tool", "assistant"] and row["steps"] == 2
        assert row["messages"][2]["tool_calls"] and row["answer"]
        assert all(entry["error_kind"] != "invalid_arguments" for entry in row["tool_log"])


def test_schemas_beyond_the_typed_subset_fall_back_to_an_open_object() -> None:
    # A user tool's JSON schema may use a list of types or an enum of objects: structured mode then asks for an open
    # object of arguments (the tool still checks them), rather than failing to build its reply schema.
    from synthkd.stages.tool_use import structured_reply_model
    from synthkd.tools.spec import Tool, ToolSpec

    def tool(prop: dict[str, Any]) -> Tool:
        return Tool(ToolSpec(name="t", function="tools_mod:t", description="a user tool",
                             parameters={"type": "object", "properties": {"x": prop}, "required": ["x"]}), Path("."))

    for prop in ({"type": ["string", "null"]}, {"enum": [{"a": 1}, [2]]}, {"type": "tuple"}):
        schema = structured_reply_model([tool(prop)]).model_json_schema()
        assert "additionalProperties" in json.dumps(schema), schema
    typed = structured_reply_model([tool({"type": "string", "enum": ["a", "b"]})]).model_json_schema()
    assert '"enum": ["a", "b"]' in json.dumps(typed)
