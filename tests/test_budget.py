"""budget_usd: the run stops before crossing it, keeps what it paid for, and says how to continue."""

from pathlib import Path

from tests.conftest import generate_pipeline, read_rows, run_cli, run_json
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
