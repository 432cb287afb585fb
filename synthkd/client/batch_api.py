"""The provider's batch API (/v1/files, /v1/batches) through the openai client: each operation retried as
requests are, its failures turned into run-stopping errors that say what to do, and a batch created at most
once per uploaded file (a create that may have reached the provider is looked up before it is sent again)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable, TypeVar

import openai

from synthkd.client.refusals import refused_error
from synthkd.client.retry import BackoffWithRetryAfter, is_retryable
from synthkd.client.wire import BatchResultLine
from synthkd.config.endpoints import EndpointConfig
from synthkd.errors import EndpointError
from synthkd.jsonl import split_lines

T = TypeVar("T")
CHAT_URL = "/v1/chat/completions"


class BatchAPI:
    """The batch API of one endpoint (its first URL: a provider's batch service answers at its API's address)."""

    def __init__(self, name: str, config: EndpointConfig, client: openai.AsyncOpenAI) -> None:
        self.name, self.config, self.client = name, config, client

    async def upload(self, filename: str, data: bytes) -> str:
        """Upload a JSONL batch file; its file id."""
        upload = await self._op("upload a batch file", lambda: self.client.files.create(file=(filename, data), purpose="batch"))
        return str(upload.id)

    async def create(self, file_id: str, window: str, tag: str, since: float) -> Any:
        """Create the batch of an uploaded file, once: after a failed attempt, look for it before trying again."""
        attempts = 0
        while True:
            try:
                return await self.client.batches.create(input_file_id=file_id, endpoint=CHAT_URL, completion_window=window,  # type: ignore[arg-type]
                                                        metadata={"synthkd_submission": tag})
            except Exception as exc:
                if not is_retryable(exc) or attempts >= self.config.max_retries:
                    raise self._fatal("create a batch", exc) from None
                attempts += 1
                # The create may have reached the provider before the connection failed.
                await asyncio.sleep(BackoffWithRetryAfter.first_wait(exc))
                found = await self.find(file_id, since)
                if found is not None:
                    return found

    async def find(self, file_id: str, since: float) -> Any | None:
        """The provider's batch made from this input file, if any (listing newest first, back to `since`)."""
        async def scan() -> Any | None:
            async for batch in self.client.batches.list(limit=100):
                if batch.input_file_id == file_id:
                    return batch
                if batch.created_at < since - 600:  # older than the submission (with room for clock skew)
                    return None
            return None

        return await self._op("list batches", scan)

    async def retrieve(self, batch_id: str) -> Any:
        """A batch's current state."""
        return await self._op("read a batch's status", lambda: self.client.batches.retrieve(batch_id))

    async def records(self, file_id: str | None) -> list[BatchResultLine]:
        """The JSON lines of a batch's output or error file ([] when it has none)."""
        if not file_id:
            return []
        content = await self._op("download batch results", lambda: self.client.files.content(file_id))
        records: list[BatchResultLine] = []
        for line in split_lines(content.text):
            try:
                record: BatchResultLine = json.loads(line)  # kept only if an object; its values are checked where read
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    async def _op(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """An idempotent batch-API call, retried on rate limits, 5xx and dropped connections as requests are."""
        attempts = 0
        while True:
            try:
                return await operation()
            except Exception as exc:
                if not is_retryable(exc) or attempts >= self.config.max_retries:
                    raise self._fatal(what, exc) from None
                attempts += 1
                await asyncio.sleep(BackoffWithRetryAfter.first_wait(exc) * attempts)

    def _fatal(self, what: str, exc: Exception) -> Exception:
        """The run-stopping error for a batch-API call that failed for good (submitted batches stay recorded)."""
        if isinstance(exc, openai.NotFoundError) and what in {"upload a batch file", "create a batch"}:
            return EndpointError(
                f"endpoint {self.name!r} has no batch API: {what} got 404 ({str(exc)[:200]})", where=f"endpoints.{self.name}.batch",
                fix="remove the endpoint's `batch:` block (or set `batch: false` on the stage) to send its requests online")
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return refused_error(self.name, self.config, exc)
        if isinstance(exc, openai.APIStatusError):
            return EndpointError(f"endpoint {self.name!r}: could not {what} ({exc.status_code}: {str(exc)[:200]})",
                                 where=f"endpoints.{self.name}.batch",
                                 fix="batches already submitted are recorded in RUN_DIR/cache.sqlite; rerun to collect them")
        if is_retryable(exc):
            return EndpointError(f"endpoint {self.name!r}: could not {what} after {self.config.max_retries} retries ({exc})",
                                 where=f"endpoints.{self.name}",
                                 fix="batches already submitted are recorded in RUN_DIR/cache.sqlite; rerun to collect them")
        return exc


def error_text(record: BatchResultLine) -> str:
    """'batch:<status or code>: <message>' of a failed item of an output or error file."""
    error = record.get("error")
    response = record.get("response")
    if isinstance(response, dict) and response.get("status_code"):
        body = response.get("body") or {}
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
        return f"batch:{response['status_code']}: {message or 'no message'}"[:400]
    if isinstance(error, dict):
        return f"batch:{error.get('code') or 'error'}: {error.get('message') or 'no message'}"[:400]
    return "batch:error: the item came back with neither a reply nor an error"


def batch_errors(batch: Any) -> str:
    """The messages of a batch's own errors (a failed batch's validation errors), joined."""
    errors = getattr(batch, "errors", None)
    data = getattr(errors, "data", None) or []
    return "; ".join(f"{e.code}: {e.message}" for e in data[:3] if e is not None)[:300]
