"""Batch mode against the test server's batch API (/v1/files, /v1/batches), over HTTP and the CLI.

What a user checks: the same dataset as an online run, at the batch price; a run killed with kill -9
while it waits polls the same batch on rerun and submits nothing twice (also when it died before
writing the batch id); failed and expired batches and failed items go online or into a new batch as
set; the budget is reserved at the batch price; `n_per_request` works inside a batch.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from synthkd.client.accounting import Budget, Meter
from synthkd.client.cache import RequestCache
from synthkd.client.endpoint import Call, EndpointClient
from synthkd.client.executor import run_calls
from synthkd.config.endpoints import BatchConfig, EndpointConfig, Sampling
from synthkd.errors import BudgetExceeded
from tests.conftest import edit_pipeline, REPO, generate_pipeline, read_rows, run_cli, run_json
from tests.fakeserver import running_server

RECORDS = 12
K = 2
PRICES = {"input_per_million": 100.0, "output_per_million": 300.0}
FAST = {"poll_interval_s": 0.1}


def _pipeline(tmp: Path, base_url: str, batch: dict[str, Any] | None, stage_batch: bool | None = None,
              samples: int = K, **endpoint: Any) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    extra = {"prices": PRICES, **endpoint}
    if batch is not None:
        extra["batch"] = batch
    path = generate_pipeline(tmp, base_url, n=RECORDS, samples=samples, **extra)
    return edit_pipeline(path, stage={"batch": stage_batch}) if stage_batch is not None else path


def _run(pipeline: Path, out: Path, ok: bool = True) -> tuple[dict[str, Any], str]:
    proc = run_cli("run", str(pipeline), "--out", str(out))
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return run_json(out)["stages"].get("answers", {}), proc.stderr


def _online_rows(tmp: Path, samples: int = K, **endpoint: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The dataset and stage entry of the same pipeline answered online by a fresh test server."""
    with running_server() as server:
        stage, _ = _run(_pipeline(tmp / "online", server.base_url, None, samples=samples, **endpoint), tmp / "online" / "run")
    return read_rows(tmp / "online" / "run", "answers"), stage


def _ids(batches: list[dict[str, Any]]) -> list[str]:
    return [cid for b in batches for cid in b["custom_ids"]]


# ---- the same dataset as online, at the batch price -----------------------------------------------
def test_a_batch_stage_writes_the_online_dataset_at_the_batch_price(tmp_path: Path) -> None:
    online, online_stage = _online_rows(tmp_path)
    with running_server(batch_seconds=0.6) as server:
        # The endpoint's batch block is off; the stage turns batch mode on for itself.
        pipeline = _pipeline(tmp_path / "batch", server.base_url, {"enabled": False, **FAST}, stage_batch=True)
        out = tmp_path / "batch" / "run"
        stage, stderr = _run(pipeline, out)
        stderr = " ".join(stderr.split())  # the console wraps long lines
        batches = server.batches()
        assert server.stats().get("chat_requests", 0) == 0  # nothing went online
        assert len(batches) == 1 and len(_ids(batches)) == len(set(_ids(batches))) == RECORDS * K
        assert read_rows(out, "answers") == online and not read_rows(out, "answers", failed=True)
        # Billed at half the online price, counted as this stage's requests, not as cache hits.
        assert stage["cost_usd"] == pytest.approx(online_stage["cost_usd"] * 0.5, abs=2e-6)
        assert (stage["calls"], stage["cache_hits"], stage["prompt_tokens"]) == (RECORDS * K, 0, online_stage["prompt_tokens"])
        ep = stage["by_endpoint"]["teacher"]
        assert (ep["batches"], ep["batch_requests"], ep["batch_answered"]) == (1, RECORDS * K, RECORDS * K)
        # Progress shows the batch's states as they change.
        assert f"submitted batch {batches[0]['id']}" in stderr and f"batch {batches[0]['id']}: in_progress" in stderr
        assert f"batch {batches[0]['id']} completed: {RECORDS * K} answered" in stderr

        # A rerun asks for nothing: the replies are in the request cache like online ones.
        _run(pipeline, out)
        assert len(server.batches()) == 1 and server.stats().get("chat_requests", 0) == 0
        # Switching the stage back to online reuses the same cache entries (batch mode is not in the key).
        _run(edit_pipeline(pipeline, stage={"batch": False}), out)
        assert server.stats().get("chat_requests", 0) == 0 and len(server.batches()) == 1


