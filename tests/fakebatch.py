"""OpenAI's Batch API for the fake server (tests/fakeserver.py), with fault injection.

Standard library only.  :class:`BatchService` is owned by a ``FakeServer``, which routes
``/v1/files...`` and ``/v1/batches...`` here.  Items are answered by the server's own reply
logic (``FakeServer._completion``), so a batch reply has the same choices and usage as the
online reply to the same body; the online fault plan, latency, capacity and ``max_inflight``
do not apply to batch items.

Lifecycle of a batch, ``S`` = ``seconds``: ``validating`` at creation; at 0.2·S the input is
validated (``failed`` if malformed) and the batch goes ``in_progress``; item i of n is answered
at 0.2·S + 0.6·S·(i+1)/n, so ``request_counts`` grow while a client polls; ``finalizing`` at
0.8·S; ``completed`` at S.  ``output_file_id`` (successes) and ``error_file_id`` (items with
an error status, and expired or cancelled items) are null when that file would be empty.
A cancel makes the batch ``cancelling`` at once and ``cancelled`` 0.1·S later; items not
answered by then go to the error file with code ``batch_cancelled``.

Faults, a list giving the outcome of the 1st, 2nd, ... batch created (later ones are ok):
``"ok"``; ``"fail"`` (``failed`` at 0.2·S, ``errors`` code ``injected_failure``, no files);
``"expire"`` or ``{"expire": F}`` (``expired`` at S after answering the first round(F·n)
items, F=0.5; the rest are in the error file with code ``batch_expired``);
``{"item_errors": R, "status": 500}`` (items with ``fraction(custom_id, 0) < R`` get that
status; the batch still completes); ``"reject"`` (the create call answers 400 and no batch is
made); ``"lost_create"`` (the batch is made but the create call's connection is dropped
unanswered, as when a network fails after the provider acted). Entries count create calls.  ``item_error_rate`` R: in every batch, an item whose
custom_id never had an error status before and with ``fraction(custom_id, 1) < R`` gets a
500 (so resubmitting it succeeds).
"""
from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import json
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakeserver import Response, _error, _json, _n, digest, fraction

if TYPE_CHECKING:
    from tests.fakeserver import FakeServer

CHAT_ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
EXPIRY_SECONDS = 24 * 3600


