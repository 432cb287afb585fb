"""Several servers behind one endpoint name: calls spread over them, and a replica killed mid-stage
loses and duplicates nothing (the same datasets as a one-server run, each record once)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import yaml

from tests.conftest import check_run_outputs, generate_pipeline, read_rows, run_cli, run_json
from tests.fakeserver import running_server

N = 300


def _with_urls(path: Path, urls: list[str]) -> Path:
    data = yaml.safe_load(path.read_text())
    data["endpoints"]["teacher"]["base_url"] = urls
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_calls_spread_over_replicas_and_a_killed_replica_loses_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_server(latency_ms=20) as one:
        single = tmp_path / "single"
        assert run_cli("run", str(generate_pipeline(tmp_path / "a", one.base_url, n=N)), "--out", str(single)).returncode == 0
    with running_server(latency_ms=40) as a, running_server(latency_ms=40) as b:
        path = _with_urls(generate_pipeline(tmp_path / "b", a.base_url, n=N, timeout_s=2, max_retries=6), [a.base_url, b.base_url])
        out = tmp_path / "replicated"

        def kill_b() -> None:  # once the second replica has answered some calls, it dies (kill -9)
            deadline = time.monotonic() + 120
            while b.stats().get("chat_requests", 0) < 40 and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(b.process.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_b)
        killer.start()
        proc = run_cli("run", str(path), "--out", str(out))
        killer.join()
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(out, "answers")
    assert len(rows) == N and len({r["id"] for r in rows}) == N and not read_rows(out, "answers", failed=True)
    assert rows == read_rows(single, "answers")  # the same dataset as with one server
    ep = run_json(out)["stages"]["answers"]["by_endpoint"]["teacher"]
    per_replica = {k.split(" ", 1)[1]: v for k, v in ep.items() if k.startswith("replica_calls ")}
    assert set(per_replica) == {a.base_url, b.base_url}
    assert per_replica[b.base_url] > 0, "the second replica took calls before it died"
    assert per_replica[a.base_url] > N / 2  # it took the rest
    assert sum(per_replica.values()) == ep["calls"] == N  # each record answered once, none twice
    check_run_outputs(out)


def test_a_replica_list_with_one_server_down_at_the_start_still_runs(tmp_path: Path) -> None:
    with running_server() as a:
        dead = "http://127.0.0.1:9/v1"  # nothing listens here
        path = _with_urls(generate_pipeline(tmp_path, a.base_url, n=20, timeout_s=2), [dead, a.base_url])
        out = tmp_path / "run"
        proc = run_cli("run", str(path), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(read_rows(out, "answers")) == 20
    ep = run_json(out)["stages"]["answers"]["by_endpoint"]["teacher"]
    assert ep.get(f"replica_calls {a.base_url}") == 20 and not ep.get(f"replica_calls {dead}")


def test_a_replica_list_validates() -> None:
    from synthkd.config.endpoints import EndpointConfig

    cfg = EndpointConfig.model_validate({"base_url": ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"], "model": "m"})
    assert cfg.base_urls == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"] and not cfg.served
    for bad in ([], ["http://127.0.0.1:1/v1", "http://127.0.0.1:1/v1"]):
        try:
            EndpointConfig.model_validate({"base_url": bad, "model": "m"})
        except ValueError as exc:
            assert "each once" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
    json.dumps(cfg.model_dump())  # fingerprints hash the config: it stays JSON-able


def test_served_replicas_here_one_killed_is_restarted(tmp_path: Path) -> None:
    """`serve.replicas: 2` without a Ray cluster: two servers on this machine (here the test server, through
    `serve.command`); one killed mid-stage is taken out, restarted and back in rotation; nothing repeated."""
    from tests.test_ray_replicas import _pipeline, _replica_calls, _servers, run_and_kill_one_replica

    marker = f"localrep{os.getpid()}"
    path, out = _pipeline(tmp_path, marker, n=300, latency_ms=200), tmp_path / "run"
    stderr = run_and_kill_one_replica(path, out, marker, tmp_path, {})
    assert "(2 replicas)" in stderr and "on the Ray cluster" not in stderr and "restarting it" in stderr
    rows = read_rows(out, "answers")
    assert len(rows) == 300 and len({r["id"] for r in rows}) == 300 and not read_rows(out, "answers", failed=True)
    calls = _replica_calls(out)
    assert sum(calls.values()) == 300 and len(calls) == 3  # two first servers, then the restarted one at a new port
    assert not _servers(marker), "servers left running after the run"
