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
from typing import Any, Sequence

from synthkd.client.wire import RequestIdentity
from synthkd.errors import StorageError
from synthkd.tools.wire import ToolCall

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
  created REAL NOT NULL,
  reasoning TEXT,
  reasoning_tokens INTEGER NOT NULL DEFAULT 0,
  cached_prompt_tokens INTEGER NOT NULL DEFAULT 0,
  tool_calls TEXT
);
"""
# Columns added after the first release: a cache file written before them gets them on open (old
# rows read as no reasoning, no cached prompt tokens), so every reply it holds stays usable.
_ADDED_COLUMNS = {
    "reasoning": "TEXT",
    "reasoning_tokens": "INTEGER NOT NULL DEFAULT 0",
    "cached_prompt_tokens": "INTEGER NOT NULL DEFAULT 0",
    "tool_calls": "TEXT",
}
_COLUMNS = "text, finish_reason, prompt_tokens, completion_tokens, cost, logprobs, reasoning, reasoning_tokens, cached_prompt_tokens, tool_calls"


def request_key(payload: RequestIdentity) -> str:
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
    reasoning: str | None = None  # the reply's separate reasoning trace (reasoning_content / reasoning), if any
    reasoning_tokens: int = 0  # usage.completion_tokens_details.reasoning_tokens (a part of completion_tokens)
    cached_prompt_tokens: int = 0  # usage.prompt_tokens_details.cached_tokens (a part of prompt_tokens)
    tool_calls: list[ToolCall] | None = None  # message.tool_calls (OpenAI function calling), normalised by replies._tool_calls


class RequestCache:
    """SQLite reply store. Safe to share between threads of one process; one writer at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # Replies that arrived (and were paid for) while the file could not take them, e.g. on a full disk: kept
        # here and written before the next reply and at close, so space freed meanwhile saves them all.
        self.unsaved: list[tuple[Any, ...]] = []
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise unreadable_cache(path, exc) from None

    def _migrate(self) -> None:
        """Add the columns a cache file from an older synthkd lacks (its rows stay as they are)."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(replies)")}
        for name, decl in _ADDED_COLUMNS.items():
            if name not in have:
                try:
                    self._db.execute(f"ALTER TABLE replies ADD COLUMN {name} {decl}")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise

    def get(self, key: str, endpoint: str | None = None) -> CachedReply | None:
        """The reply stored under `key` (only if the endpoint named `endpoint` stored it, when given)."""
        with self._lock:
            if endpoint is None:
                row = self._db.execute(f"SELECT {_COLUMNS} FROM replies WHERE key=?", (key,)).fetchone()
            else:
                row = self._db.execute(f"SELECT {_COLUMNS} FROM replies WHERE key=? AND endpoint=?", (key, endpoint)).fetchone()
        if row is None:
            return None
        return _reply(row)

    def get_many(self, keys: list[str]) -> dict[str, CachedReply]:
        """Bulk lookup (one query per 500 keys): the fast path of a rerun."""
        found: dict[str, CachedReply] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(f"SELECT key, {_COLUMNS} FROM replies WHERE key IN ({marks})", chunk).fetchall()
            for r in rows:
                found[r[0]] = _reply(r[1:])
        return found

    def put(self, key: str, endpoint: str, model: str, reply: CachedReply) -> None:
        """Store one reply durably (autocommit). Raises StorageError when the file cannot take it (the reply is then
        kept in `unsaved` and written by the next `put` or `flush` that can)."""
        row = (key, endpoint, model, time.time(), reply.text, reply.finish_reason, reply.prompt_tokens,
               reply.completion_tokens, reply.cost, json.dumps(reply.logprobs) if reply.logprobs is not None else None,
               reply.reasoning, reply.reasoning_tokens, reply.cached_prompt_tokens,
               json.dumps(reply.tool_calls) if reply.tool_calls is not None else None)
        with self._lock:
            self.unsaved.append(row)
            self._write_unsaved()

    def flush(self) -> int:
        """Write the replies kept in `unsaved`; returns how many still could not be written."""
        with self._lock:
            try:
                self._write_unsaved()
            except StorageError:
                pass
            return len(self.unsaved)

    def _write_unsaved(self) -> None:
        """Insert the rows of `unsaved` (under the lock), removing each once stored."""
        while self.unsaved:
            try:
                self._db.execute(f"INSERT OR REPLACE INTO replies (key, endpoint, model, created, {_COLUMNS}) "
                                 "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", self.unsaved[0])
            except (sqlite3.Error, OSError) as exc:
                raise StorageError(
                    f"cannot store a paid reply in {self.path} ({exc}); {len(self.unsaved)} not stored yet",
                    fix="free disk space (or fix the file system) and run the same command again: every reply stored "
                    "so far is kept, and synthkd keeps trying to store these until it exits") from None
            self.unsaved.pop(0)

    def sql(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the cache's database (other tables kept beside the replies, e.g. batches)."""
        with self._lock:
            return self._db.execute(statement, params).fetchall()

    def sql_transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run statements as one transaction: after a crash either all of them are in the file or none."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement, params in statements:
                    self._db.execute(statement, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def total_cost(self) -> float:
        """Money spent on every reply this run ever received (the basis of budget_usd)."""
        with self._lock:
            return float(self._db.execute("SELECT COALESCE(SUM(cost), 0) FROM replies").fetchone()[0])

    def totals(self, endpoint: str) -> tuple[int, int, int, float]:
        """(replies, prompt tokens, completion tokens, cost) of every reply from `endpoint` in this cache: what that
        endpoint was paid for over the run's whole life (each reply is paid once, however often it is reused)."""
        with self._lock:
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
                                   "COALESCE(SUM(cost), 0) FROM replies WHERE endpoint = ?", (endpoint,)).fetchone()
        return int(row[0]), int(row[1]), int(row[2]), float(row[3])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> int:
        """Write what `unsaved` holds if the file takes it now, then close; returns the replies that stay unsaved."""
        left = self.flush()
        with self._lock:
            self._db.close()
        return left


def unreadable_cache(path: Path, exc: BaseException) -> StorageError:
    """The error for a cache file SQLite cannot read (the fix keeps the file, in case it can be recovered)."""
    return StorageError(
        f"not a readable request cache ({exc})", where=str(path),
        fix="try `sqlite3 FILE .recover`, or move it aside (mv FILE FILE.broken) and run again: synthkd then starts a "
        "new cache, and the replies that were only in the old file are asked (and paid for) again")


def _reply(row: tuple[Any, ...]) -> CachedReply:
    """A CachedReply from the columns named in _COLUMNS, in that order."""
    return CachedReply(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]) if row[5] else None,
                       row[6], row[7] or 0, row[8] or 0, json.loads(row[9]) if row[9] else None)
