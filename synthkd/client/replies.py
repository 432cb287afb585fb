"""Replies as they come back: the choices and usage of a completion, turned into cache entries
(`CachedReply`), and a cached reply checked against what was asked (truncation, schema) as a `Result`.
Pure functions: tested without a network."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from synthkd.client.cache import CachedReply
from synthkd.config.endpoints import EndpointConfig


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

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


def _choice(choice: dict[str, Any]) -> tuple[str, str | None, list[float] | None]:
    """(content, reasoning trace, logprobs) of one choice of a reply."""
    message = choice.get("message") or {}
    text = message.get("content") or ""
    # vLLM's reasoning parsers and several providers return the trace apart from the answer.
    reasoning = message.get("reasoning_content") or message.get("reasoning") or None
    if reasoning is not None and not isinstance(reasoning, str):
        reasoning = json.dumps(reasoning, ensure_ascii=False)
    logprobs = None
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if content:
        logprobs = [float(t["logprob"]) for t in content]
    return text, reasoning, logprobs


def _usage(completion: dict[str, Any]) -> tuple[int, int, int, int]:
    """(prompt, completion, reasoning, cached prompt) tokens of a reply's usage."""
    usage = completion.get("usage") or {}
    return (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
            _detail(usage, "completion_tokens_details", "reasoning_tokens"), _detail(usage, "prompt_tokens_details", "cached_tokens"))


def to_cached(completion: dict[str, Any], config: EndpointConfig, price_factor: float = 1.0) -> CachedReply:
    """The stored reply of a one-choice completion; `price_factor`: its price relative to online (batch replies)."""
    choice = completion["choices"][0]
    text, reasoning, logprobs = _choice(choice)
    pt, ct, rt, cached = _usage(completion)
    return CachedReply(text, choice.get("finish_reason"), pt, ct, config.prices.cost(pt, ct, cached) * price_factor, logprobs,
                       reasoning, rt, cached)


def to_cached_n(completion: dict[str, Any], config: EndpointConfig, asked: int, price_factor: float = 1.0) -> list[CachedReply]:
    """One stored reply per choice (by `index`, at most `asked`) of a request with `n`.

    The usage is the request's: the prompt billed once, the completion tokens summed over the choices. The
    first reply carries all the prompt tokens (and the cached ones) and their cost; each reply carries its
    share of the completion tokens (its logprob tokens when every choice has them, else in proportion to its
    characters; the reasoning tokens in proportion to its trace), so the replies add up to what was billed.
    """
    choices = sorted(completion["choices"], key=lambda c: c.get("index") if isinstance(c.get("index"), int) else 0)[:asked]
    parts = [_choice(c) for c in choices]
    pt, ct, rt, cached = _usage(completion)
    rt = min(rt, ct)
    reasoning_shares = _apportion(rt, [len(r or "") for _, r, _ in parts])
    by_tokens = all(lp is not None for _, _, lp in parts)
    answer_shares = _apportion(ct - rt, [len(lp) if by_tokens and lp is not None else len(t) for t, _, lp in parts])
    replies = []
    for j, (choice, (text, reasoning, logprobs)) in enumerate(zip(choices, parts)):
        p, c, r, k = (pt if j == 0 else 0), answer_shares[j] + reasoning_shares[j], reasoning_shares[j], (cached if j == 0 else 0)
        replies.append(CachedReply(text, choice.get("finish_reason"), p, c, config.prices.cost(p, c, k) * price_factor,
                                   logprobs, reasoning, r, k))
    return replies


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


def _detail(usage: dict[str, Any], block: str, key: str) -> int:
    """A count inside usage's *_details block (absent or null: 0)."""
    details = usage.get(block)
    return int(details.get(key) or 0) if isinstance(details, dict) else 0


def interpret(reply: CachedReply, schema: type[BaseModel] | None, cached: bool) -> Result:
    """Check a reply against what was asked: truncation and schema validity."""
    base = dict(text=reply.text, finish_reason=reply.finish_reason, cached=cached, logprobs=reply.logprobs, reasoning=reply.reasoning)
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
