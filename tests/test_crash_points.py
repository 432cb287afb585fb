"""A run that dies at a bad moment loses nothing that was paid for (defects 10 and 11 of the reliability issue):
a death between a stage's dataset writes, a disk that fills while replies arrive, a corrupt cache or run.json."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

import synthkd.runtime
from synthkd.client.cache import RequestCache
from synthkd.pipeline import load_pipeline
from synthkd.errors import StorageError
from synthkd.progress import Reporter
from synthkd.runner import run_pipeline
from synthkd.settings import Settings
from tests.conftest import REPO, generate_pipeline, read_rows, remote_endpoint, run_cli, run_json
from tests.fakeserver import running_server


class _Died(BaseException):
    """Stands for the process dying (not an Exception: nothing in synthkd catches it)."""


def _run(pipeline: Path, out: Path) -> dict[str, Any]:
    """`synthkd run` in this process (so a test can break one of its parts)."""
    settings = Settings.from_environ()
    loaded = load_pipeline(pipeline, [], settings)
    return asyncio.run(run_pipeline(loaded, out, settings, Reporter(enabled=False)))


def _requests(server: Any) -> int:
    return int(server.stats().get("chat_requests", 0))


def _rationale_pipeline(tmp: Path, base_url: str) -> Path:
    lines = (REPO / "data" / "rationale" / "arithmetic_train.jsonl").read_text().splitlines()[:6]
    (tmp / "train.jsonl").write_text("\n".join(lines) + "\n")
    spec = {
        "name": "rationale", "prompts_dir": str(REPO / "prompts"),
        "endpoints": {"teacher": remote_endpoint(base_url, "teacher")},
        "stages": [
            {"name": "tasks", "type": "load", "path": str(tmp / "train.jsonl")},
            {"name": "rationales", "type": "rationale", "input": "tasks", "gold_column": None, "samples": 2,
             "sampling": {"temperature": 0.7, "max_tokens": 64, "seed": 3}},
        ],
    }
    path = tmp / "rationale.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize("dies_at_write", [1, 2])
def test_a_death_between_a_stages_dataset_writes_loses_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  dies_at_write: int) -> None:
    """The rationale stage writes two datasets (its rows and `per_input`); the process dies at either write, and
    the rerun has both, paying for nothing again."""
    real = synthkd.runtime.write_output
    writes: list[str] = []

    def dying(run_dir: Path, stage: str, *args: Any, **kwargs: Any) -> Path:
        if stage.startswith("rationales"):
            writes.append(stage)
            if len(writes) == dies_at_write:
                raise _Died()
        return real(run_dir, stage, *args, **kwargs)

    with running_server() as server:
        pipeline = _rationale_pipeline(tmp_path, server.base_url)
        out = tmp_path / "run"
        monkeypatch.setattr(synthkd.runtime, "write_output", dying)
        with pytest.raises(_Died):
            _run(pipeline, out)
        paid = _requests(server)
        assert paid == 12
        monkeypatch.setattr(synthkd.runtime, "write_output", real)
        _run(pipeline, out)
        assert _requests(server) == paid  # every reply came from the cache
    assert len(read_rows(out, "rationales.per_input")) == 6
    assert len(read_rows(out, "rationales")) + len(read_rows(out, "rationales", failed=True)) == 12


class _FillingDisk:
    """A cache connection on a disk that fills up: inserts `start`..`start+count-1` fail as SQLite fails on a full disk
    (then space is freed, as when a user deletes something or another job's files go away)."""

    def __init__(self, db: sqlite3.Connection, start: int, count: int) -> None:
        self.db, self.start, self.count, self.inserts = db, start, count, 0

    def execute(self, sql: str, params: Any = ()) -> Any:
        if sql.lstrip().startswith("INSERT"):
            self.inserts += 1
            if self.start <= self.inserts < self.start + self.count:
                raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_a_disk_that_fills_while_replies_arrive_loses_no_paid_reply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 16
    real_init = RequestCache.__init__

    def on_filling_disk(self: RequestCache, path: Path) -> None:
        real_init(self, path)
        self._db = _FillingDisk(self._db, start=4, count=3)  # type: ignore[assignment]

    with running_server(latency_ms=50) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=n, concurrency=4)
        out = tmp_path / "run"
        monkeypatch.setattr(RequestCache, "__init__", on_filling_disk)
        with pytest.raises(StorageError) as caught:
            _run(pipeline, out)
        assert "disk is full" in caught.value.message() and "\n" not in caught.value.message()
        paid = _requests(server)
        assert 4 <= paid < n  # it stopped sending once a reply could not be stored
        assert run_json(out)["status"] == "failed"
        monkeypatch.setattr(RequestCache, "__init__", real_init)
        cache = RequestCache(out / "cache.sqlite")
        assert cache.count() == paid  # every paid reply is in the cache: those that failed were written later
        cache.close()
        _run(pipeline, out)
        assert _requests(server) == n  # the rerun asked only for what was never sent
    assert len(read_rows(out, "answers")) == n


def test_a_corrupt_cache_or_run_json_is_one_line(tmp_path: Path) -> None:
    with running_server() as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=4)
        out = tmp_path / "run"
        out.mkdir()
        (out / "run.json").write_text("[]")  # not what synthkd writes: the run starts its record afresh
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert run_json(out)["status"] == "done"
        (out / "cache.sqlite").write_bytes(b"this is not a database" * 100)
        for name in ("cache.sqlite-wal", "cache.sqlite-shm"):
            (out / name).unlink(missing_ok=True)
        for args in (("run", str(pipeline), "--out", str(out)), ("status", str(out))):
            proc = run_cli(*args)
            assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
            errors = [line for line in proc.stderr.splitlines() if "error" in line]
            assert len(errors) == 1 and "cache.sqlite" in errors[0] and "mv FILE" in errors[0], proc.stderr
        assert _requests(server) == 4
