"""Under injected faults a run completes; every record is produced or listed as failed; nothing is duplicated."""

from pathlib import Path

import pytest

from tests.conftest import generate_pipeline, lion_pipeline, read_rows, run_cli, run_json
from tests.fakeserver import running_server

TRANSIENT = [
    {"kind": "rate_limit", "rate": 0.15, "times": 1, "retry_after": 0.05},
    {"kind": "server_error", "rate": 0.1, "times": 1, "status": 503},
    {"kind": "server_error", "rate": 0.1, "times": 1, "status": 500},
    {"kind": "drop", "rate": 0.08, "times": 1},
    {"kind": "hang", "rate": 0.05, "times": 1, "hang_seconds": 30},
    {"kind": "not_json", "rate": 0.08, "times": 1},
]


def test_generate_survives_transient_faults(tmp_path: Path) -> None:
    with running_server(faults=TRANSIENT, log_path=tmp_path / "server.jsonl") as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=40, samples=2, timeout_s=1.5)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        stats = server.stats()
    rows = read_rows(out, "answers")
    assert len(rows) == 80 and not read_rows(out, "answers", failed=True)
    assert len({(r["id"], r["sample"]) for r in rows}) == 80
    stage = run_json(out)["stages"]["answers"]
    assert stage["calls"] == 80 and stage["retries"] > 0
    # Every fault kind was actually injected.
    for kind in ("rate_limit", "server_error", "drop", "hang", "not_json"):
        assert stats.get(f"fault_{kind}", 0) > 0, kind


def test_permanent_failures_are_kept_with_reason(tmp_path: Path) -> None:
    faults = [{"kind": "server_error", "rate": 0.2, "times": -1, "status": 500}, *TRANSIENT[:2]]
    with running_server(faults=faults) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=30, max_retries=2)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    rows, failed = read_rows(out, "answers"), read_rows(out, "answers", failed=True)
    assert failed, "a permanent 500 must leave failed rows"
    assert len(rows) + len(failed) == 30
    assert {r["id"] for r in rows}.isdisjoint({f["id"] for f in failed})
    assert {f["reason"] for f in failed} == {"gave_up:500"}
    assert run_json(out)["stages"]["answers"]["failures"] == {"gave_up:500": len(failed)}


@pytest.mark.needs_trl  # validate checks the lion stage's `sft:` block against TRL
def test_lion_survives_bad_structured_replies(tmp_path: Path) -> None:
    # Some prompts always get schema-violating or truncated replies; others once.
    faults = [
        {"kind": "schema_violation", "rate": 0.25, "times": -1},
        {"kind": "truncate", "rate": 0.1, "times": 1},
        {"kind": "schema_violation", "rate": 0.2, "times": 1},
        *TRANSIENT[:3],
    ]
    with running_server(faults=faults) as server:
        pipeline = lion_pipeline(tmp_path, server.base_url, n_seeds=16)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    state = run_json(out)
    iterations = state["stages"]["lion"]["iterations"]
    assert [it["iteration"] for it in iterations] == [1, 2]
    judged = read_rows(out, "lion.iter1.discrimination")
    failed = read_rows(out, "lion.iter1.discrimination", failed=True)
    assert len(judged) + len(failed) == iterations[0]["cache_pool"] - len(read_rows(out, "lion", failed=True))
    assert failed and all(f["reason"] in {"schema_violation", "truncated"} and f["raw"] is not None for f in failed)
    assert len({r["id"] for r in judged}) == len(judged)


def test_retry_resends_extra_body(tmp_path: Path) -> None:
    # The first attempt of every prompt is rate-limited; the retry must send the same body,
    # extra_body fields included (e.g. vLLM's guided decoding or chat_template_kwargs).
    import yaml

    with running_server(faults=[{"kind": "rate_limit", "rate": 1.0, "times": 1, "retry_after": 0.01}],
                        log_path=tmp_path / "server.jsonl", log_sync=True) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=3)
        data = yaml.safe_load(pipeline.read_text())
        data["stages"][1]["sampling"]["extra_body"] = {"top_k": 5}
        pipeline.write_text(yaml.safe_dump(data, sort_keys=False))
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        entries = server.log_entries()
    assert len(read_rows(out, "answers")) == 3
    bodies: dict[str, set[str]] = {}
    for entry in entries:
        bodies.setdefault(entry["prompt_key"], set()).add(entry["body_key"])
    assert len(bodies) == 3 and len(entries) == 6
    assert all(len(keys) == 1 for keys in bodies.values()), "a retry sent a different body"
