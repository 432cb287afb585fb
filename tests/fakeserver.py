"""Local, fault-injecting, OpenAI-compatible chat-completions server for tests.

Standard library only (asyncio streams, HTTP/1.1 keep-alive).  Run it with
``python -m tests.fakeserver --help`` or, from tests, use :func:`running_server`.

Replies are a pure function of ``model``, ``messages``, ``seed``, ``temperature``
and the choice index.  Faults follow a JSON plan: a list of rules
``{"kind": K, "rate": 1.0, "times": 1, ...}``.  A request's *prompt key* is the
sha256 of canonical JSON of (model, messages, seed); its *attempt* is how many
times that key was seen before.  Rule ``i`` applies when
``fraction(prompt_key, i) < rate`` and (``times == -1`` or ``attempt < times``);
the first matching rule wins.  Kinds and their extra fields:
``rate_limit`` (``retry_after``=0.2), ``server_error`` (``status``=500),
``drop``, ``hang`` (``hang_seconds``=3600), ``not_json``, ``schema_violation``,
``truncate``, ``delay`` (``seconds``=1.0), ``status`` (``status``=422: that status with a JSON error body).
Kinds that change a 200 reply, as hostile endpoints answer: ``parts`` (``message.content`` as a list of
parts, ``[{"type": "text", "text": ...}, ...]``, as gateways return it), ``empty`` (content ``""``),
``content_filter`` (finish reason ``content_filter``, content cut), ``bad_usage`` (``usage``: the reply's
usage object replaced by the given one, e.g. ``{"prompt_tokens": "12.0", "completion_tokens": null}``),
``no_message`` (a choice without ``message``).

Hostile hosts, each off unless asked for: ``--html`` answers every path (``/_control`` aside) with a
200 ``text/html`` page, as a web UI at the wrong URL does; ``--redirect-to URL`` answers every path
(``/_control`` aside) with a 307 to URL with the path added (before URL's query, if any). Every server records the ``Authorization`` headers
it received (``authorization`` in ``/_control/stats``), so a second server can show what a redirect leaked.

A *reply hook* (``--reply-hook module:function``) scripts replies for tests that need a model
to behave in a known way: it is called as ``function(body, index)`` and returns the reply's
content (finish reason ``stop``), a ``(content, finish_reason)`` pair (e.g. ``"length"`` for a reply cut by
max_tokens), a ``{"tool_calls": [{"name": ..., "arguments": {...}}, ...], "content": ...}`` mapping (tool calls in
OpenAI's form, finish reason ``tool_calls``), or None to fall back to the generated reply. Faults apply to hooked
replies as well.

Function calling: a request with ``tools`` (and ``tool_choice`` other than ``"none"``) whose last message is not a
tool result gets, by default, a call of the tool ``tool_choice`` names, else the first one, with arguments made
from its JSON schema (``schema_instance``); once a tool result is the last message, a text answer. The request
log records the tool names offered (``tools``).

Behaviours of modern hosted APIs, each off unless asked for:
``--reasoning`` adds a reasoning trace to each reply's message (``reasoning_content``, as vLLM's
reasoning parsers return it) and ``usage.completion_tokens_details.reasoning_tokens`` (its words,
which completion_tokens includes); ``--cached-prefix-tokens N`` reports
``usage.prompt_tokens_details.cached_tokens`` = min(N, prompt_tokens) when the prompt's first N
words were seen before; ``--max-inflight N`` answers 429 (``Retry-After``) to a request that
arrives while N are being worked on (a hidden concurrency limit); ``--reject-max-tokens``
answers 400 to a request that sends ``max_tokens`` (as hosted reasoning models do, which take
``max_completion_tokens``). The request log records which cap field a request sent (``cap``), the
``response_format`` type it asked for (or null) and its ``stop`` sequences (which replies ignore).
``--rpm N`` is a provider's per-minute request quota, enforced over one second as providers
quantize theirs (at most N/60 at once, refilled at N/60 per second; 429 with Retry-After above
it), and announced on every reply in ``x-ratelimit-limit-requests`` and
``x-ratelimit-remaining-requests``.

A path prefix before ``/v1/`` is ignored, as a gateway's account id or token in the base URL would be.

Several samples in one request: ``n`` choices come back, each its own deterministic reply (the choice
index is part of what a reply is a function of), with usage counting the prompt once and the
completion tokens of all choices summed; the request log records ``n``. ``--refuse-n`` answers 400 to
a request with n>1, as some servers do.

OpenAI's Batch API (``tests/fakebatch.py``, which documents the details): ``POST /v1/files``
(multipart upload), ``GET /v1/files/{id}`` and ``/v1/files/{id}/content``, ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``GET /v1/batches?limit=&after=`` and ``POST /v1/batches/{id}/cancel``,
for ``/v1/chat/completions`` batches.  A batch is ``validating``, then ``in_progress`` at 0.2·S
with its items answered over the next 0.6·S, then ``finalizing`` and ``completed`` at S
(``--batch-seconds S``, 0.5).  Items get the same replies as online requests (and respect
``--models``, ``--reject-max-tokens``, ``--refuse-n``), but not the online fault plan, latency,
capacity or ``--max-inflight``; the log gets one line per item, with a ``batch`` key.
``--batch-faults JSON`` gives the outcome of the 1st, 2nd, ... batch created: ``"ok"``,
``"fail"``, ``"expire"`` / ``{"expire": F}``, ``{"item_errors": R, "status": 500}``;
``--batch-item-error-rate R`` fails (500) an item whose custom_id never had an error before
with probability R.  ``GET /_control/batches`` lists every batch with its custom_ids.  Files and
batches live in memory for the server's lifetime (``/_control/reset`` forgets them).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import json
import math
import random
import select
import signal
import subprocess
import sys
import time
import traceback
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# Kinds that answer 200 with a changed completion (the rest answer otherwise).
CONTENT_FAULTS = frozenset({"schema_violation", "truncate", "parts", "empty", "content_filter", "bad_usage",
                            "no_message"})
FAULT_KINDS = frozenset({"rate_limit", "server_error", "drop", "hang", "not_json", "delay", "status"}) | CONTENT_FAULTS
VOCAB = (
    "alpha", "river", "compute", "signal", "harbor", "quiet", "lantern", "orbit", "meadow",
    "vector", "copper", "garden", "summit", "falcon", "ember", "prism", "delta", "willow",
    "canyon", "beacon", "marble", "thunder", "cobalt", "harvest", "pixel", "glacier", "rhythm",
    "saddle", "timber", "velvet", "anchor", "basalt", "cedar", "drift", "echo", "fable",
    "granite", "hollow", "island", "jasper", "kernel", "lagoon", "mosaic", "nectar", "oasis",
    "pepper", "quartz", "raven", "sierra", "tundra", "umber", "violet", "walnut", "yonder",
    "zephyr", "bridge", "candle", "ferry", "meadowlark", "north", "onyx", "parcel", "ripple",
    "stone",
)
REASONS = {200: "OK", 307: "Temporary Redirect", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
           415: "Unsupported Media Type", 422: "Unprocessable Entity", 429: "Too Many Requests",
           500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable"}
HTML_PAGE = b"<!doctype html><html><head><title>Chat UI</title></head><body><div id=app></div></body></html>"
DEEP = 10  # beyond this nesting depth, generators take the shortest valid path
_FORMATS = {"date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "time": "12:00:00",
            "email": "user@example.com", "uri": "https://example.com/item",
            "uuid": "00000000-0000-4000-8000-000000000000"}


# ----------------------------------------------------------------- hashing --
def canonical(obj: Any) -> bytes:
    """Canonical JSON encoding (sorted keys, compact) used for all hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(obj: Any) -> str:
    """Hex sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical(obj)).hexdigest()


def fraction(prompt_key: str, index: int) -> float:
    """Deterministic number in [0, 1) derived from a prompt key and a rule index."""
    raw = hashlib.sha256(f"{prompt_key}:{index}".encode()).digest()
    return int.from_bytes(raw[:7], "big") / 2**56


def _rng(seed: bytes) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(seed).digest(), "big"))


def _words(rng: random.Random, count: int) -> list[str]:
    return [rng.choice(VOCAB) for _ in range(count)]


# -------------------------------------------------------- schema instances --
def schema_instance(schema: dict[str, Any], seed: bytes) -> Any:
    """Return a JSON value valid against ``schema`` (common JSON Schema subset),
    chosen deterministically from ``seed``."""
    return _gen(schema, schema, _rng(seed), 0)


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    if not ref.startswith("#"):
        raise ValueError(f"unsupported $ref {ref!r}")
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _gen(node: Any, root: dict[str, Any], rng: random.Random, depth: int) -> Any:
    if not isinstance(node, dict) or not node:
        node = {"type": "string"}
    if "$ref" in node:
        return _gen(_resolve(node["$ref"], root), root, rng, depth + 1)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return rng.choice(node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [o for o in node[key] if o.get("type") != "null"]
            if not options or (depth > DEEP and len(options) < len(node[key])):
                return None
            return _gen(options[0], root, rng, depth + 1)
    if "allOf" in node:
        merged = {k: v for k, v in node.items() if k != "allOf"}
        for sub in node["allOf"]:
            merged.update(_resolve(sub["$ref"], root) if "$ref" in sub else sub)
        return _gen(merged, root, rng, depth + 1)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((t for t in kind if t != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in node else "array" if "items" in node else "string"
    return _GENERATORS[kind](node, root, rng, depth)


def _gen_object(node: dict[str, Any], root: dict[str, Any], rng: random.Random,
                depth: int) -> dict[str, Any]:
    required = set(node.get("required", ()))
    out = {name: _gen(sub, root, rng, depth + 1) for name, sub in node.get("properties", {}).items()
           if depth <= DEEP or name in required}
    extra = node.get("additionalProperties")
    if not out and isinstance(extra, dict) and depth <= DEEP:
        out[rng.choice(VOCAB)] = _gen(extra, root, rng, depth + 1)
    return out


def _gen_array(node: dict[str, Any], root: dict[str, Any], rng: random.Random,
               depth: int) -> list[Any]:
    prefix = node.get("prefixItems", [])
    low = node.get("minItems", len(prefix) or (1 if depth <= DEEP else 0))
    high = low if depth > DEEP else node.get("maxItems", max(low, 3))
    if node.get("items") is False:
        high = min(high, len(prefix))
    items = node.get("items") or {}
    return [_gen(prefix[i] if i < len(prefix) else items, root, rng, depth + 1)
            for i in range(rng.randint(low, max(low, high)))]


def _gen_string(node: dict[str, Any], _root: Any, rng: random.Random, _depth: int) -> str:
    if node.get("format") in _FORMATS:
        return _FORMATS[node["format"]]
    low, high = node.get("minLength", 0), node.get("maxLength")
    text = " ".join(_words(rng, rng.randint(6, 10)))
    while len(text) < low:
        text += " " + rng.choice(VOCAB)
    if high is not None and len(text) > high:
        text = text[:high]
        cut = text.rfind(" ")
        text = text[:cut] if cut >= max(low, 1) else text.replace(" ", "x")
    return text


def _gen_number(node: dict[str, Any], _root: Any, rng: random.Random, _depth: int) -> float | int:
    declared = node.get("type")
    types: list[Any] = declared if isinstance(declared, list) else [declared]
    lo, lo_x = _bound(node, "minimum", "exclusiveMinimum", lower=True)
    hi, hi_x = _bound(node, "maximum", "exclusiveMaximum", lower=False)
    if lo is None:
        lo, lo_x = (0 if hi is None else min(0, hi - 100)), False
    if hi is None:
        hi, hi_x = max(lo + 100, 100), False
    if "integer" in types:
        ilo = math.floor(lo) + 1 if lo_x else math.ceil(lo)
        ihi = math.ceil(hi) - 1 if hi_x else math.floor(hi)
        return rng.randint(ilo, max(ilo, ihi))
    value = round(lo + (hi - lo) * (0.05 + 0.9 * rng.random()), 3)
    above = lo < value or (not lo_x and lo == value)
    below = value < hi or (not hi_x and value == hi)
    return value if above and below else (lo + hi) / 2


def _bound(node: dict[str, Any], inclusive: str, exclusive: str,
           lower: bool) -> tuple[float | None, bool]:
    """Tightest bound among ``inclusive``/``exclusive`` keywords as (value, is_exclusive)."""
    found = [(node[key], key == exclusive) for key in (inclusive, exclusive)
             if isinstance(node.get(key), (int, float)) and not isinstance(node[key], bool)]
    if not found:
        return None, False
    if lower:
        return max(found, key=lambda b: (b[0], b[1]))
    return min(found, key=lambda b: (b[0], not b[1]))


def _gen_boolean(_node: dict[str, Any], _root: Any, rng: random.Random, _depth: int) -> bool:
    return rng.random() < 0.5


def _gen_null(_node: dict[str, Any], _root: Any, _rng: random.Random, _depth: int) -> None:
    return None


_GENERATORS: dict[str, Callable[[dict[str, Any], dict[str, Any], random.Random, int], Any]] = {
    "object": _gen_object, "array": _gen_array, "string": _gen_string, "integer": _gen_number,
    "number": _gen_number, "boolean": _gen_boolean, "null": _gen_null,
}


# --------------------------------------------------------------- replies --
def build_reply(body: dict[str, Any], index: int) -> tuple[str, str]:
    """Return (content, finish_reason) for one choice of a chat request."""
    key = canonical({"model": body.get("model"), "messages": body.get("messages"),
                     "seed": body.get("seed"), "temperature": body.get("temperature"),
                     "index": index})
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        return json.dumps(schema_instance(schema, key)), "stop"
    rng = _rng(key)
    if fmt.get("type") == "json_object":
        return json.dumps({"text": " ".join(_words(rng, rng.randint(8, 16)))}), "stop"
    words = _words(rng, rng.randint(24, 40))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and 0 < limit < len(words):
        return " ".join(words[:limit]), "length"
    return " ".join(words), "stop"


def default_tool_calls(body: dict[str, Any], index: int) -> dict[str, Any] | None:
    """The default reply to a request that offers tools: a call of one (arguments from its schema) until a tool result
    is the last message; None (a text reply) after that, with tool_choice "none", or without tools."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    messages = body.get("messages") or []
    if not tools or choice == "none" or (messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"):
        return None
    wanted = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    tool = next((t for t in tools if t.get("function", {}).get("name") == wanted), tools[0]).get("function", {})
    key = canonical({"model": body.get("model"), "messages": messages, "index": index, "part": "tool"})
    arguments = schema_instance(tool.get("parameters") or {"type": "object"}, key)
    return {"tool_calls": [{"name": tool.get("name", ""), "arguments": arguments}]}


def build_reasoning(body: dict[str, Any], index: int) -> str:
    """A deterministic reasoning trace for one choice (``--reasoning``)."""
    rng = _rng(canonical({"model": body.get("model"), "messages": body.get("messages"),
                          "seed": body.get("seed"), "temperature": body.get("temperature"),
                          "index": index, "part": "reasoning"}))
    steps = [" ".join(_words(rng, rng.randint(4, 8))) for _ in range(rng.randint(2, 4))]
    return "Let me think. " + ". ".join(steps) + "."


def _corrupt(content: str, finish: str, fault: str | None, body: dict[str, Any]) -> tuple[str, str]:
    """Apply content-level faults (schema_violation, truncate, empty, content_filter)."""
    if fault == "schema_violation":
        schema_fmt = (body.get("response_format") or {}).get("type") == "json_schema"
        return ('{"unexpected": true}' if schema_fmt else "Sorry, I cannot help with that."), "stop"
    if fault == "truncate":
        return content[: len(content) // 2], "length"
    if fault == "empty":
        return "", "stop"
    if fault == "content_filter":
        return content[: len(content) // 3], "content_filter"
    return content, finish


def _as_parts(content: str) -> list[dict[str, Any]]:
    """Content as a gateway's list of parts: the text split in two text parts around a part of another type."""
    half = len(content) // 2
    return [{"type": "text", "text": content[:half]}, {"type": "image_url", "image_url": {"url": "data:,"}},
            {"type": "text", "text": content[half:]}]


def _logprobs(content: str, index: int, key: str) -> dict[str, Any]:
    rng = _rng(f"{key}:logprobs:{index}".encode())
    return {"content": [{"token": tok, "logprob": -round(0.001 + 3 * rng.random(), 4),
                         "bytes": None, "top_logprobs": []} for tok in content.split()]}


def _count_words(messages: list[Any]) -> int:
    total = 0
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            total += sum(len(str(p.get("text", "")).split()) for p in content if isinstance(p, dict))
    return total


def parse_plan(plan: Any) -> list[dict[str, Any]]:
    """Validate a fault plan (list of rules, or ``{"faults": [...]}``) and fill defaults."""
    if isinstance(plan, dict):
        plan = plan.get("faults")
    if not isinstance(plan, list):
        raise ValueError("fault plan must be a JSON list of rules")
    rules = []
    for rule in plan:
        if not isinstance(rule, dict) or rule.get("kind") not in FAULT_KINDS:
            raise ValueError(f"bad fault rule {rule!r}; kinds: {sorted(FAULT_KINDS)}")
        rules.append({**rule, "rate": float(rule.get("rate", 1.0)),
                      "times": int(rule.get("times", 1))})
    return rules


# ---------------------------------------------------------------- server --
@dataclass
class Response:
    """An HTTP response; always sent with Content-Length."""
    status: int
    body: bytes
    headers: tuple[str, ...] = ()
    content_type: str = "application/json"

    def encode(self, keep_alive: bool) -> bytes:
        head = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}",
                f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}",
                "Connection: keep-alive" if keep_alive else "Connection: close", *self.headers]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