def parse_batch_faults(plan: Any) -> list[dict[str, Any]]:
    """Validate a batch fault list and normalise each entry to ``{"kind": K, ...}``."""
    if isinstance(plan, str):
        plan = json.loads(plan)
    if not isinstance(plan, list):
        raise TypeError("batch faults must be a JSON list")
    out: list[dict[str, Any]] = []
    for entry in plan:
        if entry in ("reject", "lost_create"):
            out.append({"kind": entry})
        elif entry in ("ok", "fail", "expire"):
            out.append({"kind": entry, "fraction": 0.5} if entry == "expire" else {"kind": entry})
        elif isinstance(entry, dict) and set(entry) == {"expire"}:
            out.append({"kind": "expire", "fraction": float(entry["expire"])})
        elif isinstance(entry, dict) and "item_errors" in entry and set(entry) <= {"item_errors", "status"}:
            out.append({"kind": "item_errors", "rate": float(entry["item_errors"]),
                        "status": int(entry.get("status", 500))})
        else:
            raise ValueError(f'bad batch fault {entry!r}; use "ok", "fail", "expire", "reject", "lost_create", {{"expire": F}} '
                             'or {"item_errors": R, "status": N}')
    return out


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def _error_body(message: str, etype: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def _err(status: int, message: str, code: str | None = None) -> Response:
    return _error(status, message, "invalid_request_error", code)


def _jsonl(lines: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


@dataclass
class StoredFile:
    """An uploaded or generated file, kept in memory."""
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def obj(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "status_details": None}


@dataclass
class Batch:
    """One batch: its public fields plus what processing needs."""
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any] | None
    fault: dict[str, Any]
    custom_ids: list[str]
    status: str = "validating"
    errors: dict[str, Any] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    times: dict[str, int | None] = field(default_factory=dict)
    total: int = 0
    completed: int = 0
    failed: int = 0
    outputs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    def obj(self) -> dict[str, Any]:
        stamps = {f"{name}_at": self.times.get(name) for name in
                  ("created", "in_progress", "expires", "finalizing", "completed", "failed", "expired",
                   "cancelling", "cancelled")}
        return {"id": self.id, "object": "batch", "endpoint": self.endpoint, "errors": self.errors,
                "input_file_id": self.input_file_id, "completion_window": self.completion_window,
                "status": self.status, "output_file_id": self.output_file_id,
                "error_file_id": self.error_file_id, **stamps,
                "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
                "metadata": self.metadata}

    def mark(self, status: str) -> None:
        self.status = status
        self.times[status] = int(time.time())


class BatchService:
    """Files and batches endpoints of one FakeServer; state lives for the server's lifetime."""

    def __init__(self, server: FakeServer, seconds: float = 0.5, faults: Any = None,
                 item_error_rate: float = 0.0) -> None:
        self.server = server
        self.seconds = float(seconds)
        self.faults = parse_batch_faults(faults or [])
        self.item_error_rate = float(item_error_rate)
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}
        self.create_calls = 0  # batch faults are taken in the order of create calls
        self._errored_ids: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -------------------------------------------------------------- state --
    def reset(self) -> None:
        """Forget all files and batches (``/_control/reset``); running batches stop."""
        self.close()
        self.files.clear()
        self.batches.clear()
        self.create_calls = 0
        self._errored_ids.clear()

    def close(self) -> None:
        """Stop processing (server shutdown)."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    def control(self) -> dict[str, Any]:
        """``GET /_control/batches``: every batch in creation order."""
        return {"batches": [{"id": b.id, "status": b.status, "input_file_id": b.input_file_id,
                             "custom_ids": b.custom_ids, "metadata": b.metadata}
                            for b in self.batches.values()]}

    # ------------------------------------------------------------ routing --
    async def handle(self, method: str, path: str, query: str, headers: dict[str, str],
                     body: bytes) -> Response | None:
        """Answer a files/batches request, or return None when ``path`` is not one of ours.

        ``query`` is the raw query string, ``headers`` the lower-cased request headers."""
        path = path.rstrip("/")
        if path.startswith("/v1/"):
            path = path[3:]
        parts = path.strip("/").split("/")
        if parts[0] == "files":
            return self._files(method, parts[1:], headers, body)
        if parts[0] == "batches":
            return self._batches(method, parts[1:], dict(urllib.parse.parse_qsl(query)), body)
        return None

    def _files(self, method: str, rest: list[str], headers: dict[str, str], body: bytes) -> Response:
        if method == "POST" and not rest:
            return self._upload(headers.get("content-type", ""), body)
        if method == "GET" and rest:
            stored = self.files.get(rest[0])
            if stored is None:
                return _err(404, f"No such File object: {rest[0]}")
            if len(rest) == 1:
                return _json(200, stored.obj())
            if rest[1:] == ["content"]:
                return Response(200, stored.data, content_type="application/octet-stream")
        return _err(404, f"no route for {method} /v1/files/{'/'.join(rest)}", "not_found")

    def _upload(self, content_type: str, body: bytes) -> Response:
        if not content_type.lower().startswith("multipart/form-data"):
            return _err(400, "files must be uploaded as multipart/form-data")
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
        fields: dict[str, tuple[str | None, bytes]] = {}
        if message.is_multipart():
            for part in message.iter_parts():  # type: ignore[attr-defined]
                name = part.get_param("name", header="content-disposition")
                if name:
                    fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
        if "file" not in fields or fields["file"][0] is None:
            return _err(400, "missing 'file' (a file part with a filename)")
        if "purpose" not in fields:
            return _err(400, "missing 'purpose'")
        filename, data = fields["file"]
        stored = StoredFile(_new_id("file-"), str(filename), fields["purpose"][1].decode(), data)
        self.files[stored.id] = stored
        self.server.stats["batch_files"] += 1
        return _json(200, stored.obj())

    def _batches(self, method: str, rest: list[str], query: dict[str, str], body: bytes) -> Response:
        if not rest:
            if method == "POST":
                return self._create(body)
            if method == "GET":
                return self._list(query)
        elif (method == "GET" and len(rest) == 1) or (method == "POST" and rest[1:] == ["cancel"]):
            batch = self.batches.get(rest[0])
            if batch is None:
                return _err(404, f"No batch found with id '{rest[0]}'")
            return _json(200, batch.obj()) if method == "GET" else self._cancel(batch)
        return _err(404, f"no route for {method} /v1/batches/{'/'.join(rest)}", "not_found")

    # ------------------------------------------------------------ batches --
    def _create(self, raw: bytes) -> Response:
        try:
            params = json.loads(raw or b"{}")
        except ValueError as exc:
            return _err(400, f"invalid request: {exc}")
        if not isinstance(params, dict):
            return _err(400, "invalid request: body must be a JSON object")
        stored = self.files.get(str(params.get("input_file_id")))
        if stored is None:
            return _err(404, f"No such File object: {params.get('input_file_id')}")
        if stored.purpose != "batch":
            return _err(400, f"file {stored.id} has purpose {stored.purpose!r}, not 'batch'")
        if params.get("endpoint") != CHAT_ENDPOINT:
            return _err(400, f"unsupported endpoint {params.get('endpoint')!r}; this server batches "
                        f"only {CHAT_ENDPOINT}")
        if params.get("completion_window") != "24h":
            return _err(400, "completion_window must be '24h'")
        metadata = params.get("metadata")
        index = self.create_calls
        self.create_calls += 1
        fault = self.faults[index] if index < len(self.faults) else {"kind": "ok"}
        if fault["kind"] == "reject":
            self.server.stats["batches_rejected"] += 1
            return _err(400, "injected rejection: this batch cannot be created")
        batch = Batch(_new_id("batch_"), stored.id, CHAT_ENDPOINT, "24h",
                      metadata if isinstance(metadata, dict) else None, fault, _custom_ids(stored.data))
        now = int(time.time())
        batch.times.update(created=now, expires=now + EXPIRY_SECONDS)
        self.batches[batch.id] = batch
        self.server.stats["batches_created"] += 1
        task = asyncio.get_running_loop().create_task(self._run(batch, stored.data))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(batch, done))
        if fault["kind"] == "lost_create":
            return Response(0, b"")  # the server drops the connection without an answer
        return _json(200, batch.obj())

    def _finished(self, batch: Batch, task: asyncio.Task[None]) -> None:
        """Forget a finished task; a bug in processing fails the batch loudly instead of leaving it stuck."""
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        batch.errors = {"object": "list", "data": [{"code": "fakeserver_internal_error", "message": repr(exc),
                                                     "line": None, "param": None}]}
        batch.mark("failed")

    def _list(self, query: dict[str, str]) -> Response:
        try:
            limit = max(1, min(100, int(query.get("limit") or 20)))
        except ValueError:
            return _err(400, "limit must be an integer")
        newest = list(reversed(self.batches.values()))
        after = query.get("after")
        if after:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1:] if after in ids else []
        page = newest[:limit]
        return _json(200, {"object": "list", "data": [b.obj() for b in page],
                           "first_id": page[0].id if page else None,
                           "last_id": page[-1].id if page else None,
                           "has_more": len(newest) > limit})

    def _cancel(self, batch: Batch) -> Response:
        if batch.status in {"cancelling", "cancelled"}:
            return _json(200, batch.obj())
        if batch.status in TERMINAL:
            return _err(409, f"Cannot cancel a batch with status '{batch.status}'.")
        batch.mark("cancelling")
        batch.cancel.set()
        return _json(200, batch.obj())

    # --------------------------------------------------------- processing --
    async def _run(self, batch: Batch, data: bytes) -> None:
        """Drive one batch through its lifecycle (see the module docstring)."""
        loop = asyncio.get_running_loop()
        start, span = loop.time(), self.seconds

        async def cancelled_by(point: float) -> bool:
            """Wait until that point (a fraction of the span); True when a cancel came first."""
            delay = start + point * span - loop.time()
            if not batch.cancel.is_set() and delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(batch.cancel.wait(), delay)
            return batch.cancel.is_set()

        if await cancelled_by(0.2):
            await self._finish_cancel(batch, [])
            return
        items, problems = _validate(data)
        if not problems and batch.fault["kind"] == "fail":
            problems = [{"code": "injected_failure", "message": "The batch failed (injected fault).",
                         "line": None, "param": None}]
        if problems:
            batch.errors = {"object": "list", "data": problems}
            batch.mark("failed")
            return
        batch.total = len(items)
        batch.mark("in_progress")
        answer = len(items)
        if batch.fault["kind"] == "expire":
            answer = min(len(items), round(batch.fault["fraction"] * len(items)))
        for i, item in enumerate(items[:answer]):
            if await cancelled_by(0.2 + 0.6 * (i + 1) / len(items)):
                await self._finish_cancel(batch, items[i:])
                return
            self._process(batch, item)
        if batch.fault["kind"] != "expire":
            if await cancelled_by(0.8):
                await self._finish_cancel(batch, [])
                return
            batch.mark("finalizing")
        if await cancelled_by(1.0):
            await self._finish_cancel(batch, items[answer:])
            return
        self._drop(batch, items[answer:], "batch_expired",
                   "This request could not be executed before the completion window expired.")
        self._write_files(batch)
        batch.mark("expired" if batch.fault["kind"] == "expire" else "completed")

    async def _finish_cancel(self, batch: Batch, unanswered: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0.1 * self.seconds)
        self._drop(batch, unanswered, "batch_cancelled", "This request was not executed: the batch was cancelled.")
        self._write_files(batch)
        batch.mark("cancelled")

    def _drop(self, batch: Batch, items: list[dict[str, Any]], code: str, message: str) -> None:
        for item in items:
            batch.failures.append({"id": _new_id("batch_req_"), "custom_id": item["custom_id"],
                                   "response": None, "error": {"code": code, "message": message}})
            batch.failed += 1

    def _write_files(self, batch: Batch) -> None:
        for attr, lines, suffix in (("output_file_id", batch.outputs, "output"),
                                    ("error_file_id", batch.failures, "error")):
            if lines:
                stored = StoredFile(_new_id("file-"), f"{batch.id}_{suffix}.jsonl", "batch_output",
                                    _jsonl(lines))
                self.files[stored.id] = stored
                setattr(batch, attr, stored.id)

    def _process(self, batch: Batch, item: dict[str, Any]) -> None:
        """Answer one item as the online endpoint would, minus the online fault plan."""
        body, custom_id = item["body"], item["custom_id"]
        status, reply = self._reply(batch, custom_id, body)
        line = {"id": _new_id("batch_req_"), "custom_id": custom_id,
                "response": {"status_code": status, "request_id": _new_id("req_"), "body": reply},
                "error": None}
        if status == 200:
            batch.outputs.append(line)
            batch.completed += 1
        else:
            batch.failures.append(line)
            batch.failed += 1
            self._errored_ids.add(custom_id)
        server = self.server
        server.stats["batch_items"] += 1
        if server._log:
            server._log.write(json.dumps({
                "t": time.time(), "batch": batch.id, "custom_id": custom_id,
                "prompt_key": _prompt_key(body), "body_key": digest(body), "model": body.get("model"),
                "n": body.get("n"), "status": status}) + "\n")
            if server.log_sync:
                server._log.flush()

    def _reply(self, batch: Batch, custom_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        server = self.server
        if not isinstance(body.get("messages"), list):
            return 400, _error_body("invalid request: body must be an object with a 'messages' list",
                                    "invalid_request_error")
        model = body.get("model")
        if server.models and model not in server.models:
            return 404, _error_body(f"The model `{model}` does not exist", "invalid_request_error",
                                    "model_not_found")
        if server.reject_max_tokens and "max_tokens" in body:
            return 400, _error_body("Unsupported parameter: 'max_tokens' is not supported with this model. "
                                    "Use 'max_completion_tokens' instead.", "invalid_request_error",
                                    "unsupported_parameter")
        if server.refuse_n and _n(body) > 1:
            return 400, _error_body("n > 1 is not supported by this server", "invalid_request_error",
                                    "unsupported_parameter")
        fault = batch.fault
        if fault["kind"] == "item_errors" and fraction(custom_id, 0) < fault["rate"]:
            return fault["status"], _error_body("Injected batch item error", "server_error")
        if custom_id not in self._errored_ids and fraction(custom_id, 1) < self.item_error_rate:
            return 500, _error_body("Injected batch item error", "server_error")
        return 200, server._completion(body, None, _prompt_key(body))


def _prompt_key(body: dict[str, Any]) -> str:
    """The prompt key, computed as ``FakeServer._chat`` does."""
    return digest({"model": body.get("model"), "messages": body.get("messages"), "seed": body.get("seed")})


def _custom_ids(data: bytes) -> list[str]:
    """custom_ids of the lines that have one, in order (for ``/_control/batches``)."""
    ids = []
    for line in data.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("custom_id"), str):
            ids.append(item["custom_id"])
    return ids


def _validate(data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Parse a batch input file into items; return (items, errors) with at most one error."""
    items: list[dict[str, Any]] = []
    seen: set[str] = set()

    def problem(line: int | None, message: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return [], [{"code": "invalid_request", "message": message, "line": line, "param": None}]

    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError as exc:
            return problem(number, f"line {number} is not valid JSON: {exc}")
        if not isinstance(item, dict):
            return problem(number, f"line {number} is not a JSON object")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            return problem(number, f"line {number} has no string 'custom_id'")
        if custom_id in seen:
            return problem(number, f"duplicate custom_id {custom_id!r} on line {number}")
        if item.get("method") != "POST":
            return problem(number, f"line {number}: 'method' must be 'POST'")
        if item.get("url") != CHAT_ENDPOINT:
            return problem(number, f"line {number}: 'url' must be {CHAT_ENDPOINT!r} (the batch's endpoint)")
        if not isinstance(item.get("body"), dict):
            return problem(number, f"line {number} has no object 'body'")
        seen.add(custom_id)
        items.append(item)
    if not items:
        return problem(None, "the input file has no requests")
    return items, []
