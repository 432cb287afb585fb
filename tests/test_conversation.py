"""The `conversation` stage against the test server with a scripted user simulator: conversations in TRL's
format that end when the simulator says so or at max_turns, a seed's own first message, a conversation that
fails mid-way kept as a failed row with its turns, faults survived, kill -9 then rerun asking only for what was
not cached, and bad configs stopped before any call."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, check_run_outputs, read_rows, remote_endpoint, run_cli, run_json
from tests.fakeserver import running_server
from tests.test_resume import _kill_when_cached

HOOK = "tests.scripted_chat:reply"
SEEDS = [
    {"id": "c1", "topic": "tide pools"},
    {"id": "c2", "topic": "quick: the boiling point of water"},
    {"id": "c3", "topic": "bread baking", "first_message": "My sourdough is flat. What went wrong?"},
    {"id": "c4", "topic": "silent: chess openings"},
    {"id": "c5", "topic": "learning to swim", "persona": "an adult beginner"},
]


def _pipeline(tmp: Path, url: str, seeds: list[dict[str, Any]] = SEEDS, **stage: Any) -> Path:
    data = tmp / "seeds.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in seeds))
    spec = {
        "name": "chat", "prompts_dir": str(REPO / "prompts"),
        "endpoints": {n: remote_endpoint(url, n, concurrency=4) for n in ("user", "teacher")},
        "stages": [
            {"name": "seeds", "type": "load", "path": str(data)},
            {"name": "chats", "type": "conversation", "input": "seeds", "max_turns": 4,
             "templates": {"teacher_system": "chat/teacher_system.jinja2"},
             "teacher_sampling": {"temperature": 0.7, "max_tokens": 64}, **stage},
        ],
    }
    path = tmp / "chat.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_conversations_end_to_end(tmp_path: Path) -> None:
    with running_server(reply_hook=HOOK, log_path=tmp_path / "log.jsonl") as server:
        pipeline = _pipeline(tmp_path, server.base_url)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        requests = server.stats().get("chat_requests", 0)
        server.reset()
        assert run_cli("run", str(pipeline), "--out", str(out)).returncode == 0
        assert server.stats().get("chat_requests", 0) == 0  # a finished run pays for nothing again
    rows = {r["id"]: r for r in read_rows(out, "chats")}
    assert set(rows) == {"c1", "c2", "c3", "c5"}
    for r in rows.values():
        roles = [m["role"] for m in r["messages"]]
        # the teacher's system message first (as it saw the conversation), then the exchanges
        assert roles == ["system"] + ["user", "assistant"] * r["turns"] and len(r["turn_meta"]) == r["turns"]
        assert r["messages"][0]["content"].startswith("You are a helpful assistant.")
        assert all(m["content"].strip() for m in r["messages"])
    # c1: a follow-up, then a last message before the end marker, answered: three exchanges, ended by the simulator.
    c1 = rows["c1"]
    assert c1["turns"] == 3 and c1["ended_by"] == "simulator"
    assert c1["messages"][1]["content"] == "Hello, can you tell me about tide pools?"
    assert c1["messages"][5]["content"] == "Thanks, that is all I needed."
    assert [t["user_from"] for t in c1["turn_meta"]] == ["simulator"] * 3
    # c2 ends after one exchange; c3's first message is the seed's own, not the simulator's.
    assert rows["c2"]["turns"] == 1 and rows["c2"]["ended_by"] == "simulator"
    assert rows["c3"]["messages"][1]["content"] == "My sourdough is flat. What went wrong?"
    assert rows["c3"]["turn_meta"][0]["user_from"] == "seed"
    # c4: an empty second message fails the conversation, which keeps its first exchange and says where it stopped.
    failed = {r["id"]: r for r in read_rows(out, "chats", failed=True)}
    assert failed["c4"]["reason"] == "empty_reply" and failed["c4"]["step"] == "user 2" and failed["c4"]["turns"] == 1
    assert [m["role"] for m in failed["c4"]["messages"]] == ["system", "user", "assistant"]
    # Each exchange is one teacher call and each simulator message one call (c3's first message is free).
    exchanges = sum(r["turns"] for r in rows.values()) + 1  # + c4's one answer
    # one per user message, less c3's own first message, plus c2's closing end marker and c4's two calls
    simulator = sum(r["turns"] for r in rows.values()) - 1 + 1 + 2
    assert requests == exchanges + simulator
    stage = run_json(out)["stages"]["chats"]
    assert stage["conversations"] == 4 and stage["ended_by"] == {"simulator": 4} and stage["failed_at_turn"] == {"user 2": 1}
    # The teacher saw the system message, then the conversation itself.
    check_run_outputs(out)
    assert "conversations" in run_cli("status", str(out)).stdout


def test_max_turns_and_faults(tmp_path: Path) -> None:
    faults = [{"kind": "server_error", "rate": 0.3, "times": 1, "status": 500}]
    with running_server(reply_hook=HOOK, faults=faults) as server:
        pipeline = _pipeline(tmp_path, server.base_url, seeds=SEEDS[:1], max_turns=2)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = read_rows(out, "chats")
    assert row["turns"] == 2 and row["ended_by"] == "max_turns"


def test_kill9_mid_conversations_then_resume(tmp_path: Path) -> None:
    seeds = [{"id": f"s{i}", "topic": f"topic number {i}"} for i in range(12)]
    with running_server(reply_hook=HOOK, latency_ms=100, log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        pipeline = _pipeline(tmp_path, server.base_url, seeds=seeds)
        clean = tmp_path / "clean"
        assert run_cli("run", str(pipeline), "--out", str(clean)).returncode == 0
        total = server.stats().get("chat_requests", 0)
        server.reset()
        killed = tmp_path / "killed"
        cached = _kill_when_cached(pipeline, killed, total // 2)
        assert cached < total
        server.reset()
        proc = run_cli("run", str(pipeline), "--out", str(killed))
        assert proc.returncode == 0, proc.stderr
        assert server.stats().get("chat_requests", 0) == total - cached  # every cached turn read back, none paid twice
    assert read_rows(killed, "chats") == read_rows(clean, "chats")


@pytest.mark.parametrize("stage,expect", [
    ({"templates": {"user_turn": "lion/referee.jinja2"}}, "answer_1"),
    ({"max_turns": 0}, "max_turns"),
    ({"user": "nobody"}, "nobody"),
])
def test_bad_conversation_configs_exit_2(tmp_path: Path, stage: dict[str, Any], expect: str) -> None:
    pipeline = _pipeline(tmp_path, "http://127.0.0.1:9/v1", **stage)
    proc = run_cli("validate", str(pipeline))
    assert proc.returncode == 2 and expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_input_column_clash_exit_2(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, "http://127.0.0.1:9/v1", seeds=[{"id": "x", "topic": "t", "turns": 3}])
    proc = run_cli("validate", str(pipeline))
    assert proc.returncode == 2 and "turns" in proc.stderr and "rename" in proc.stderr, proc.stderr


def test_conversation_eval_scores_every_turn_given_the_teachers_history(tmp_path: Path) -> None:
    with running_server(reply_hook=HOOK, log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        pipeline = _pipeline(tmp_path, server.base_url)
        spec = yaml.safe_load(pipeline.read_text())
        spec["endpoints"]["student"] = remote_endpoint(server.base_url, "student", concurrency=4)
        spec["stages"].append({"name": "turns", "type": "conversation_eval", "input": "chats", "student": "student"})
        pipeline.write_text(yaml.safe_dump(spec, sort_keys=False))
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
    chats = {r["id"]: r for r in read_rows(out, "chats")}
    turns = read_rows(out, "turns")
    assert len(turns) == sum(r["turns"] for r in chats.values())
    for t in turns:
        conversation = chats[t["id"]]["messages"]
        assert conversation[t["context"]]["role"] == "assistant" and conversation[t["context"]]["content"] == t["reference"]
        assert 0 <= t["rouge_l"] <= 100 and t["answer"]
    # The student was asked with exactly the teacher's history before each turn (the system message included).
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sum(1 for entry in log if entry["model"] == "student") == len(turns)
    stage = run_json(out)["stages"]["turns"]
    assert stage["turns"] == len(turns) and stage["rouge_l"]["n"] == len(turns)
    assert set(stage["by_turn"]) == {"1", "2", "3"} and "nll" not in stage  # a remote student: no weights to score
    assert "turn 1:" in run_cli("status", str(out)).stdout
    # The teacher's turn over the student's, in the same context: DPO pairs at no teacher cost.
    pairs = read_rows(out, "turns.pairs")
    assert pairs and len(pairs) <= len(turns)
    for p in pairs:
        turn = next(t for t in turns if f"{t['id']}:t{t['turn']}" == p["id"])
        assert p["chosen"][0]["content"] == turn["reference"] and p["rejected"][0]["content"] == turn["answer"]
        assert p["prompt"] == [{"role": m["role"], "content": m["content"]} for m in chats[turn["id"]]["messages"][:turn["context"]]]
