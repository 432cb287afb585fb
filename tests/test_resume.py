"""kill -9 in the middle of a stage, then rerun: the same datasets as an uninterrupted run, and
no reply that was already cached is requested again. A finished run reruns with zero calls."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, generate_pipeline, lion_pipeline, read_rows, run_cli, run_json
from tests.fakeserver import running_server


def _cached(run_dir: Path) -> int:
    db = run_dir / "cache.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as con:
            return int(con.execute("SELECT COUNT(*) FROM replies").fetchone()[0])
    except sqlite3.Error:
        return 0


def _kill_when_cached(pipeline: Path, out: Path, at_least: int) -> int:
    """Start a run, SIGKILL it once `at_least` replies are cached; return the cached count after."""
    proc = subprocess.Popen([sys.executable, "-m", "synthkd.cli", "run", str(pipeline), "--out", str(out)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _cached(out) < at_least:
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return _cached(out)


def test_kill9_mid_stage_then_resume(tmp_path: Path) -> None:
    with running_server(latency_ms=150, log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=60, concurrency=4)
        clean = tmp_path / "clean"
        assert run_cli("run", str(pipeline), "--out", str(clean)).returncode == 0
        server.reset()

        killed = tmp_path / "killed"
        cached = _kill_when_cached(pipeline, killed, 20)
        assert 20 <= cached < 60
        assert not (killed / "datasets" / "answers" / "_done.json").exists()
        server.reset()
        proc = run_cli("run", str(pipeline), "--out", str(killed))
        assert proc.returncode == 0, proc.stderr
        # Only what was missing was asked for.
        assert server.stats().get("chat_requests", 0) == 60 - cached
        assert run_json(killed)["stages"]["answers"]["cache_hits"] == cached

        server.reset()
        proc = run_cli("run", str(pipeline), "--out", str(killed))
        assert proc.returncode == 0 and server.stats().get("chat_requests", 0) == 0
    assert read_rows(killed, "answers") == read_rows(clean, "answers")


@pytest.mark.needs_trl  # validate checks the lion stage's `sft:` block against TRL
def test_kill9_mid_lion_then_resume(tmp_path: Path) -> None:
    with running_server(latency_ms=20) as server:
        pipeline = lion_pipeline(tmp_path, server.base_url, n_seeds=16)
        clean = tmp_path / "clean"
        assert run_cli("run", str(pipeline), "--out", str(clean)).returncode == 0
        total = _cached(clean)
        server.reset()
        killed = tmp_path / "killed"
        cached = _kill_when_cached(pipeline, killed, total // 2)
        server.reset()
        assert run_cli("run", str(pipeline), "--out", str(killed)).returncode == 0
        assert server.stats().get("chat_requests", 0) == total - cached
    for name in ("lion", "lion.iter1.discrimination", "lion.iter2.generated", "lion.iter2.train_pool"):
        assert read_rows(killed, name) == read_rows(clean, name), name
    def numbers(run: Path) -> list[dict]:
        return [{k: v for k, v in it.items() if k != "usage"} for it in run_json(run)["stages"]["lion"]["iterations"]]

    assert numbers(killed) == numbers(clean)


def test_ctrl_c_stops_cleanly_and_rerun_resumes(tmp_path: Path) -> None:
    with running_server(latency_ms=300) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=60, concurrency=4)
        out = tmp_path / "run"
        proc = subprocess.Popen([sys.executable, "-m", "synthkd.cli", "run", str(pipeline), "--out", str(out)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while _cached(out) < 8:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr and "run the same command again to resume" in stderr
        assert "Traceback" not in stderr
        assert run_json(out)["status"] == "interrupted"
        cached = _cached(out)
        server.reset()
        assert run_cli("run", str(pipeline), "--out", str(out)).returncode == 0
        assert server.stats().get("chat_requests", 0) == 60 - cached
    assert len(read_rows(out, "answers")) == 60
