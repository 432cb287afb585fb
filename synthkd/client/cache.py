"""Content-addressed request cache in SQLite: every reply is stored the moment it arrives.

The key is a hash of everything that determines a reply (model identity, messages, sampling
parameters, schema, sample index, retry attempt), so a rerun finds each paid reply again and a
killed run loses at most the requests that were in flight. WAL mode with synchronous=NORMAL keeps
a committed row safe from a killed process (kill -9) at a cost of tens of microseconds per row.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
  key TEXT PRIMARY KEY,
  endpoint TEXT NOT NULL,
  model TEXT NOT NULL,
  text TEXT NOT NULL,
  finish_reason TEXT,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  cost REAL NOT NULL,
  logprobs TEXT,
  created REAL NOT NULL
);
"""


def request_key(payload: dict[str, Any]) -> str:
    """Stable hash of a request description (dict keys sorted, compact JSON)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedReply:
    """A stored reply: what the endpoint said and what it cost."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost: float
    logprobs: list[float] | None = None


class RequestCache:
    """SQLite reply store. Safe to share between threads of one process; one writer at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def get(self, key: str) -> CachedReply | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, finish_reason, prompt_tokens, completion_tokens, cost, logprobs FROM replies WHERE key=?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return CachedReply(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]) if row[5] else None)

    def get_many(self, keys: list[str]) -> dict[str, CachedReply]:
        """Bulk lookup (one query per 500 keys): the fast path of a rerun."""
        found: dict[str, CachedReply] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT key, text, finish_reason, prompt_tokens, completion_tokens, cost, logprobs FROM replies WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
            for r in rows:
                found[r[0]] = CachedReply(r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else None)
        return found

    def put(self, key: str, endpoint: str, model: str, reply: CachedReply) -> None:
        """Store one reply durably (autocommit)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    key, endpoint, model, reply.text, reply.finish_reason, reply.prompt_tokens,
                    reply.completion_tokens, reply.cost,
                    json.dumps(reply.logprobs) if reply.logprobs is not None else None, time.time(),
                ),
            )

    def total_cost(self) -> float:
        """Money spent on every reply this run ever received (the basis of budget_usd)."""
        with self._lock:
            return float(self._db.execute("SELECT COALESCE(SUM(cost), 0) FROM replies").fetchone()[0])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
