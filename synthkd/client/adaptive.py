"""Adaptive concurrency: as many requests in flight as the endpoint takes without rate limiting.

AIMD, as TCP and LLM data generators (NeMo Data Designer, Oumi) do it: the limit starts at the
endpoint's `concurrency` (which stays the hard cap), halves when the endpoint answers 429, and grows
by one after as many successes in a row as the limit itself (about one round trip at that limit).
A cut happens at most once per round trip: a 429 for an attempt sent before the last cut is the
same congestion the cut already answered, so it does not cut again. Any 429 restarts the count of
successes, so the limit does not creep up while the endpoint still refuses requests.

A provider's `x-ratelimit-remaining-requests: 0` (its quota for the current minute is used up)
counts as a 429 that has not happened yet: the limit is cut the same way.

The slot is taken per attempt, not per call: an attempt waiting out a Retry-After holds none.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class AdaptiveLimiter:
    """An AIMD concurrency limit between 1 and `cap`. `acquire()` returns a ticket for `on_rate_limit`."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.limit = cap
        self.lowest = cap
        self.in_flight = 0
        self.rate_limited = 0  # 429 replies seen
        self.cuts = 0  # times the limit was halved; also the ticket of attempts sent after the last cut
        self._successes = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> int:
        """Wait for a slot under the current limit; returns the ticket of this attempt."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return self.cuts
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as the waiter was cancelled
            raise
        return self.cuts

    def release(self) -> None:
        """An attempt finished (whatever its outcome): its slot goes to the next waiter."""
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter is skipped
                self.in_flight += 1
                waiter.set_result(None)

    def on_success(self) -> None:
        """Additive increase: +1 after `limit` successes in a row."""
        if self.limit >= self.cap:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
            self._wake()

    def on_rate_limit(self, ticket: int) -> bool:
        """A 429 for the attempt with this ticket. Multiplicative decrease, once per round trip; True if cut."""
        self.rate_limited += 1
        return self._cut(ticket)

    def on_headers(self, headers: Any, ticket: int) -> bool:
        """Read a provider's x-ratelimit-remaining-requests (when it sends it): 0 left cuts the limit."""
        remaining = headers.get("x-ratelimit-remaining-requests")
        if remaining is None:
            return False
        try:
            left = int(float(remaining))
        except ValueError:
            return False
        return left <= 0 and self._cut(ticket)

    def _cut(self, ticket: int) -> bool:
        self._successes = 0
        if ticket != self.cuts:  # sent before the last cut: that cut already answered this congestion
            return False
        self.cuts += 1
        self.limit = max(1, self.limit // 2)
        self.lowest = min(self.lowest, self.limit)
        return True
