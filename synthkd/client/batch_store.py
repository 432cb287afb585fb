"""What synthkd has submitted to batch APIs, kept in RUN_DIR/cache.sqlite beside the replies.

A submission is written here after its file is uploaded and before the batch is created, and its
batch id right after; synthkd waits only after that. So a run killed at any point finds, on rerun,
every batch it may have paid for: one with an id is polled again; one without (killed between the
create call and writing its id) is looked up at the provider by its input file before anything is
submitted again. Items keep the cache keys they answer, and after collection the reason each
unanswered item failed, which is how often a request has been tried in a batch.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthkd.client.cache import RequestCache, unreadable_cache
from synthkd.client.wire import BatchSummary

if TYPE_CHECKING:  # the openai SDK is not imported by `synthkd status`, which reads batch_summary
    from openai.types import BatchRequestCounts

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS batches (
      local_id TEXT PRIMARY KEY,
      endpoint TEXT NOT NULL,
      file_id TEXT NOT NULL,
      batch_id TEXT,
      status TEXT NOT NULL,
      created REAL NOT NULL,
      collected INTEGER NOT NULL DEFAULT 0,
      collected_at REAL,
      info TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS batch_items (
      local_id TEXT NOT NULL,
      custom_id TEXT NOT NULL,
      keys TEXT NOT NULL,
      worst_cost REAL NOT NULL,
      error TEXT,
      PRIMARY KEY (local_id, custom_id)
    )""",
)


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One request line of a batch file: its custom_id and the cache keys its reply (or n replies) go to."""

    custom_id: str
    keys: tuple[str, ...]
    worst_cost: float


@dataclass(frozen=True, slots=True)
class Submission:
    """A batch synthkd submitted and has not collected yet."""

    local_id: str
    endpoint: str
    file_id: str
    batch_id: str | None
    status: str
    created: float
    items: tuple[BatchItem, ...]


class BatchStore:
    """The batches and batch items of one run (tables in its request cache file)."""

    def __init__(self, cache: RequestCache) -> None:
        self.cache = cache
        for statement in _SCHEMA:
            cache.sql(statement)

    def add(self, local_id: str, endpoint: str, file_id: str, items: list[BatchItem]) -> None:
        """Record an uploaded batch file and its items, in one transaction, before the batch is created."""
        statements: list[tuple[str, tuple[Any, ...]]] = [(
            "INSERT INTO batches (local_id, endpoint, file_id, batch_id, status, created) VALUES (?,?,?,?,?,?)",
            (local_id, endpoint, file_id, None, "uploaded", time.time()),
        )]
        statements += [("INSERT INTO batch_items (local_id, custom_id, keys, worst_cost) VALUES (?,?,?,?)",
                        (local_id, item.custom_id, json.dumps(list(item.keys)), item.worst_cost)) for item in items]
        self.cache.sql_transaction(statements)

    def set_batch(self, local_id: str, batch_id: str, status: str) -> None:
        """Record the provider's id for a submission (the moment it is known)."""
        self.cache.sql("UPDATE batches SET batch_id=?, status=? WHERE local_id=?", (batch_id, status, local_id))

    def set_status(self, local_id: str, status: str, counts: BatchRequestCounts | None) -> None:
        """Record a batch's last status seen, and its request counts as the provider reported them (all their fields)."""
        info = {"request_counts": counts.model_dump() if counts else None}
        self.cache.sql("UPDATE batches SET status=?, info=? WHERE local_id=?", (status, json.dumps(info), local_id))

    def collected(self, local_id: str, status: str, errors: dict[str, str]) -> None:
        """Mark a batch collected (its replies are in the cache), with the reason each unanswered item failed."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("UPDATE batch_items SET error=? WHERE local_id=? AND custom_id=?", (reason, local_id, custom_id))
            for custom_id, reason in errors.items()
        ]
        statements.append(("UPDATE batches SET status=?, collected=1, collected_at=? WHERE local_id=?", (status, time.time(), local_id)))
        self.cache.sql_transaction(statements)

    def pending(self, endpoint: str | None = None) -> list[Submission]:
        """Submissions not collected yet (of one endpoint, or all), oldest first."""
        where = "collected=0" + (" AND endpoint=?" if endpoint is not None else "")
        rows = self.cache.sql(
            f"SELECT local_id, endpoint, file_id, batch_id, status, created FROM batches WHERE {where} ORDER BY created",
            (endpoint,) if endpoint is not None else ())
        out = []
        for local_id, ep, file_id, batch_id, status, created in rows:
            items = tuple(BatchItem(c, tuple(json.loads(k)), w) for c, k, w in self.cache.sql(
                "SELECT custom_id, keys, worst_cost FROM batch_items WHERE local_id=?", (local_id,)))
            out.append(Submission(local_id, ep, file_id, batch_id, status, created, items))
        return out

    def failures(self, endpoint: str, since: float) -> tuple[Counter[str], dict[str, str]]:
        """For each cache key: how many batches collected since `since` failed to answer it, and the last reason.

        Counted from this invocation's start: a rerun tries again what an earlier one gave up on."""
        counts: Counter[str] = Counter()
        last: dict[str, str] = {}
        for keys, error in self.cache.sql(
                "SELECT i.keys, i.error FROM batch_items i JOIN batches b ON b.local_id=i.local_id "
                "WHERE b.endpoint=? AND b.collected=1 AND b.collected_at>=? AND i.error IS NOT NULL ORDER BY b.collected_at",
                (endpoint, since)):
            for key in json.loads(keys):
                counts[key] += 1
                last[key] = error
        return counts, last


_SUMMARY = ("SELECT b.endpoint, b.batch_id, b.status, b.collected, COUNT(i.custom_id), "
            "SUM(CASE WHEN i.error IS NOT NULL THEN 1 ELSE 0 END) FROM batches b "
            "LEFT JOIN batch_items i ON i.local_id=b.local_id GROUP BY b.local_id ORDER BY b.created")


def batch_summary(cache_path: Path) -> list[BatchSummary]:
    """Every batch a run submitted (endpoint, batch id, last status seen, collected, requests, failed items), read
    from its cache file without writing to it (for `synthkd status`); [] when it has none."""
    if not cache_path.is_file():
        return []
    db = sqlite3.connect(f"file:{cache_path}?mode=ro", uri=True)
    try:
        rows = db.execute(_SUMMARY).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # the run never used batch mode
            return []
        raise unreadable_cache(cache_path, exc) from None
    except sqlite3.DatabaseError as exc:
        raise unreadable_cache(cache_path, exc) from None
    finally:
        db.close()
    return [{"endpoint": e, "batch_id": b, "status": s, "collected": bool(c), "requests": n, "failed": f or 0}
            for e, b, s, c, n, f in rows]
