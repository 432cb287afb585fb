"""budget_usd: the run stops before crossing it, keeps what it paid for, and says how to continue."""

import asyncio
from pathlib import Path

import pytest

from synthkd.client.accounting import Budget
from synthkd.errors import BudgetExceeded
from tests.conftest import edit_pipeline, generate_pipeline, read_rows, run_cli, run_json
from tests.fakeserver import running_server

PRICES = {"input_per_million": 1000.0, "output_per_million": 1000.0}  # $0.001 a token


def test_budget_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    with running_server(latency_ms=20) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=30, prices=PRICES, concurrency=4)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out), "--set", "budget_usd=0.5")
        assert proc.returncode == 3, proc.stderr
        assert "budget_usd=0.5 reached" in proc.stderr and "--set budget_usd=" in proc.stderr
        assert "Traceback" not in proc.stderr
        state = run_json(out)
        assert state["status"] == "budget_exhausted"
        assert 0 < state["spent_usd_total"] <= 0.5
        first = server.stats()["chat_requests"]
        assert 0 < first < 30

        proc = run_cli("run", str(pipeline), "--out", str(out), "--set", "budget_usd=100")
        assert proc.returncode == 0, proc.stderr
        assert server.stats()["chat_requests"] == 30  # nothing paid for was asked again
    assert len(read_rows(out, "answers")) == 30
    state = run_json(out)
    assert state["stages"]["answers"]["cache_hits"] == first
    assert state["spent_usd_total"] > 0.5


# max_tokens far above what the test server answers (24-40 words): each call's worst case is ~20x its real cost.
WIDE_CAP = {"sampling": {"max_tokens": 1000, "seed": 7}}


def test_queued_worst_cases_do_not_stop_a_stage_the_budget_covers(tmp_path: Path) -> None:
    """60 cheap calls, 16 at once: $6 covers their real cost (~$3.6) but not 16 worst cases (~$18), let alone 60.
    Before, every queued request held its worst case and the run stopped with budget_exhausted."""
    with running_server(latency_ms=20) as server:
        pipeline = edit_pipeline(generate_pipeline(tmp_path, server.base_url, n=60, prices=PRICES, concurrency=16), stage=WIDE_CAP)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out), "--set", "budget_usd=6")
        assert proc.returncode == 0, proc.stderr
        assert server.stats()["chat_requests"] == 60
    state = run_json(out)
    assert state["status"] == "done"
    assert 0 < state["spent_usd_total"] <= 6
    assert len(read_rows(out, "answers")) == 60


def test_a_budget_too_small_for_all_calls_still_stops_cleanly(tmp_path: Path) -> None:
    with running_server(latency_ms=20) as server:
        pipeline = edit_pipeline(generate_pipeline(tmp_path, server.base_url, n=60, prices=PRICES, concurrency=16), stage=WIDE_CAP)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out), "--set", "budget_usd=2")
        assert proc.returncode == 3, proc.stderr
        assert "budget_usd=2 reached" in proc.stderr and "Traceback" not in proc.stderr
        assert 0 < server.stats()["chat_requests"] < 60
    state = run_json(out)
    assert state["status"] == "budget_exhausted"
    assert 0 < state["spent_usd_total"] <= 2


def test_a_request_cancelled_while_waiting_for_the_budget_reserves_nothing() -> None:
    """A request waiting in Budget.acquire that is cancelled (its stage stopped) leaves the books as they were,
    and one that gives up once nothing is in flight does too."""

    async def scenario() -> None:
        budget = Budget(1.0, 0.0)
        await budget.acquire(0.6)
        waiting = asyncio.create_task(budget.acquire(0.6))
        await asyncio.sleep(0.01)
        assert not waiting.done()  # 0.6 in flight: the second waits instead of failing
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert budget.reserved == pytest.approx(0.6)
        late = asyncio.create_task(budget.acquire(0.6))
        await asyncio.sleep(0.01)
        budget.settle(0.6, 0.5, acquired=True)  # the one in flight cost 0.5: 0.6 more cannot fit, nothing is in flight
        with pytest.raises(BudgetExceeded):
            await late
        assert budget.reserved == pytest.approx(0.0) and budget.spent == pytest.approx(0.5)

    asyncio.run(scenario())


def test_a_waiting_request_goes_once_one_in_flight_settles_cheaply() -> None:
    async def scenario() -> None:
        budget = Budget(1.0, 0.0)
        await budget.acquire(0.6)
        waiting = asyncio.create_task(budget.acquire(0.6))
        await asyncio.sleep(0.01)
        budget.settle(0.6, 0.1, acquired=True)
        await waiting
        assert budget.reserved == pytest.approx(0.6) and budget.spent == pytest.approx(0.1)

    asyncio.run(scenario())
