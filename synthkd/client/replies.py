"""Replies as they come back: the choices and usage of a completion, turned into cache entries
(`CachedReply`), and a cached reply checked against what was asked (an answer at all, truncation,
schema) as a `Result`. Pure functions: tested without a network.

Replies are normalised as providers and gateways send them (content as a list of parts, counts as
strings or null); turning a reply into a cache entry never raises, so a paid reply is always stored:
one that cannot be read is stored as `unusable` (its raw body) and fails its row on every rerun, unpaid."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from synthkd.client.cache import CachedReply
from synthkd.client.wire import ChatCompletion, ReplyChoice, ReplyMessage, Usage
from synthkd.config.endpoints import EndpointConfig
from synthkd.tools.wire import ToolCall


# The finish_reason under which a paid reply that cannot be read is stored: its text is the raw body (cut
# at RAW_LIMIT), its reasoning says why. A rerun reads it from the cache and fails the row again, unpaid.
UNUSABLE = "synthkd:unusable_reply"
# The finish_reason a refusal is stored under (message.refusal, no content); its text is the refusal.
REFUSAL = "refusal"
# Failures another attempt of the same request would only repeat (and pay for again): not retried.
SETTLED_ERRORS = frozenset({"unusable_reply", "content_filter", "refusal"})
RAW_LIMIT = 16_000  # characters of an unreadable reply kept in the cache and the failed row
_DETAIL = 300  # characters of a reply quoted in a failure's detail
_MAX_TOKENS = 10**12  # a token count above this is not a count (and would not fit SQLite's INTEGER)


@dataclass(slots=True)
class Result:
    """What came back for a Call. `error` is None on success, else a short reason code."""

    text: str | None
    parsed: Any = None
    finish_reason: str | None = None
    error: str | None = None
    detail: str | None = None
    cached: bool = False
    logprobs: list[float] | None = None
    reasoning: str | None = None  # the reasoning trace, when the reply carries one apart from its content
    tool_calls: list[ToolCall] | None = None  # the functions the model asked to call (OpenAI `tool_calls`)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def settled(self) -> bool:
        """True when another attempt would not help: the reply is usable, or its failure would repeat."""
        return self.error is None or self.error in SETTLED_ERRORS

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class _Unusable(Exception):
    """A reply (or one choice of it) with nothing synthkd can read as an answer; the message says why."""


def _clean(text: str) -> str:
    """`text` as UTF-8 can hold it: lone surrogates (valid in JSON escapes, not in UTF-8) become '?'."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _raw(value: Any) -> str:
    """A reply or choice as JSON text, for the record of what came back (cut at RAW_LIMIT characters)."""
    return _clean(json.dumps(value, ensure_ascii=False, default=str)[:RAW_LIMIT])


def _parts_text(value: Any) -> str | None:
    """The text of a message field: a string, or a list of parts whose text parts are joined (others ignored).

    None when the field holds no text form at all (a number, say)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return None
    texts = []
    for part in value:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type", "text") in ("text", "output_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return "".join(texts)


def _reasoning(message: ReplyMessage) -> str | None:
    """The reasoning trace a message carries apart from its content, as text (None: none)."""
    # vLLM's reasoning parsers and several providers return the trace apart from the answer.
    value = message.get("reasoning_content") or message.get("reasoning")
    if not value:
        return None
    text = value if isinstance(value, str) else _parts_text(value) if isinstance(value, list) else None
    return _clean(text or json.dumps(value, ensure_ascii=False, default=str))


def _logprobs(choice: ReplyChoice) -> list[float] | None:
    """The per-token logprobs of a choice; None when it has none, or any of them is not a finite number."""
    block = choice.get("logprobs")
    content = block.get("content") if isinstance(block, dict) else None
    if not isinstance(content, list) or not content:
        return None
    try:
        values = [float(t["logprob"]) for t in content]
    except (TypeError, KeyError, ValueError):
        return None
    return values if all(math.isfinite(v) for v in values) else None


Choice = tuple[str, str | None, list[float] | None, str | None, list[ToolCall] | None]


def _choice(choice: ReplyChoice) -> Choice:
    """(content, reasoning trace, logprobs, finish_reason, tool calls) of one choice; raises _Unusable when it has
    none to read."""
    if not isinstance(choice, dict):
        raise _Unusable("a choice is not an object")
    finish_reason = choice.get("finish_reason")
    finish = _clean(finish_reason[:100]) if isinstance(finish_reason, str) else None
    message = choice.get("message")
    if message is None and isinstance(choice.get("text"), str):
        return _clean(choice["text"]), None, _logprobs(choice), finish, None  # the legacy completions shape
    if not isinstance(message, dict):
        raise _Unusable("the choice has no message")
    text = _parts_text(message.get("content"))
    if text is None:
        raise _Unusable(f"message.content is a {type(message['content']).__name__}, not text")
    calls = _tool_calls(message.get("tool_calls"))
    refusal = message.get("refusal")
    if not text.strip() and not calls and isinstance(refusal, str) and refusal.strip():
        return _clean(refusal), None, None, REFUSAL, None
    return _clean(text), _reasoning(message), _logprobs(choice), finish, calls


def _tool_calls(value: Any) -> list[ToolCall] | None:
    """message.tool_calls in OpenAI's form ({id, type: function, function: {name, arguments: JSON text}}), or None.

    Arguments sent as an object (some servers do) are kept as JSON text; an entry that names no function is kept
    as it came, for the stage to record as a failed tool call."""
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise _Unusable(f"message.tool_calls is a {type(value).__name__}, not a list")
    calls: list[ToolCall] = []
    for i, item in enumerate(value):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            calls.append({"id": f"call_{i}", "type": "function", "function": {"name": "", "arguments": _raw(item)}})
            continue
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
        call_id = item.get("id") if isinstance(item.get("id"), str) and item.get("id") else f"call_{i}"
        calls.append({"id": _clean(call_id), "type": "function", "function": {"name": _clean(function["name"]), "arguments": _clean(arguments)}})
    return calls


def _count(value: Any) -> int:
    """A token count as a provider sent it (an int, a float, a numeric string); 0 when it is not one."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):  # before float(): an int too large for a float is still a (capped) count
        return min(value, _MAX_TOKENS) if value > 0 else 0
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return 0
    if not isinstance(value, float) or not math.isfinite(value) or value <= 0:
        return 0
    return int(min(value, _MAX_TOKENS))