def _parse_head(head: bytes) -> tuple[str, str, str, str, dict[str, str]]:
    """Split a request head into (method, path, query string, version, lower-cased headers)."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    path, _, query = target.partition("?")
    return method, path, query, version, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Read a ``Transfer-Encoding: chunked`` body (as httpx sends an upload of unknown size)."""
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _json(status: int, obj: Any, headers: tuple[str, ...] = ()) -> Response:
    return Response(status, json.dumps(obj).encode(), headers)


def _error(status: int, message: str, etype: str, code: str | None = None,
           headers: tuple[str, ...] = ()) -> Response:
    return _json(status, {"error": {"message": message, "type": etype, "param": None,
                                    "code": code}}, headers)


class FakeServer:
    """The asyncio server: routing, fault matching, request log and counters."""

    def __init__(self, latency_ms: float = 0, faults: list[dict[str, Any]] | None = None,
                 models: list[str] | None = None, log_path: str | None = None,
                 log_sync: bool = False, reply_hook: str | None = None, capacity: int = 0,
                 reasoning: bool = False, cached_prefix_tokens: int = 0, max_inflight: int = 0,
                 inflight_retry_after: float = 0.1, reject_max_tokens: bool = False,
                 refuse_n: bool = False, batch_seconds: float = 0.5, batch_faults: Any = None,
                 batch_item_error_rate: float = 0.0, rpm: int = 0, html: bool = False,
                 redirect_to: str | None = None) -> None:
        # Imported here, not at the top: tests.fakebatch imports this module.
        from tests.fakebatch import BatchService
        self.latency = latency_ms / 1000
        self.reasoning = reasoning
        self.cached_prefix_tokens = cached_prefix_tokens
        self._prefixes: set[str] = set()
        # max_inflight > 0: a request arriving while that many are worked on gets a 429 at once.
        self.max_inflight = max_inflight
        self.inflight_retry_after = inflight_retry_after
        self.inflight = 0
        self.reject_max_tokens = reject_max_tokens
        self.refuse_n = refuse_n
        self.html, self.redirect_to = html, redirect_to  # hostile hosts: a web page, a redirect, at every path
        self.authorization: list[str] = []  # the Authorization headers received (what a redirect leaked)
        # rpm > 0: a per-minute request quota, enforced over one second as providers quantize theirs (a bucket
        # of rpm/60 requests refilled at rpm/60 per second), announced in x-ratelimit-* headers.
        self.rpm = rpm
        self._quota = max(1.0, rpm / 60)
        self._quota_level = self._quota
        self._quota_stamp = time.monotonic()
        # capacity > 0: at most that many requests are worked on at once, the rest wait (a server's
        # throughput limit, capacity / latency requests per second), as a GPU server's batch is bounded.
        self.capacity = asyncio.Semaphore(capacity) if capacity > 0 else None
        self.hook = _load_hook(reply_hook) if reply_hook else None
        self.faults = parse_plan(faults or [])
        self.models = list(models or [])
        self.log_sync = log_sync
        self._log: IO[str] | None = open(log_path, "a", encoding="utf-8", buffering=1 << 16) \
            if log_path else None
        self._attempts: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._completions = 0
        self.batch = BatchService(self, batch_seconds, batch_faults, batch_item_error_rate)

    async def start(self, host: str, port: int) -> int:
        """Start listening; return the bound port."""
        self._server = await asyncio.start_server(self._serve, host, port, backlog=2048,
                                                  limit=1 << 20)
        self._flusher = asyncio.create_task(self._flush_loop())
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, cancel open connections, flush the log."""
        if self._server:
            self._server.close()
        self.batch.close()
        for task in [*self._tasks, *([self._flusher] if self._flusher else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._log:
            self._log.close()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self._log:
                self._log.flush()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one keep-alive connection until it closes."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats["connections_total"] += 1
        try:
            while await self._handle_one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                asyncio.CancelledError):
            pass  # client went away, oversized head, or server shutdown
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handle_one(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> bool:
        """Read and answer one request; return whether to keep the connection open."""
        head = await reader.readuntil(b"\r\n\r\n")
        try:
            method, path, query, version, headers = _parse_head(head)
            length = int(headers.get("content-length") or 0)
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = await _read_chunked(reader)
            else:
                body = await reader.readexactly(length) if length else b""
        except ValueError:
            writer.write(_error(400, "malformed HTTP request", "invalid_request_error").encode(False))
            return False
        try:
            response = await self._dispatch(method, path, body, reader, headers, query)
        except Exception as exc:  # a bug here must not look like an injected fault
            traceback.print_exc()
            response = _error(500, f"fakeserver internal error: {exc!r}", "server_error")
        if response is None:
            return False
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        self.stats[f"status_{response.status}"] += 1
        writer.write(response.encode(keep))
        await writer.drain()
        return keep

    async def _dispatch(self, method: str, path: str, body: bytes, reader: asyncio.StreamReader,
                        headers: dict[str, str] | None = None, query: str = "") -> Response | None:
        self.stats["requests"] += 1
        if "/v1/" in path and not path.startswith("/v1/"):  # a gateway's prefix (account id, token): /TOKEN/v1/...
            path = path[path.index("/v1/"):]
        route = (method, path.rstrip("/"))
        if not path.startswith("/_control/"):
            if (headers or {}).get("authorization"):
                self.authorization.append((headers or {})["authorization"])
            if self.html:
                return Response(200, HTML_PAGE, content_type="text/html; charset=utf-8")
            if self.redirect_to:
                base, mark, rest = self.redirect_to.partition("?")
                return Response(307, b"", (f"Location: {base.rstrip('/')}{path}{mark}{rest}",), "text/plain")
        if route in {("POST", "/v1/chat/completions"), ("POST", "/chat/completions")}:
            return await self._chat(body, reader)
        if route == ("GET", "/health"):
            return _json(200, {"status": "ok"})
        if route in {("GET", "/v1/models"), ("GET", "/models")}:
            return _json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "fakeserver"}
                for m in self.models]})
        if path.startswith(("/v1/files", "/v1/batches", "/files", "/batches")):
            reply = await self.batch.handle(method, path, query, headers or {}, body)
            if reply is not None:
                return None if reply.status == 0 else reply  # status 0: drop the connection unanswered
        return self._control(route, body)

    def _control(self, route: tuple[str, str], body: bytes) -> Response:
        if route == ("GET", "/_control/stats"):
            return _json(200, {**self.stats, "connections_open": len(self._tasks),
                               "faults": self.faults, "authorization": self.authorization})
        if route == ("POST", "/_control/faults"):
            try:
                self.faults = parse_plan(json.loads(body or b"[]"))
            except ValueError as exc:
                return _error(400, str(exc), "invalid_request_error")
            return _json(200, {"faults": self.faults})
        if route == ("POST", "/_control/flush"):
            if self._log:
                self._log.flush()
            return _json(200, {"ok": True})
        if route == ("POST", "/_control/reset"):
            self._attempts.clear()
            self.stats.clear()
            self._prefixes.clear()
            self.authorization.clear()
            self.batch.reset()
            return _json(200, {"ok": True})
        if route == ("GET", "/_control/batches"):
            return _json(200, self.batch.control())
        return _error(404, f"no route for {route[0]} {route[1]}", "invalid_request_error",
                      "not_found")

    def _match(self, prompt_key: str, attempt: int) -> dict[str, Any] | None:
        for index, rule in enumerate(self.faults):
            times = rule["times"]
            if (times == -1 or attempt < times) and fraction(prompt_key, index) < rule["rate"]:
                return rule
        return None

    async def _chat(self, raw: bytes, reader: asyncio.StreamReader) -> Response | None:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("body must be an object with a 'messages' list")
        except ValueError as exc:
            return _error(400, f"invalid request: {exc}", "invalid_request_error")
        model = body.get("model")
        if self.models and model not in self.models:
            return _error(404, f"The model `{model}` does not exist", "invalid_request_error",
                          "model_not_found")
        prompt_key = digest({"model": model, "messages": body["messages"], "seed": body.get("seed")})
        if self.max_inflight and self.inflight >= self.max_inflight:
            self.stats["rejected_inflight"] += 1
            return _error(429, f"Too many requests in flight (limit {self.max_inflight})", "requests",
                          "rate_limit_exceeded", (f"Retry-After: {self.inflight_retry_after}",))
        if self.rpm:
            return self._with_quota_headers(await self._quota_gate(body, model, prompt_key, reader))
        return await self._inflight(body, model, prompt_key, reader)

    async def _inflight(self, body: dict[str, Any], model: Any, prompt_key: str,
                        reader: asyncio.StreamReader) -> Response | None:
        self.inflight += 1
        self.stats["peak_inflight"] = max(self.stats["peak_inflight"], self.inflight)
        try:
            return await self._admitted(body, model, prompt_key, reader)
        finally:
            self.inflight -= 1

    async def _quota_gate(self, body: dict[str, Any], model: Any, prompt_key: str,
                          reader: asyncio.StreamReader) -> Response | None:
        """``--rpm``: 429 with Retry-After when the quota's bucket is empty, else answer (taking one request)."""
        now = time.monotonic()
        rate = self.rpm / 60
        self._quota_level = min(self._quota, self._quota_level + (now - self._quota_stamp) * rate)
        self._quota_stamp = now
        if self._quota_level < 1:
            self.stats["rejected_quota"] += 1
            wait = (1 - self._quota_level) / rate
            return _error(429, f"Rate limit reached for requests (limit {self.rpm} per minute)", "requests",
                          "rate_limit_exceeded", (f"Retry-After: {wait:.3f}",))
        self._quota_level -= 1
        return await self._inflight(body, model, prompt_key, reader)

    def _with_quota_headers(self, response: Response | None) -> Response | None:
        """A reply with the quota's x-ratelimit-* headers (the requests left this minute, at the current rate)."""
        if response is None:
            return None
        remaining = int(self.rpm * max(0.0, self._quota_level) / self._quota)
        return Response(response.status, response.body, (*response.headers, f"x-ratelimit-limit-requests: {self.rpm}",
                                                         f"x-ratelimit-remaining-requests: {remaining}"),
                        response.content_type)

    async def _admitted(self, body: dict[str, Any], model: Any, prompt_key: str,
                        reader: asyncio.StreamReader) -> Response | None:
        attempt = self._attempts[prompt_key]
        self._attempts[prompt_key] = attempt + 1
        rule = self._match(prompt_key, attempt)
        kind = rule["kind"] if rule else None
        self.stats["chat_requests"] += 1
        if kind:
            self.stats[f"fault_{kind}"] += 1
        if self._log:
            self._log.write(json.dumps({"t": time.time(), "prompt_key": prompt_key,
                                        "body_key": digest(body), "attempt": attempt,
                                        "fault": kind, "model": model,
                                        "cap": next((f for f in ("max_tokens", "max_completion_tokens")
                                                     if f in body), None),
                                        "n": body.get("n"),
                                        "response_format": (body.get("response_format") or {}).get("type"),
                                        "stop": body.get("stop"),
                                        "tools": [t.get("function", {}).get("name") for t in body.get("tools") or []
                                                  if isinstance(t, dict)] or None}) + "\n")
            if self.log_sync:
                self._log.flush()
        if self.reject_max_tokens and "max_tokens" in body:
            return _error(400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                          "Use 'max_completion_tokens' instead.", "invalid_request_error", "unsupported_parameter")
        if self.refuse_n and _n(body) > 1:
            return _error(400, "n > 1 is not supported by this server", "invalid_request_error", "unsupported_parameter")
        if self.capacity is not None:
            async with self.capacity:
                if self.latency:
                    await asyncio.sleep(self.latency)
                return await self._answer(body, rule, prompt_key, reader)
        if self.latency:
            await asyncio.sleep(self.latency)
        return await self._answer(body, rule, prompt_key, reader)

    async def _answer(self, body: dict[str, Any], rule: dict[str, Any] | None, prompt_key: str,
                      reader: asyncio.StreamReader) -> Response | None:
        kind = rule["kind"] if rule else None
        if rule is None or kind in CONTENT_FAULTS:
            return _json(200, self._completion(body, kind, prompt_key, rule))
        if kind == "rate_limit":
            return _error(429, "Rate limit reached (injected fault)", "requests",
                          "rate_limit_exceeded", (f"Retry-After: {rule.get('retry_after', 0.2)}",))
        if kind == "server_error":
            return _error(int(rule.get("status", 500)), "Injected server error", "server_error")
        if kind == "status":
            status = int(rule.get("status", 422))
            return _error(status, f"Injected status {status}", "invalid_request_error" if status < 500 else "server_error")
        if kind == "not_json":
            return Response(200, b"<html>upstream error</html>")
        if kind == "hang":
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(1), float(rule.get("hang_seconds", 3600)))
            return None
        if kind == "delay":
            await asyncio.sleep(float(rule.get("seconds", 1.0)))
            return _json(200, self._completion(body, None, prompt_key))
        return None  # drop

    def _completion(self, body: dict[str, Any], fault: str | None, prompt_key: str,
                    rule: dict[str, Any] | None = None) -> dict[str, Any]:
        choices, completion_tokens, reasoning_tokens = [], 0, 0
        for index in range(_n(body)):
            scripted = self.hook(body, index) if self.hook else None
            if scripted is None:
                scripted = default_tool_calls(body, index)
            calls = None
            if isinstance(scripted, dict):  # tool calls (and maybe text)
                calls = [{"id": f"call_{index}_{i}", "type": "function",
                          "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str) else json.dumps(c["arguments"])}}
                         for i, c in enumerate(scripted.get("tool_calls") or [])]
                scripted = (str(scripted.get("content") or ""), "tool_calls" if calls else "stop")
            reply = build_reply(body, index) if scripted is None else scripted if isinstance(scripted, tuple) else (scripted, "stop")
            content, finish = _corrupt(*reply, fault, body)
            completion_tokens += len(content.split())
            message: dict[str, Any] = {"role": "assistant", "content": _as_parts(content) if fault == "parts" else content}
            if calls:
                message["tool_calls"] = calls
                completion_tokens += sum(len(c["function"]["arguments"].split()) for c in calls)
            if self.reasoning:
                message["reasoning_content"] = build_reasoning(body, index)
                reasoning_tokens += len(message["reasoning_content"].split())
            choices.append({"index": index, "message": message,
                            "finish_reason": finish,
                            "logprobs": _logprobs(content, index, prompt_key)
                            if body.get("logprobs") else None})
            if fault == "no_message":
                del choices[-1]["message"]
        self._completions += 1
        prompt_tokens = _count_words(body["messages"])
        completion_tokens += reasoning_tokens
        usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                 "total_tokens": prompt_tokens + completion_tokens}
        if self.reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        if self.cached_prefix_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self._cached_tokens(body["messages"], prompt_tokens)}
        if fault == "bad_usage":
            usage = (rule or {}).get("usage", {"prompt_tokens": "many", "completion_tokens": None})
        return {"id": f"chatcmpl-fake{self._completions:010d}",
                "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"), "choices": choices, "system_fingerprint": "fp_fake",
                "usage": usage}

    def _cached_tokens(self, messages: list[Any], prompt_tokens: int) -> int:
        """min(N, prompt_tokens) when the prompt's first N words were seen before, else 0 (and remember them)."""
        words: list[str] = []
        for msg in messages:
            content = msg.get("content") if isinstance(msg, dict) else None
            words += content.split() if isinstance(content, str) else []
        prefix = digest(words[: self.cached_prefix_tokens])
        if prefix in self._prefixes:
            return min(self.cached_prefix_tokens, prompt_tokens)
        self._prefixes.add(prefix)
        return 0


