"""Modern teacher APIs against the test server over HTTP: max_completion_tokens, reasoning traces (kept in
datasets, the cache and the rationale stage), cached-prompt prices, adaptive concurrency under a hidden limit."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthkd.client.accounting import Budget, Meter
from synthkd.client.adaptive import AdaptiveLimiter
from synthkd.client.cache import CachedReply, RequestCache, request_key
from synthkd.client.endpoint import Call, EndpointClient
from synthkd.config.endpoints import EndpointConfig, Prices, Sampling
from tests.conftest import edit_pipeline, REPO, check_run_outputs, generate_pipeline, read_rows, remote_endpoint, run_cli, run_json
from tests.fakeserver import running_server

# The cache table as synthkd wrote it before reasoning traces and cached prompt tokens were kept.
OLD_SCHEMA = """CREATE TABLE replies (key TEXT PRIMARY KEY, endpoint TEXT NOT NULL, model TEXT NOT NULL, text TEXT NOT NULL,
  finish_reason TEXT, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost REAL NOT NULL, logprobs TEXT,
  created REAL NOT NULL)"""


def _run(pipeline: Path, out: Path, *extra: str) -> dict[str, Any]:
    proc = run_cli("run", str(pipeline), "--out", str(out), *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_json(out)


def _words(text: str | None) -> int:
    return len((text or "").split())


# ---- 1. max_completion_tokens --------------------------------------------------------------------
def test_max_completion_tokens_is_sent_when_the_endpoint_asks_for_it(tmp_path: Path) -> None:
    # The server is a hosted reasoning model: it refuses `max_tokens`.
    with running_server(reject_max_tokens=True, log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=6)
        edit_pipeline(pipeline, stage={"sampling": {"max_tokens": 10, "seed": 7}})
        # Every row refused the same way: the run stops with one line (it does not end `done` with 0 rows).
        proc = run_cli("run", str(pipeline), "--out", str(tmp_path / "refused"))
        assert proc.returncode == 1 and "all 6 failed with reason bad_request" in proc.stderr, proc.stderr
        refused = run_json(tmp_path / "refused")
        assert refused["status"] == "failed" and refused["stages"]["answers"]["failures"] == {"bad_request": 6}
        assert {e["cap"] for e in server.log_entries()} == {"max_tokens"}

        edit_pipeline(pipeline, endpoint={"max_tokens_param": "max_completion_tokens"})
        out = tmp_path / "run"
        _run(pipeline, out)
        entries = server.log_entries()[6:]
    assert len(entries) == 6 and {e["cap"] for e in entries} == {"max_completion_tokens"}
    rows = read_rows(out, "answers")
    # The cap arrived under its new name: every reply was cut at 10 words.
    assert len(rows) == 6 and all(r["truncated"] and _words(r["response"]) == 10 for r in rows)
    assert all(r["reasoning"] is None for r in rows)  # this model returns no trace: the column is there, empty
    check_run_outputs(out)


def test_the_cache_key_does_not_depend_on_the_cap_field_name(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    # The request identity as synthkd has always hashed it: existing caches stay valid.
    expected = request_key({"model": "teacher", "messages": messages, "params": {"max_tokens": 32, "temperature": 0.5}, "sample": 0})

    async def keys() -> list[tuple[str, dict[str, Any]]]:
        out = []
        for field in ("max_tokens", "max_completion_tokens"):
            cfg = EndpointConfig(base_url="http://127.0.0.1:9/v1", model="teacher", max_tokens_param=field)
            client = EndpointClient("teacher", cfg, base_url=cfg.base_urls, api_key=None, cache=RequestCache(tmp_path / f"{field}.sqlite"),
                                    budget=Budget(None, 0.0), model_identity="teacher")
            out.append(client.request_for(Call(messages, Sampling(max_tokens=32, temperature=0.5)), 0))
            await client.aclose()
        return out

    (k1, body1), (k2, body2) = asyncio.run(keys())
    assert k1 == k2 == expected
    assert body1["max_tokens"] == 32 and "max_completion_tokens" not in body1
    assert body2["max_completion_tokens"] == 32 and "max_tokens" not in body2


# ---- 2. reasoning traces -------------------------------------------------------------------------
def test_reasoning_traces_reach_the_dataset_the_cache_and_the_meter(tmp_path: Path) -> None:
    with running_server(reasoning=True) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=12)
        out = tmp_path / "run"
        state = _run(pipeline, out)
        rows = read_rows(out, "answers")
        assert len(rows) == 12 and all(r["reasoning"].startswith("Let me think.") for r in rows)
        assert all(r["reasoning"] not in r["response"] for r in rows)  # the trace is apart from the answer
        assert all(m["content"] == r["response"] for r in rows for m in r["messages"][-1:])  # SFT target: the answer only
        ep = state["stages"]["answers"]["by_endpoint"]["teacher"]
        assert ep["reasoning_tokens"] == sum(_words(r["reasoning"]) for r in rows)
        assert ep["completion_tokens"] == sum(_words(r["reasoning"]) + _words(r["response"]) for r in rows)
        with sqlite3.connect(out / "cache.sqlite") as con:
            stored = dict(con.execute("SELECT text, reasoning FROM replies").fetchall())
        assert stored == {r["response"]: r["reasoning"] for r in rows}

        # Another run reading the same cache asks nothing and writes the same traces.
        again = tmp_path / "again"
        again.mkdir()
        shutil.copy(out / "cache.sqlite", again / "cache.sqlite")
        server.reset()
        state = _run(pipeline, again)
        assert server.stats().get("chat_requests", 0) == 0
    assert state["stages"]["answers"]["calls"] == 0 and state["stages"]["answers"]["cache_hits"] == 12
    assert read_rows(again, "answers") == rows
    check_run_outputs(again)


def test_an_old_cache_file_is_migrated_and_still_answers(tmp_path: Path) -> None:
    with running_server() as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=8)
        first = tmp_path / "first"
        _run(pipeline, first)
        # The same replies in a cache file of the old layout, as an earlier synthkd left it.
        old = tmp_path / "old"
        old.mkdir()
        with sqlite3.connect(first / "cache.sqlite") as src, sqlite3.connect(old / "cache.sqlite") as dst:
            dst.execute(OLD_SCHEMA)
            dst.executemany("INSERT INTO replies VALUES (?,?,?,?,?,?,?,?,?,?)", src.execute(
                "SELECT key, endpoint, model, text, finish_reason, prompt_tokens, completion_tokens, cost, logprobs, created FROM replies"))
        server.reset()
        state = _run(pipeline, old)
        assert server.stats().get("chat_requests", 0) == 0
    assert state["stages"]["answers"]["cache_hits"] == 8
    assert read_rows(old, "answers") == read_rows(first, "answers")
    cache = RequestCache(old / "cache.sqlite")
    try:
        assert cache.count() == 8
        cache.put("k", "teacher", "teacher", CachedReply("answer", "stop", 3, 5, 0.0, None, "a trace", 2, 1))
        assert cache.get("k") == CachedReply("answer", "stop", 3, 5, 0.0, None, "a trace", 2, 1)
    finally:
        cache.close()


def _rationale_pipeline(tmp: Path, base_url: str, train: bool) -> Path:
    lines = (REPO / "data" / "rationale" / "arithmetic_train.jsonl").read_text().splitlines()[:6]
    (tmp / "train.jsonl").write_text("\n".join(lines) + "\n")
    stages: list[dict[str, Any]] = [
        {"name": "tasks", "type": "load", "path": str(tmp / "train.jsonl")},
        # The test server's answers are pseudo-words: keep every sample (no gold, no majority vote).
        {"name": "rationales", "type": "rationale", "input": "tasks", "gold_column": None, "self_consistency": False, "samples": 2,
         "rationale_source": "reasoning", "think_format": "rationale/think_target.jinja2",
         "sampling": {"temperature": 0.7, "max_tokens": 200, "seed": 3}},
    ]
    if train:
        stages.append({"name": "sft", "type": "sft", "input": "rationales", "model": "tiny:student",
                       "sft": {"num_train_epochs": 1, "max_length": 128, "bf16": False, "per_device_train_batch_size": 4}})
    spec = {"name": "think", "prompts_dir": str(REPO / "prompts"), "endpoints": {"teacher": remote_endpoint(base_url, "teacher")},
            "stages": stages}
    path = tmp / "think.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _check_think_rows(out: Path) -> None:
    rows = read_rows(out, "rationales")
    assert len(rows) == 12
    for row in rows:
        target = row["messages"][-1]["content"]
        assert row["rationale"].startswith("Let me think.")
        assert target == f"<think>\n{row['rationale']}\n</think>\n\n{row['answer']}"
        assert "{" not in row["answer"]  # a plain-text answer, not a JSON reply


def test_rationale_from_reasoning_traces(tmp_path: Path) -> None:
    with running_server(reasoning=True, log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        out = tmp_path / "run"
        state = _run(_rationale_pipeline(tmp_path, server.base_url, train=False), out)
    card = (out / "datasets" / "rationales" / "README.md").read_text()
    assert "rationale/teacher_reasoning.jinja2" in card and "rationale/think_target.jinja2" in card
    _check_think_rows(out)
    r = state["stages"]["rationales"]["rationale"]
    assert (r["inputs"], r["samples"], r["kept"], r["training_examples"]) == (6, 12, 12, 12)
    assert state["stages"]["rationales"]["by_endpoint"]["teacher"]["reasoning_tokens"] > 0
    check_run_outputs(out)


def test_rationale_from_reasoning_without_traces_fails_rows_with_a_reason(tmp_path: Path) -> None:
    with running_server() as server:  # not a reasoning model
        out = tmp_path / "run"
        proc = run_cli("run", str(_rationale_pipeline(tmp_path, server.base_url, train=False)), "--out", str(out))
    # No sample has a trace: the stage made nothing, so the run stops with one line naming the reason.
    assert proc.returncode == 1 and "stage 'rationales' produced no rows" in proc.stderr, proc.stderr
    assert "all 12 failed with reason no_reasoning" in proc.stderr
    assert run_json(out)["stages"]["rationales"]["status"] == "failed"


@pytest.mark.needs_torch
@pytest.mark.needs_trl
def test_a_student_trains_on_reasoning_traces(tmp_path: Path, synthkd_home: Path) -> None:
    with running_server(reasoning=True) as server:
        out = tmp_path / "run"
        proc = run_cli("run", str(_rationale_pipeline(tmp_path, server.base_url, train=True)), "--out", str(out),
                       env={"SYNTHKD_HOME": str(synthkd_home)})
        assert proc.returncode == 0, proc.stderr[-3000:]
    _check_think_rows(out)
    assert run_json(out)["stages"]["sft"]["steps"] > 0


# ---- 3. cached-prompt prices ---------------------------------------------------------------------
SYSTEM = ("You are a careful assistant who answers every question with short, correct and complete sentences, "
          "checks each number twice, names the units of every quantity, avoids jargon, and never invents facts "
          "that the question does not support.")
PRICES = {"input_per_million": 1000.0, "output_per_million": 2000.0, "cached_input_per_million": 250.0}


def test_cached_prompt_tokens_are_priced_at_the_cached_price(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "system.jinja2").write_text(SYSTEM + "\n")
    (prompts / "user.jinja2").write_text("{{ instruction }}\n")
    prefix = 32
    assert _words(SYSTEM) > prefix  # every prompt starts with the same 32 words
    with running_server(cached_prefix_tokens=prefix) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=20, prices=PRICES)
        data = yaml.safe_load(pipeline.read_text())
        data["prompts_dir"] = str(prompts)
        data["stages"][1].update(template="user.jinja2", system_template="system.jinja2")
        pipeline.write_text(yaml.safe_dump(data, sort_keys=False))
        out = tmp_path / "run"
        state = _run(pipeline, out)
    rows = read_rows(out, "answers")
    assert len(rows) == 20
    prompt = sum(_words(m["content"]) for r in rows for m in r["messages"][:-1])
    completion = sum(_words(r["response"]) for r in rows)
    cached = 19 * prefix  # the provider saw the prefix first with one request, then served it from its cache
    expected = ((prompt - cached) * 1000.0 + cached * 250.0 + completion * 2000.0) / 1e6
    stage = state["stages"]["answers"]
    ep = stage["by_endpoint"]["teacher"]
    assert ep["cached_prompt_tokens"] == cached and ep["prompt_tokens"] == prompt
    assert stage["cost_usd"] == pytest.approx(expected, abs=2e-6) and ep["cost"] == pytest.approx(expected, abs=2e-6)
    assert state["spent_usd_total"] == pytest.approx(expected, abs=2e-6)
    full = (prompt * 1000.0 + completion * 2000.0) / 1e6
    assert stage["cost_usd"] < full  # the discount is there


def test_the_budget_reserves_at_the_full_input_price(tmp_path: Path) -> None:
    async def worst() -> tuple[float, float]:
        out = []
        for prices in (Prices(input_per_million=1000, output_per_million=2000),
                       Prices(input_per_million=1000, output_per_million=2000, cached_input_per_million=0)):
            cfg = EndpointConfig(base_url="http://127.0.0.1:9/v1", model="teacher", prices=prices)
            client = EndpointClient("teacher", cfg, base_url=cfg.base_urls, api_key=None, cache=RequestCache(tmp_path / "c.sqlite"),
                                    budget=Budget(None, 0.0))
            _, kwargs = client.request_for(Call([{"role": "user", "content": "x" * 100}], Sampling(max_tokens=50)), 0)
            out.append(client.worst_case_cost(kwargs))
            await client.aclose()
        return out[0], out[1]

    plain, discounted = asyncio.run(worst())
    assert plain == discounted == pytest.approx((116 * 1000 + 50 * 2000) / 1e6)
    assert Prices(input_per_million=1000, cached_input_per_million=100).cost(100, 0, 40) == pytest.approx((60 * 1000 + 40 * 100) / 1e6)
    assert Prices(input_per_million=1000).cost(100, 0, 40) == pytest.approx(100 * 1000 / 1e6)  # no cached price: full price


def test_the_progress_line_shows_cached_prompt_tokens() -> None:
    from synthkd.progress import StepProgress

    meter = Meter()
    line = StepProgress(None, None, "x", 1, meter)._stats()
    assert "cached" not in line
    meter.add_reply("teacher", 100, 10, 0.1, False, cached_prompt_tokens=64)
    assert "(64 cached)" in StepProgress(None, None, "x", 1, meter)._stats()


# ---- 4. adaptive concurrency ---------------------------------------------------------------------
def test_adaptive_concurrency_finds_a_hidden_limit(tmp_path: Path) -> None:
    hidden = 8
    with running_server(latency_ms=60, max_inflight=hidden, inflight_retry_after=0.1) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=200, concurrency=64)
        out = tmp_path / "run"
        state = _run(pipeline, out)
        stats = server.stats()
    assert len(read_rows(out, "answers")) == 200 and not read_rows(out, "answers", failed=True)
    stage = state["stages"]["answers"]
    ep = stage["by_endpoint"]["teacher"]
    assert stage["calls"] == 200 and stage["failures"] == {}
    assert ep["rate_limited"] == stats["rejected_inflight"] > 0
    # Halved from 64 down to the hidden limit, then a sawtooth below and just above it.
    assert ep["adaptive_limit_min"] <= hidden
    # Additive increase probes past the limit between 429s: on a loaded machine the run can end a step or two
    # above it (seen: 10 for 8), never far.
    assert hidden // 2 <= ep["adaptive_limit_final"] <= hidden + hidden // 4 + 1
    # After the first burst, few requests are refused: far fewer than one per row.
    assert ep["rate_limited"] < 150


def test_without_adaptive_concurrency_the_hidden_limit_refuses_far_more(tmp_path: Path) -> None:
    with running_server(latency_ms=60, max_inflight=8, inflight_retry_after=0.1) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=200, concurrency=64, adaptive=False)
        state = _run(pipeline, tmp_path / "run")
        stats = server.stats()
    ep = state["stages"]["answers"]["by_endpoint"]["teacher"]
    assert "adaptive_limit_final" not in ep and "adaptive_limit_min" not in ep
    # 64 in flight against 8 accepted: most attempts are refused (about 470 here, against about 65 adaptive).
    assert ep["rate_limited"] == stats["rejected_inflight"] > 200


def test_limiter_halves_once_per_round_trip_and_grows_additively() -> None:
    async def go() -> None:
        lim = AdaptiveLimiter(16)
        tickets = [await lim.acquire() for _ in range(16)]
        assert lim.in_flight == 16
        # Every attempt of the first burst is refused: one cut, not sixteen.
        assert [lim.on_rate_limit(t) for t in tickets].count(True) == 1 and lim.limit == 8
        for _ in tickets:
            lim.release()
        t = await lim.acquire()  # sent after the cut: its 429 cuts again
        assert lim.on_rate_limit(t) and lim.limit == 4 and lim.lowest == 4 and lim.rate_limited == 17
        lim.release()
        for expected in (5, 6):  # +1 after `limit` successes
            for _ in range(expected - 1):
                lim.on_success()
            assert lim.limit == expected
        # A provider's "0 requests remaining" cuts like a 429 would, without counting one.
        assert lim.on_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-limit-requests": "500"}, lim.cuts)
        assert lim.limit == 3 and lim.rate_limited == 17
        assert not lim.on_headers({"x-ratelimit-remaining-requests": "12"}, lim.cuts) and not lim.on_headers({}, lim.cuts)
        for _ in range(100):
            lim.on_success()
        assert lim.limit <= 16
        for _ in range(1000):
            lim.on_success()
        assert lim.limit == 16  # never above the endpoint's concurrency
        floor = AdaptiveLimiter(1)
        assert floor.on_rate_limit(await floor.acquire()) and floor.limit == 1

    asyncio.run(go())


def test_limiter_queues_attempts_over_the_limit_and_wakes_them() -> None:
    async def go() -> None:
        lim = AdaptiveLimiter(4)
        lim.on_rate_limit(lim.cuts)  # limit 2
        order: list[int] = []

        async def attempt(i: int) -> None:
            await lim.acquire()
            order.append(i)
            await asyncio.sleep(0.01)
            lim.release()

        tasks = [asyncio.create_task(attempt(i)) for i in range(6)]
        await asyncio.sleep(0)
        assert lim.in_flight == 2 and len(lim._waiters) == 4
        cancelled = tasks[5]
        cancelled.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert order == [0, 1, 2, 3, 4] and lim.in_flight == 0 and not lim._waiters

    asyncio.run(go())


def test_meter_merge_keeps_limits_as_levels() -> None:
    a, b = Meter(), Meter()
    a.add_adaptive("t", 16, 8, True)
    b.add_adaptive("t", 12, 4, False)
    b.add_reply("t", 10, 5, 0.0, False, reasoning_tokens=3, cached_prompt_tokens=6)
    a.merge(b)
    ep = a.by_endpoint["t"]
    assert (ep["adaptive_limit_final"], ep["adaptive_limit_min"], ep["rate_limited"]) == (12, 4, 1)
    assert (ep["reasoning_tokens"], ep["cached_prompt_tokens"], a.reasoning_tokens, a.cached_prompt_tokens) == (3, 6, 3, 6)
    json.dumps(a.to_json())


# ---- 5. limits the provider announces (x-ratelimit-* headers) ------------------------------------------
def _quota_run(tmp_path: Path, adaptive: bool) -> tuple[dict[str, Any], dict[str, Any], Path]:
    with running_server(latency_ms=20, rpm=600) as server:  # 10 requests a second
        out = tmp_path / ("adaptive" if adaptive else "fixed")
        out.mkdir()
        state = _run(generate_pipeline(out, server.base_url, n=80, concurrency=32, adaptive=adaptive), out / "run")
        return state["stages"]["answers"], server.stats(), out / "run"


def test_a_quota_announced_in_headers_paces_the_requests(tmp_path: Path) -> None:
    stage, stats, out = _quota_run(tmp_path, adaptive=True)
    ep = stage["by_endpoint"]["teacher"]
    assert len(read_rows(out, "answers")) == 80 and stage["failures"] == {}
    assert ep["rpm_learned"] == 600 and "tpm_learned" not in ep
    assert ep["rate_limited"] == stats["rejected_quota"]
    # Only the first burst (sent before any reply announced the quota) is refused; then requests are paced.
    assert ep["rate_limited"] <= 32
    fixed, fixed_stats, _ = _quota_run(tmp_path, adaptive=False)
    assert "rpm_learned" not in fixed["by_endpoint"]["teacher"]
    assert fixed_stats["rejected_quota"] > 2 * ep["rate_limited"]


def test_learned_limits_stay_under_the_hard_caps_and_follow_what_is_left() -> None:
    from synthkd.client.ratelimit import RateLimiter

    capped = RateLimiter(rpm=300, tpm=None)
    capped.learn({"x-ratelimit-limit-requests": "600", "x-ratelimit-limit-tokens": "60000"})
    assert capped.learned_rpm is None and capped.requests is not None and capped.requests.per_minute == 300
    assert capped.learned_tpm == 60000 and capped.tokens is not None and capped.tokens.capacity == 1000
    capped.learn({"x-ratelimit-remaining-tokens": "30000"})
    assert capped.tokens.level == pytest.approx(500, rel=0.01)  # half the minute's quota left: half a second's worth
    capped.learn({"x-ratelimit-remaining-tokens": "60000"})
    assert capped.tokens.level <= 501  # never raised by the header
    free = RateLimiter(rpm=None, tpm=None)
    free.learn({"x-ratelimit-limit-requests": "120", "x-ratelimit-remaining-requests": "0"})
    assert free.learned_rpm == 120 and free.requests is not None and free.requests.level == 0
    free.learn({"x-ratelimit-limit-requests": "garbage"})
    assert free.learned_rpm == 120
