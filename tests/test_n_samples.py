"""k samples in one request (`n_per_request`), against the test server over HTTP and the CLI: a quarter of
the requests and the prompt billed once per record; one cache entry per sample, reused with the option off
or with another k; a server that refuses n gets single requests; failed samples kept with their reason;
a structured reply that fails its schema retried alone."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import edit_pipeline, REPO, generate_pipeline, read_rows, remote_endpoint, run_cli, run_json
from tests.fakeserver import running_server

K = 4
RECORDS = 10
PRICES = {"input_per_million": 100.0, "output_per_million": 300.0}


def _run(pipeline: Path, out: Path) -> tuple[dict[str, Any], str]:
    proc = run_cli("run", str(pipeline), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_json(out)["stages"]["answers"], proc.stderr


def _shape(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return sorted((r["id"], r["sample"]) for r in rows)


def _cache(out: Path) -> tuple[int, int, int, float]:
    """(entries, prompt tokens, completion tokens, cost) stored in a run's request cache."""
    with sqlite3.connect(out / "cache.sqlite") as con:
        n, pt, ct, cost = con.execute("SELECT COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost) FROM replies").fetchone()
    return n, pt, ct, cost


def _copy_cache(src: Path, dst: Path) -> Path:
    dst.mkdir()
    shutil.copy(src / "cache.sqlite", dst / "cache.sqlite")
    return dst


# ---- (a) + (b): a quarter of the requests, the prompt billed once; the cache reused both ways -----------
def test_n_per_request_bills_the_prompt_once_and_its_cache_serves_any_k(tmp_path: Path) -> None:
    (tmp_path / "k").mkdir()
    (tmp_path / "n").mkdir()
    with running_server(log_path=tmp_path / "k.jsonl", log_sync=True) as server:
        single = generate_pipeline(tmp_path / "k", server.base_url, n=RECORDS, samples=K, prices=PRICES)
        k_stage, _ = _run(single, tmp_path / "k" / "run")
        k_requests = server.stats()["chat_requests"]
        assert {e["n"] for e in server.log_entries()} == {None}  # the default path sends no n
    k_rows = read_rows(tmp_path / "k" / "run", "answers")

    with running_server(log_path=tmp_path / "n.jsonl", log_sync=True) as server:
        pipeline = generate_pipeline(tmp_path / "n", server.base_url, n=RECORDS, samples=K, prices=PRICES, n_per_request=True)
        out = tmp_path / "n" / "run"
        stage, _ = _run(pipeline, out)
        n_requests = server.stats()["chat_requests"]
        assert [e["n"] for e in server.log_entries()] == [K] * RECORDS
        rows = read_rows(out, "answers")

        # (a) The same rows as the k-request run, from a quarter of the requests, the prompt billed once per record.
        assert (k_requests, n_requests) == (RECORDS * K, RECORDS)
        assert _shape(rows) == _shape(k_rows) == sorted((r["id"], s) for r in k_rows[::K] for s in range(K))
        assert not read_rows(out, "answers", failed=True) and not read_rows(tmp_path / "k" / "run", "answers", failed=True)
        assert all(r["response"] and r["truncated"] is False for r in rows)
        for i in range(0, len(rows), K):  # k different samples per record
            assert len({r["response"] for r in rows[i:i + K]}) == K
        assert stage["prompt_tokens"] * K == k_stage["prompt_tokens"]
        assert (stage["calls"], k_stage["calls"], stage["cache_hits"]) == (RECORDS, RECORDS * K, 0)
        ep = stage["by_endpoint"]["teacher"]
        assert (ep["n_requests"], ep["n_samples"]) == (RECORDS, RECORDS * K) and "n_requests" not in k_stage["by_endpoint"]["teacher"]
        # The test server counts each choice's words as its completion tokens: the per-sample split adds up exactly.
        assert stage["completion_tokens"] == sum(len(r["response"].split()) for r in rows)
        # One cache entry per sample; together they hold what the server billed, the cost included.
        entries, pt, ct, cost = _cache(out)
        assert (entries, pt, ct) == (RECORDS * K, stage["prompt_tokens"], stage["completion_tokens"])
        billed = (stage["prompt_tokens"] * PRICES["input_per_million"] + stage["completion_tokens"] * PRICES["output_per_million"]) / 1e6
        assert cost == pytest.approx(billed) and stage["cost_usd"] == pytest.approx(billed, abs=1e-6)

        # (b) With the option off, a run on that cache asks nothing and writes the same rows.
        server.reset()
        off = _copy_cache(out, tmp_path / "n" / "off")
        state, _ = _run(edit_pipeline(pipeline, endpoint={"n_per_request": False}), off)
        assert server.stats().get("chat_requests", 0) == 0
        assert (state["calls"], state["cache_hits"]) == (0, RECORDS * K)
        assert read_rows(off, "answers") == rows

        # k 4 -> 6 with the option on: only the 2 missing samples per record, in one request each with n=2.
        server.reset()
        log_start = len(server.log_entries())
        state, _ = _run(edit_pipeline(pipeline, endpoint={"n_per_request": True}, stage={"samples": 6}), off)
        assert server.stats()["chat_requests"] == RECORDS
        assert [e["n"] for e in server.log_entries()[log_start:]] == [2] * RECORDS
        assert (state["calls"], state["cache_hits"]) == (RECORDS, RECORDS * K)
        more = read_rows(off, "answers")
        assert _shape(more) == sorted((r["id"], s) for r in rows[::K] for s in range(6))
        assert [r for r in more if r["sample"] < K] == rows  # the paid samples kept as they were
        assert not read_rows(off, "answers", failed=True)
        assert _cache(off)[0] == RECORDS * 6