def _n(body: dict[str, Any]) -> int:
    """How many choices a request asks for (``n``; 1 when absent)."""
    try:
        return max(1, int(body.get("n") or 1))
    except (TypeError, ValueError):
        return 1


def _load_hook(spec: str) -> Callable[[dict[str, Any], int], str | tuple[str, str] | None]:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"a reply hook is module:function, got {spec!r}")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


# ------------------------------------------------------------------- CLI --
async def _amain(args: argparse.Namespace) -> None:
    faults = json.loads(Path(args.faults_file).read_text()) if args.faults_file else \
        json.loads(args.faults or "[]")
    server = FakeServer(args.latency_ms, faults, [m for m in args.models.split(",") if m],
                        args.log, args.log_sync, args.reply_hook, args.capacity, args.reasoning,
                        args.cached_prefix_tokens, args.max_inflight, args.inflight_retry_after,
                        args.reject_max_tokens, args.refuse_n, batch_seconds=args.batch_seconds,
                        batch_faults=json.loads(args.batch_faults or "[]"),
                        batch_item_error_rate=args.batch_item_error_rate, rpm=args.rpm,
                        html=args.html, redirect_to=args.redirect_to)
    port = await server.start(args.host, args.port)
    print(f"READY http://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--models", default="", help="comma-separated; empty accepts any")
    parser.add_argument("--faults", help="fault plan as JSON")
    parser.add_argument("--faults-file", help="path of a JSON fault plan")
    parser.add_argument("--log", help="append one JSON line per chat request here")
    parser.add_argument("--log-sync", action="store_true", help="flush log before answering")
    parser.add_argument("--reply-hook", help="module:function scripting replies (see the module doc)")
    parser.add_argument("--capacity", type=int, default=0, help="requests worked on at once (0: no limit)")
    parser.add_argument("--reasoning", action="store_true",
                        help="add reasoning_content and usage.completion_tokens_details.reasoning_tokens")
    parser.add_argument("--cached-prefix-tokens", type=int, default=0,
                        help="report min(N, prompt_tokens) cached prompt tokens when the first N words were seen before")
    parser.add_argument("--max-inflight", type=int, default=0,
                        help="429 a request arriving while N are worked on (0: no limit)")
    parser.add_argument("--inflight-retry-after", type=float, default=0.1, help="Retry-After of those 429s")
    parser.add_argument("--reject-max-tokens", action="store_true",
                        help="400 for requests that send max_tokens (they must send max_completion_tokens)")
    parser.add_argument("--refuse-n", action="store_true", help="400 for requests with n > 1")
    parser.add_argument("--batch-seconds", type=float, default=0.5, help="how long a batch takes (Batch API)")
    parser.add_argument("--batch-faults", help='JSON list: outcome of the 1st, 2nd, ... batch ("ok", "fail", '
                        '"expire", {"expire": F}, {"item_errors": R, "status": 500})')
    parser.add_argument("--batch-item-error-rate", type=float, default=0.0,
                        help="500 for batch items whose custom_id never failed, with this probability")
    parser.add_argument("--rpm", type=int, default=0,
                        help="a per-minute request quota, enforced over one second (rpm/60 at once), with "
                        "x-ratelimit-limit-requests / x-ratelimit-remaining-requests headers (0: none)")
    parser.add_argument("--html", action="store_true", help="answer every path with a 200 HTML page (a web UI)")
    parser.add_argument("--redirect-to", help="answer every path with a 307 to this URL + the path")
    asyncio.run(_amain(parser.parse_args(argv)))


