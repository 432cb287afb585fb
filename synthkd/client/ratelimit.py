"""Requests-per-minute and tokens-per-minute limits as async token buckets.

The configured `rpm` / `tpm` are hard caps. A provider that announces its quota in
`x-ratelimit-limit-requests` / `x-ratelimit-limit-tokens` (OpenAI's and most OpenAI-compatible
providers' headers) sets a bucket below them: `learn()` reads the headers of each reply. A learned
quota is spread over the minute (one second's worth at once), because providers enforce their
per-minute limits over shorter periods; `x-ratelimit-remaining-requests` / `-tokens` lower a learned
bucket to the share of the quota the provider says is left.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


class TokenBucket:
    """A bucket of `per_minute` units refilled continuously; `acquire(n)` waits until n are there.

    Requests larger than the whole bucket are let through once it is full, so a single huge
    request cannot deadlock the run.
    """

    def __init__(self, per_minute: float, burst: float | None = None) -> None:
        self.per_minute = per_minute
        self.capacity = float(per_minute if burst is None else burst)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        amount = min(amount, self.capacity)
        async with self._lock:  # FIFO: waiters are served in order
            self._refill()
            while self.level < amount:
                await asyncio.sleep((amount - self.level) / self.rate)
                self._refill()
            self.level -= amount


class RateLimiter:
    """RPM and TPM together; either may be None (no limit, zero overhead)."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.hard_rpm, self.hard_tpm = rpm, tpm
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None
        self.learned_rpm: int | None = None  # the provider's announced quotas (headers), when below the hard caps
        self.learned_tpm: int | None = None

    def learn(self, headers: Any) -> None:
        """Adopt the quota a provider announces in a reply's x-ratelimit-* headers (never above rpm / tpm)."""
        self.requests, self.learned_rpm = _adopt(headers, "requests", self.requests, self.learned_rpm, self.hard_rpm)
        self.tokens, self.learned_tpm = _adopt(headers, "tokens", self.tokens, self.learned_tpm, self.hard_tpm)

    async def acquire(self, estimated_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.acquire(1)
        if self.tokens is not None:
            await self.tokens.acquire(estimated_tokens)


def _adopt(headers: Any, unit: str, bucket: TokenBucket | None, learned: int | None,
           hard: int | None) -> tuple[TokenBucket | None, int | None]:
    """(bucket, learned quota) after a reply's x-ratelimit-limit-<unit> / -remaining-<unit> headers."""
    quota = _count(headers.get(f"x-ratelimit-limit-{unit}"))
    if quota and quota != learned and (hard is None or quota < hard):
        learned, bucket = quota, TokenBucket(quota, burst=max(1.0, quota / 60))
    if learned and bucket is not None:
        _lower(bucket, _count(headers.get(f"x-ratelimit-remaining-{unit}")), learned)
    return bucket, learned


def _lower(bucket: TokenBucket, remaining: int | None, per_minute: int) -> None:
    """Lower a learned bucket to the share of its minute's quota the provider says is left (never raise it)."""
    if remaining is not None:
        bucket._refill()
        bucket.level = min(bucket.level, bucket.capacity * remaining / per_minute)


def _count(value: Any) -> int | None:
    """A header's whole number (None when absent or not a number)."""
    if value is None:
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None