# ---- kill -9 while waiting, then rerun ------------------------------------------------------------------
def _wait_for_batch_id(cache: Path, proc: subprocess.Popen[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "synthkd ended before its batch was submitted"
        if cache.is_file():
            try:
                with sqlite3.connect(f"file:{cache}?mode=ro", uri=True) as db:
                    row = db.execute("SELECT batch_id FROM batches WHERE batch_id IS NOT NULL").fetchone()
            except sqlite3.OperationalError:
                row = None
            if row:
                return str(row[0])
        time.sleep(0.1)
    raise AssertionError("no batch id recorded in time")


def _kill_9_while_waiting(pipeline: Path, out: Path) -> str:
    """Start `synthkd run`, kill -9 it once its batch id is recorded; the batch id."""
    proc = subprocess.Popen([sys.executable, "-m", "synthkd.cli", "run", str(pipeline), "--out", str(out)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        return _wait_for_batch_id(out / "cache.sqlite", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.parametrize("id_lost", [False, True], ids=["batch-id-recorded", "killed-before-the-id-was-written"])
def test_kill_9_while_waiting_then_rerun_polls_the_same_batch(tmp_path: Path, id_lost: bool) -> None:
    online, _ = _online_rows(tmp_path)
    with running_server(batch_seconds=8) as server:
        pipeline = _pipeline(tmp_path / "batch", server.base_url, FAST)
        out = tmp_path / "batch" / "run"
        batch_id = _kill_9_while_waiting(pipeline, out)
        assert [b["status"] for b in server.batches()] in (["validating"], ["in_progress"])
        if id_lost:  # as if killed between creating the batch and writing its id
            with sqlite3.connect(out / "cache.sqlite") as db:
                db.execute("UPDATE batches SET batch_id=NULL, status='uploaded'")
        status = run_cli("status", str(out))
        assert "1 not collected yet" in status.stdout, status.stdout

        stage, stderr = _run(pipeline, out)
        batches = server.batches()
        assert [b["id"] for b in batches] == [batch_id]  # polled again, never submitted twice
        assert server.stats().get("chat_requests", 0) == 0
        assert len(_ids(batches)) == RECORDS * K
        assert read_rows(out, "answers") == online and not read_rows(out, "answers", failed=True)
        assert stage["calls"] == RECORDS * K and stage["by_endpoint"]["teacher"]["batch_answered"] == RECORDS * K
        assert "1 submitted, 0 not collected yet" in run_cli("status", str(out)).stdout


# ---- failed and expired batches, failed items ----------------------------------------------------------
@pytest.mark.parametrize("fault", ["fail", "expire"])
def test_what_a_failed_or_expired_batch_left_goes_online(tmp_path: Path, fault: str) -> None:
    online, online_stage = _online_rows(tmp_path)
    with running_server(batch_seconds=0.5, batch_faults=[fault]) as server:
        out = tmp_path / "batch" / "run"
        stage, stderr = _run(_pipeline(tmp_path / "batch", server.base_url, FAST), out)
        online_requests = server.stats().get("chat_requests", 0)
        answered = stage["by_endpoint"]["teacher"].get("batch_answered", 0)
        assert len(server.batches()) == 1  # failed_items: online sends the rest online, no new batch
        expected_from_batch = 0 if fault == "fail" else RECORDS * K // 2
        assert answered == expected_from_batch and online_requests == RECORDS * K - expected_from_batch
        assert read_rows(out, "answers") == online and not read_rows(out, "answers", failed=True)
        assert stage["calls"] == RECORDS * K
        share = expected_from_batch / (RECORDS * K)
        assert stage["cost_usd"] == pytest.approx(online_stage["cost_usd"] * (1 - share / 2), rel=0.15)
        assert ("failed" if fault == "fail" else "expired") in stderr


def test_failed_items_go_into_a_new_batch_and_give_up_after_max_submissions(tmp_path: Path) -> None:
    online, _ = _online_rows(tmp_path)
    with running_server(batch_seconds=0.4, batch_item_error_rate=0.3) as server:
        out = tmp_path / "resubmit" / "run"
        _run(_pipeline(tmp_path / "resubmit", server.base_url, {**FAST, "failed_items": "batch"}), out)
        batches = server.batches()
        assert server.stats().get("chat_requests", 0) == 0
        first, second = (set(b["custom_ids"]) for b in batches)  # the item errors only hit a request's first submission
        assert 0 < len(second) < len(first) and second <= first
        assert read_rows(out, "answers") == online and not read_rows(out, "answers", failed=True)

    # Every batch fails: after max_submissions the rows are kept as failed (nothing online); redoing the stage tries again.
    with running_server(batch_seconds=0.3, batch_faults=["fail", "fail"]) as server:
        pipeline = _pipeline(tmp_path / "giveup", server.base_url, {**FAST, "failed_items": "batch", "max_submissions": 2})
        out = tmp_path / "giveup" / "run"
        # Every row failed the same way: the run stops with one line, the stage not marked done.
        stage, err = _run(pipeline, out, ok=False)
        assert len(server.batches()) == 2 and server.stats().get("chat_requests", 0) == 0
        assert f"all {RECORDS * K} failed with reason batch:failed" in err and "2 batches" in err
        assert stage["status"] == "failed" and stage["failures"] == {"batch:failed": RECORDS * K}
        stage, _ = _run(pipeline, out)  # run again: its requests are tried again, in a third batch
        assert len(server.batches()) == 3 and server.stats().get("chat_requests", 0) == 0
        assert read_rows(out, "answers") == online and not read_rows(out, "answers", failed=True)


# ---- n samples in one batch line -------------------------------------------------------------------------
def test_n_per_request_inside_a_batch(tmp_path: Path) -> None:
    online, online_stage = _online_rows(tmp_path, samples=4)
    with running_server(batch_seconds=0.4, log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        out = tmp_path / "batch" / "run"
        stage, _ = _run(_pipeline(tmp_path / "batch", server.base_url, FAST, samples=4, n_per_request=True), out)
        items = [e for e in server.log_entries() if e.get("batch")]
        assert [e["n"] for e in items] == [4] * RECORDS and server.stats().get("chat_requests", 0) == 0
        rows = read_rows(out, "answers")
        assert sorted((r["id"], r["sample"]) for r in rows) == sorted((r["id"], r["sample"]) for r in online)
        # The prompt billed once per record, at the batch price.
        assert stage["prompt_tokens"] * 4 == online_stage["prompt_tokens"]
        assert stage["calls"] == RECORDS and stage["by_endpoint"]["teacher"]["batch_requests"] == RECORDS


# ---- the budget, reserved at the batch price ------------------------------------------------------------
def test_budget_reserves_the_batch_price_and_submits_what_fits(tmp_path: Path) -> None:
    async def main(base_url: str) -> tuple[int, int, float]:
        cfg = EndpointConfig(base_url=base_url, model="teacher", prices=PRICES)  # type: ignore[arg-type]
        cache = RequestCache(tmp_path / "cache.sqlite")
        calls = [Call([{"role": "user", "content": f"question number {i:02d}"}], Sampling(max_tokens=50, seed=1)) for i in range(10)]
        probe = EndpointClient("teacher", cfg, base_url=base_url, api_key=None, cache=cache, budget=Budget(None, 0.0))
        worst = probe.worst_case_cost(probe.request_for(calls[0], 0)[1]) * cfg.prices.batch_price_factor
        await probe.aclose()
        # Room for 4.5 requests at the batch price (2.25 at the online price).
        client = EndpointClient("teacher", cfg, base_url=base_url, api_key=None, cache=cache, budget=Budget(worst * 4.5, 0.0))
        meter = Meter()
        with pytest.raises(BudgetExceeded):
            await run_calls(client, calls, meter, batch=BatchConfig(poll_interval_s=0.1))
        await client.aclose()
        return cache.count(), meter.by_endpoint["teacher"]["batch_requests"], client.budget.reserved

    with running_server(batch_seconds=0.3) as server:
        stored, submitted, reserved = asyncio.run(main(server.base_url))
        assert (stored, submitted) == (4, 4) and len(server.batches()) == 1
        assert reserved == pytest.approx(0.0, abs=1e-12)  # the batch's hold was settled when it was collected
        assert server.stats().get("chat_requests", 0) == 0


def test_a_served_endpoint_with_a_batch_block_answers_online(tmp_path: Path) -> None:
    """Swapping the teacher to a server synthkd starts (here the test server through `serve.command`) is one
    line: the batch block stays and the requests go online."""
    log = tmp_path / "served.jsonl"
    command = [sys.executable, "-m", "tests.fakeserver", "--host", "{host}", "--port", "{port}", "--log-sync", "--log", str(log)]
    path = edit_pipeline(_pipeline(tmp_path, "http://unused", FAST),
                         endpoint={"base_url": None, "serve": {"model_path": "echo-model", "command": command}})
    stage, _ = _run(path, tmp_path / "run")
    assert stage["calls"] == RECORDS * K and "batches" not in stage["by_endpoint"]["teacher"]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == RECORDS * K and not any(e.get("batch") for e in entries)


def test_a_batch_the_endpoint_does_not_know_is_sent_again(tmp_path: Path) -> None:
    """Killed while waiting, then rerun against another server (the endpoint moved, and says so with
    `cache_identity`): the unknown batch's requests count as a failed batch and go online there, once each."""
    online, _ = _online_rows(tmp_path)
    out = tmp_path / "batch" / "run"
    with running_server(batch_seconds=30) as first:
        _kill_9_while_waiting(_pipeline(tmp_path / "batch", first.base_url, FAST), out)
    with running_server(batch_seconds=0.3) as second:
        moved = _pipeline(tmp_path / "batch", second.base_url, FAST, cache_identity=f"teacher@{first.base_url}")
        stage, stderr = _run(moved, out)
        assert "is unknown to the endpoint" in " ".join(stderr.split()), stderr
        assert second.stats().get("chat_requests", 0) == RECORDS * K and not second.batches()
        assert read_rows(out, "answers") == online and not read_rows(out, "answers", failed=True)


def test_a_create_call_lost_on_the_network_is_found_not_repeated(tmp_path: Path) -> None:
    """The provider made the batch but its answer never arrived: the retry finds it by its file."""
    online, _ = _online_rows(tmp_path)
    with running_server(batch_seconds=0.4, batch_faults=["lost_create"]) as server:
        out = tmp_path / "batch" / "run"
        stage, _ = _run(_pipeline(tmp_path / "batch", server.base_url, FAST), out)
        assert len(server.batches()) == 1 and server.stats().get("chat_requests", 0) == 0
        assert read_rows(out, "answers") == online and stage["by_endpoint"]["teacher"]["batches"] == 1


def test_a_batch_the_provider_refuses_to_create_goes_online(tmp_path: Path) -> None:
    online, _ = _online_rows(tmp_path)
    with running_server(batch_seconds=0.4, batch_faults=["reject"]) as server:
        out = tmp_path / "batch" / "run"
        stage, stderr = _run(_pipeline(tmp_path / "batch", server.base_url, FAST), out)
        assert not server.batches() and server.stats().get("chat_requests", 0) == RECORDS * K
        assert "refused to create a batch" in " ".join(stderr.split())
        assert read_rows(out, "answers") == online and not read_rows(out, "answers", failed=True)
        assert "1 submitted, 0 not collected yet" in run_cli("status", str(out)).stdout


def test_a_large_submission_is_split_by_the_providers_limits(tmp_path: Path) -> None:
    online, _ = _online_rows(tmp_path)
    with running_server(batch_seconds=0.3) as server:
        out = tmp_path / "batch" / "run"
        stage, _ = _run(_pipeline(tmp_path / "batch", server.base_url, {**FAST, "max_requests_per_batch": 10}), out)
        batches = server.batches()
        assert [len(b["custom_ids"]) for b in batches] == [10, 10, 4] and len(set(_ids(batches))) == RECORDS * K
        assert read_rows(out, "answers") == online and stage["by_endpoint"]["teacher"]["batches"] == 3