# ----------------------------------------------------------- test helper --
@dataclass
class ServerHandle:
    """A running fake server subprocess (see :func:`running_server`)."""
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path | None = None

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.root_url + path, data=data, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as reply:
            return json.loads(reply.read())

    def set_faults(self, faults: list[dict[str, Any]]) -> None:
        """Replace the fault plan."""
        self._call("POST", "/_control/faults", faults)

    def reset(self) -> None:
        """Forget attempt counts and counters."""
        self._call("POST", "/_control/reset", {})

    def stats(self) -> dict[str, Any]:
        """Server counters (requests, chat_requests, status_N, fault_K, connections...)."""
        return dict(self._call("GET", "/_control/stats"))

    def log_entries(self) -> list[dict[str, Any]]:
        """Flush the server's request log and return its parsed entries."""
        if self.log_path is None:
            raise RuntimeError("server was started without log_path")
        self._call("POST", "/_control/flush", {})
        with open(self.log_path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def batches(self) -> list[dict[str, Any]]:
        """Every batch created, oldest first: {id, status, input_file_id, custom_ids, metadata}."""
        return list(self._call("GET", "/_control/batches")["batches"])


def _await_ready(process: subprocess.Popen[bytes], timeout: float) -> int:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline().decode() if ready else ""
    if not line.startswith("READY "):
        raise RuntimeError(f"fake server did not start (exit={process.poll()}, line={line!r})")
    return int(line.rsplit(":", 1)[1])


@contextlib.contextmanager
def running_server(latency_ms: float = 0, faults: list[dict[str, Any]] | None = None,
                   models: list[str] | None = None, log_path: str | Path | None = None,
                   log_sync: bool = False, reply_hook: str | None = None, capacity: int = 0,
                   reasoning: bool = False, cached_prefix_tokens: int = 0, max_inflight: int = 0,
                   inflight_retry_after: float = 0.1, reject_max_tokens: bool = False,
                   refuse_n: bool = False, batch_seconds: float = 0.5, batch_faults: list[Any] | None = None,
                   batch_item_error_rate: float = 0.0, rpm: int = 0, html: bool = False,
                   redirect_to: str | None = None) -> Iterator[ServerHandle]:
    """Run the fake server as a subprocess for the duration of the block."""
    cmd = [sys.executable, "-m", "tests.fakeserver", "--port", "0", "--latency-ms", str(latency_ms)]
    cmd += ["--faults", json.dumps(faults)] if faults else []
    cmd += ["--models", ",".join(models)] if models else []
    cmd += ["--log", str(log_path)] if log_path else []
    cmd += ["--log-sync"] if log_sync else []
    cmd += ["--reply-hook", reply_hook] if reply_hook else []
    cmd += ["--capacity", str(capacity)] if capacity else []
    cmd += ["--reasoning"] if reasoning else []
    cmd += ["--cached-prefix-tokens", str(cached_prefix_tokens)] if cached_prefix_tokens else []
    cmd += ["--max-inflight", str(max_inflight), "--inflight-retry-after", str(inflight_retry_after)] if max_inflight else []
    cmd += ["--reject-max-tokens"] if reject_max_tokens else []
    cmd += ["--refuse-n"] if refuse_n else []
    cmd += ["--batch-seconds", str(batch_seconds)] if batch_seconds != 0.5 else []
    cmd += ["--batch-faults", json.dumps(batch_faults)] if batch_faults else []
    cmd += ["--batch-item-error-rate", str(batch_item_error_rate)] if batch_item_error_rate else []
    cmd += ["--rpm", str(rpm)] if rpm else []
    cmd += ["--html"] if html else []
    cmd += ["--redirect-to", redirect_to] if redirect_to else []
    process = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE)
    try:
        port = _await_ready(process, timeout=30)
        yield ServerHandle("127.0.0.1", port, process, Path(log_path) if log_path else None)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


if __name__ == "__main__":
    main()