def _usage(completion: ChatCompletion) -> tuple[int, int, int, int]:
    """(prompt, completion, reasoning, cached prompt) tokens of a reply's usage; what is not a count reads as 0."""
    usage = completion.get("usage") if isinstance(completion, dict) else None
    if not isinstance(usage, dict):
        return 0, 0, 0, 0
    pt, ct = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    return (pt, ct, min(ct, _detail(usage, "completion_tokens_details", "reasoning_tokens")),
            min(pt, _detail(usage, "prompt_tokens_details", "cached_tokens")))


def _choices(completion: ChatCompletion) -> list[ReplyChoice]:
    """The choices of a completion; raises _Unusable when it has none."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not isinstance(choices, list) or not choices:
        raise _Unusable("the reply has no list of choices")
    return choices


def unusable(raw: str, why: str, prompt_tokens: int = 0, completion_tokens: int = 0, cost: float = 0.0) -> CachedReply:
    """The stored form of a paid reply that cannot be read: kept (raw, cut) so a rerun fails its row without paying."""
    return CachedReply(raw[:RAW_LIMIT], UNUSABLE, prompt_tokens, completion_tokens, cost, reasoning=why)


def to_cached(completion: ChatCompletion, config: EndpointConfig, price_factor: float = 1.0) -> CachedReply:
    """The stored reply of a one-choice completion; `price_factor`: its price relative to online (batch replies).

    Never raises: a reply that cannot be read is stored as `unusable` (with the cost its usage shows)."""
    pt, ct, rt, cached = _usage(completion)
    cost = config.prices.cost(pt, ct, cached) * price_factor
    try:
        text, reasoning, logprobs, finish, calls = _choice(_choices(completion)[0])
    except _Unusable as exc:
        return unusable(_raw(completion), str(exc), pt, ct, cost)
    return CachedReply(text, finish, pt, ct, cost, logprobs, reasoning, rt, cached, calls)


def to_cached_n(completion: ChatCompletion, config: EndpointConfig, asked: int, price_factor: float = 1.0) -> list[CachedReply]:
    """One stored reply per choice (by `index`, at most `asked`) of a request with `n`.

    The usage is the request's: the prompt billed once, the completion tokens summed over the choices. The
    first reply carries all the prompt tokens (and the cached ones) and their cost; each reply carries its
    share of the completion tokens (its logprob tokens when every choice has them, else in proportion to its
    characters; the reasoning tokens in proportion to its trace), so the replies add up to what was billed.
    Never raises: a choice that cannot be read is stored as `unusable`; a reply without choices gives
    `asked` unusable replies (the first with the request's cost).
    """
    pt, ct, rt, cached = _usage(completion)
    try:
        listed = _choices(completion)
    except _Unusable as exc:
        raw = _raw(completion)
        return [unusable(raw, str(exc), pt if j == 0 else 0, ct if j == 0 else 0,
                         config.prices.cost(pt, ct, cached) * price_factor if j == 0 else 0.0) for j in range(asked)]
    choices = sorted(listed, key=_index)[:asked]
    parts: list[Choice | str] = []
    for choice in choices:
        try:
            parts.append(_choice(choice))
        except _Unusable as exc:
            parts.append(str(exc))
    read = [p if isinstance(p, tuple) else ("", None, None, None, None) for p in parts]
    reasoning_shares = _apportion(rt, [len(r or "") for _, r, _, _, _ in read])
    by_tokens = all(lp is not None for _, _, lp, _, _ in read)
    answer_shares = _apportion(ct - rt, [len(lp) if by_tokens and lp is not None else len(t) for t, _, lp, _, _ in read])
    replies = []
    for j, (choice, part) in enumerate(zip(choices, parts)):
        p, c, r, k = (pt if j == 0 else 0), answer_shares[j] + reasoning_shares[j], reasoning_shares[j], (cached if j == 0 else 0)
        cost = config.prices.cost(p, c, k) * price_factor
        if isinstance(part, str):
            replies.append(unusable(_raw(choice), part, p, c, cost))
        else:
            text, reasoning, logprobs, finish, calls = part
            replies.append(CachedReply(text, finish, p, c, cost, logprobs, reasoning, r, k, calls))
    return replies


def _index(choice: ReplyChoice) -> int:
    """A choice's `index`, for sorting the choices of a reply (0 when it has none, or is not an object)."""
    index = choice.get("index") if isinstance(choice, dict) else None
    return index if isinstance(index, int) else 0


def _apportion(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights` into whole numbers that add up to it (largest remainders)."""
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    shares = [int(x) for x in exact]
    for j in sorted(range(len(weights)), key=lambda j: exact[j] - shares[j], reverse=True)[: total - sum(shares)]:
        shares[j] += 1
    return shares


def _detail(usage: Usage, block: Literal["completion_tokens_details", "prompt_tokens_details"],
            key: Literal["reasoning_tokens", "cached_tokens"]) -> int:
    """A count inside usage's *_details block (absent, null or not a count: 0)."""
    details = usage.get(block)
    return _count(details.get(key)) if isinstance(details, dict) else 0


def interpret(reply: CachedReply, schema: type[BaseModel] | None, cached: bool) -> Result:
    """Check a reply against what was asked: an answer at all (not filtered, refused or unreadable), truncation
    and schema validity."""
    if reply.finish_reason == UNUSABLE:
        return Result(text=reply.text, finish_reason=None, cached=cached, error="unusable_reply",
                      detail=f"{reply.reasoning or 'the reply could not be read'}: {reply.text[:_DETAIL]}")
    base = dict(text=reply.text, finish_reason=reply.finish_reason, cached=cached, logprobs=reply.logprobs, reasoning=reply.reasoning,
                tool_calls=reply.tool_calls)
    unanswered = _unanswered(reply)
    if unanswered is not None:
        return Result(**base, error=unanswered[0], detail=unanswered[1])
    if schema is None:
        return Result(**base)
    if reply.finish_reason == "length":
        return Result(**base, error="truncated", detail="reply cut by max_tokens before the JSON closed")
    try:
        return Result(**base, parsed=schema.model_validate_json(reply.text))
    except ValidationError as exc:
        first = exc.errors()[0]
    if first["type"] == "json_invalid":
        # Many models (and grammar engines) put raw newlines or control characters inside JSON
        # strings; strict JSON forbids them, Python's lenient parser does not. Accept such replies.
        try:
            return Result(**base, parsed=schema.model_validate(json.loads(reply.text, strict=False)))
        except json.JSONDecodeError:
            return Result(**base, error="invalid_json", detail=str(first["msg"])[:300])
        except ValidationError as exc:
            first = exc.errors()[0]
    return Result(**base, error="schema_violation", detail=str(first["msg"])[:300])


def _unanswered(reply: CachedReply) -> tuple[str, str] | None:
    """(reason, detail) when a readable reply is no answer at all: filtered or refused.

    An empty reply is an answer here (a student that says nothing scores 0 in an evaluation); stages that
    keep replies as training data fail it themselves (`empty_detail`)."""
    if reply.finish_reason == "content_filter":
        return "content_filter", "the provider's content filter stopped the reply"
    if reply.finish_reason == REFUSAL:
        return "refusal", f"the model refused: {reply.text[:_DETAIL]}"
    return None


def empty_detail(result: Result) -> str | None:
    """Why a usable reply has no text to keep (the detail of an `empty_reply` failed row), or None when it has."""
    if (result.text or "").strip():
        return None
    if result.finish_reason == "length":
        spent = " (on its reasoning trace)" if result.reasoning else ""
        return f"the reply-token cap (max_tokens) was reached before any answer{spent}"
    if result.reasoning:
        return "the reply has a reasoning trace but no answer"
    return f"the reply's content is empty (finish_reason={result.finish_reason})"