# ---- (c) a server that refuses n -------------------------------------------------------------------
def test_a_server_refusing_n_gets_single_requests(tmp_path: Path) -> None:
    with running_server(refuse_n=True, log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=8, samples=K, n_per_request=True)
        out = tmp_path / "run"
        stage, stderr = _run(pipeline, out)
        entries = server.log_entries()
        stats = server.stats()
    rows = read_rows(out, "answers")
    assert _shape(rows) == sorted((r["id"], s) for r in rows[::K] for s in range(K)) and len(rows) == 8 * K
    assert not read_rows(out, "answers", failed=True) and stage["failures"] == {}
    refused = [e for e in entries if e["n"]]
    assert refused and all(e["n"] == K for e in refused) and stats["status_400"] == len(refused)
    assert sum(1 for e in entries if e["n"] is None) == 8 * K  # every sample, as its own request
    assert stderr.count("does not take n>1") == 1, stderr
    assert stage["by_endpoint"]["teacher"]["n_refused"] == len(refused)
    assert stage["calls"] == 8 * K and _cache(out)[0] == 8 * K


# ---- (d) permanent faults: the failed samples listed with their reason, the rest kept -----------------
def test_permanent_faults_fail_the_samples_of_the_request_and_keep_the_rest(tmp_path: Path) -> None:
    faults = [{"kind": "server_error", "rate": 0.3, "times": -1, "status": 500},
              {"kind": "rate_limit", "rate": 0.2, "times": 1, "retry_after": 0.05}]
    with running_server(faults=faults) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=20, samples=K, max_retries=2, n_per_request=True)
        out = tmp_path / "run"
        stage, _ = _run(pipeline, out)
    rows, failed = read_rows(out, "answers"), read_rows(out, "answers", failed=True)
    assert rows and failed, "some prompts always fail, others never"
    assert len(rows) + len(failed) == 20 * K
    assert _shape(rows + failed) == sorted((r["id"], s) for r in (rows + failed)[::K] for s in range(K))
    assert {f["reason"] for f in failed} == {"gave_up:500"} and all(f["detail"] for f in failed)
    # A record's k samples were one request: they fail or are kept together.
    assert {r["id"] for r in rows}.isdisjoint({f["id"] for f in failed})
    assert all(sum(1 for f in failed if f["id"] == i) == K for i in {f["id"] for f in failed})
    assert stage["failures"] == {"gave_up:500": len(failed)}
    assert stage["retries"] > 0
    assert _cache(out)[0] == len(rows)


# ---- structured replies: a sample that fails its schema is retried alone -------------------------------
def bad_second_choice(body: dict[str, Any], index: int) -> str | None:
    """Reply hook: choice 1 of a request with n breaks the schema; everything else is the usual reply."""
    return '{"unexpected": true}' if body.get("n") and index == 1 else None


def test_an_invalid_structured_sample_is_retried_on_its_own(tmp_path: Path) -> None:
    lines = (REPO / "data" / "rationale" / "arithmetic_train.jsonl").read_text().splitlines()[:6]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    spec = {
        "name": "nrat", "prompts_dir": str(REPO / "prompts"),
        "endpoints": {"teacher": remote_endpoint("URL", "teacher", n_per_request=True)},
        "stages": [
            {"name": "tasks", "type": "load", "path": str(tmp_path / "train.jsonl")},
            {"name": "rationales", "type": "rationale", "input": "tasks", "gold_column": None, "self_consistency": False,
             "samples": K, "max_rationale_chars": 400, "sampling": {"temperature": 0.7, "max_tokens": 200, "seed": 3}},
        ],
    }
    with running_server(reply_hook="tests.test_n_samples:bad_second_choice", log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        spec["endpoints"]["teacher"]["base_url"] = server.base_url
        path = tmp_path / "nrat.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        out = tmp_path / "run"
        proc = run_cli("run", str(path), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        entries = server.log_entries()
    # Per input: one request for its 4 samples, then one for sample 1 alone (its attempt 1, no n).
    assert sorted(e["n"] or 1 for e in entries) == [1] * 6 + [K] * 6
    stage = run_json(out)["stages"]["rationales"]
    assert stage["failures"] == {} and stage["rationale"]["kept"] == 6 * K
    assert not read_rows(out, "rationales", failed=True)
    assert {(p["parsed"], p["kept"]) for p in read_rows(out, "rationales.per_input")} == {(K, K)}
    assert _cache(out)[0] == 6 * (K + 1)  # the invalid reply stays cached under sample 1's first key
