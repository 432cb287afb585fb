"""Token, call and cost accounting per stage and endpoint, and the run's budget."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from synthkd.errors import BudgetExceeded
from synthkd.records import Usage


@dataclass
class Meter:
    """Counters for one stage (or one step of a stage): what run.json reports."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    by_endpoint: dict[str, dict[str, float]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    # Parts of prompt_tokens / completion_tokens (run.json: per endpoint, under by_endpoint).
    cached_prompt_tokens: int = 0  # served from the provider's prompt cache (priced at prices.cached_input_per_million)
    reasoning_tokens: int = 0  # the reasoning trace of reasoning models

    def _endpoint(self, endpoint: str) -> dict[str, float]:
        return self.by_endpoint.setdefault(endpoint, {"calls": 0, "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0,
                                                      "cached_completion_tokens": 0, "cached_prompt_tokens": 0, "reasoning_tokens": 0})

    def add_reply(self, endpoint: str, prompt_tokens: int, completion_tokens: int, cost: float, cached: bool,
                  reasoning_tokens: int = 0, cached_prompt_tokens: int = 0, request: bool = True) -> None:
        """Count one reply; cached replies cost nothing now (they were paid for earlier).

        `request`: the reply came with a request of its own (a call). The 2nd..nth replies of a request with
        `n` do not: `calls` counts requests, while their tokens and cost are counted here all the same.
        """
        ep = self._endpoint(endpoint)
        if cached:
            self.cache_hits += 1
            ep["cache_hits"] += 1
            # What the hits stood for: a method compared per teacher call counts them as its own work.
            ep["cached_completion_tokens"] = ep.get("cached_completion_tokens", 0) + completion_tokens
            return
        if request:
            self.calls += 1
            ep["calls"] += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost += cost
        ep["prompt_tokens"] += prompt_tokens
        ep["completion_tokens"] += completion_tokens
        ep["cost"] += cost
        if reasoning_tokens or cached_prompt_tokens:
            self.reasoning_tokens += reasoning_tokens
            self.cached_prompt_tokens += cached_prompt_tokens
            ep["reasoning_tokens"] = ep.get("reasoning_tokens", 0) + reasoning_tokens
            ep["cached_prompt_tokens"] = ep.get("cached_prompt_tokens", 0) + cached_prompt_tokens

    def add_n_request(self, endpoint: str, samples: int) -> None:
        """Count a request that asked for several samples with `n` (run.json per endpoint: `n_requests`, and
        `n_samples`, the replies they brought)."""
        ep = self._endpoint(endpoint)
        ep["n_requests"] = ep.get("n_requests", 0) + 1
        ep["n_samples"] = ep.get("n_samples", 0) + samples

    def add_n_refused(self, endpoint: str) -> None:
        """Count a request with n>1 the endpoint refused (run.json per endpoint: `n_refused`); its samples went singly."""
        ep = self._endpoint(endpoint)
        ep["n_refused"] = ep.get("n_refused", 0) + 1

    def add_replica_call(self, endpoint: str, url: str) -> None:
        """Count a call one replica of an endpoint answered (run.json: `replica_calls <url>` per endpoint)."""
        ep = self._endpoint(endpoint)
        key = f"replica_calls {url}"
        ep[key] = ep.get(key, 0) + 1

    def add_adaptive(self, endpoint: str, limit: int, lowest: int, rate_limited: bool) -> None:
        """The endpoint's adaptive concurrency limit after an attempt (run.json per endpoint: `adaptive_limit_final`,
        `adaptive_limit_min`, the lowest it has been, and `rate_limited`, the 429 replies seen)."""
        ep = self._endpoint(endpoint)
        ep["adaptive_limit_final"] = limit
        ep["adaptive_limit_min"] = lowest
        if rate_limited:
            ep["rate_limited"] = ep.get("rate_limited", 0) + 1

    def add_batch(self, endpoint: str, *, submitted: int = 0, batches: int = 0, answered: int = 0, failed: int = 0) -> None:
        """Count batch-API work (run.json per endpoint: `batches` created, `batch_requests` submitted in them, and of
        those collected, `batch_answered` and `batch_failed`)."""
        ep = self._endpoint(endpoint)
        for key, value in (("batches", batches), ("batch_requests", submitted), ("batch_answered", answered), ("batch_failed", failed)):
            if value:
                ep[key] = ep.get(key, 0) + value

    def add_learned_limits(self, endpoint: str, rpm: int | None, tpm: int | None) -> None:
        """The quotas the provider announced in its x-ratelimit-limit-* headers, now in force (run.json per endpoint:
        `rpm_learned`, `tpm_learned`)."""
        ep = self._endpoint(endpoint)
        if rpm:
            ep["rpm_learned"] = rpm
        if tpm:
            ep["tpm_learned"] = tpm

    def add_rate_limited(self, endpoint: str) -> None:
        """Count a 429 reply (also when the endpoint's concurrency is not adaptive)."""
        ep = self._endpoint(endpoint)
        ep["rate_limited"] = ep.get("rate_limited", 0) + 1

    def merge(self, other: "Meter") -> None:
        """Fold another meter's counts into this one."""
        self.calls += other.calls
        self.cache_hits += other.cache_hits
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost += other.cost
        self.retries += other.retries
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.failures.update(other.failures)
        for name, ep in other.by_endpoint.items():
            mine = self.by_endpoint.setdefault(name, {k: 0 for k in ep if k not in _GAUGES})
            for k, v in ep.items():
                if k in _GAUGES:  # a level, not a count: the latest one, or the lowest
                    mine[k] = min(mine.get(k, v), v) if k == "adaptive_limit_min" else v
                else:
                    mine[k] = mine.get(k, 0) + v

    def usage(self) -> Usage:
        """The same figures as `to_json`, as the typed run.json block."""
        return Usage.model_validate(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "cost_usd": round(self.cost, 6),
            "failures": dict(self.failures),
            "by_endpoint": {k: {kk: (round(vv, 6) if isinstance(vv, float) else vv) for kk, vv in v.items()} for k, v in self.by_endpoint.items()},
        }


# Per-endpoint values that are levels rather than counts: merge does not add them up.
_GAUGES = frozenset({"adaptive_limit_final", "adaptive_limit_min", "rpm_learned", "tpm_learned"})


class Budget:
    """The run's spending cap across all invocations: prior spend (from the cache) plus this one's.

    A request reserves its worst-case cost before it is sent; if that could cross the cap the
    request is not sent and BudgetExceeded is raised. In-flight requests still finish and are cached.
    Online requests reserve with `acquire`, which waits for requests in flight to settle (their real cost
    is usually far below their worst case) before it gives up; batch submissions reserve with `reserve`.
    """

    def __init__(self, limit_usd: float | None, already_spent: float) -> None:
        self.limit = limit_usd
        self.spent = already_spent
        self.reserved = 0.0
        self.exhausted = False
        self._in_flight = 0  # reservations made by `acquire` and not settled yet: what a waiter can wait for
        self._waiters: list[asyncio.Future[None]] = []

    def _fits(self, worst_case: float) -> bool:
        return self.limit is None or self.spent + self.reserved + worst_case <= self.limit

    def _refuse(self, worst_case: float) -> BudgetExceeded:
        assert self.limit is not None
        self.exhausted = True
        return BudgetExceeded(
            f"budget_usd={self.limit:g} reached: ${self.spent:.4f} spent, the next call could cost up to ${worst_case:.4f}",
            fix=f"every paid reply is cached; rerun with --set budget_usd={max(self.limit * 2, self.spent + 1):g} (or more) to continue",
        )

    def reserve(self, worst_case: float) -> None:
        """Reserve `worst_case` now or raise BudgetExceeded (batch submissions: nothing to wait for)."""
        if self.limit is None:
            return
        if self.exhausted or not self._fits(worst_case):
            raise self._refuse(worst_case)
        self.reserved += worst_case

    async def acquire(self, worst_case: float) -> None:
        """Reserve `worst_case` for a request about to be sent; settle it with `settle(worst_case, actual)`.

        While it does not fit but other requests reserved with `acquire` are in flight, wait until one settles
        and check again: their worst cases, not their real costs, are what crowds the cap. BudgetExceeded only
        once nothing is in flight and it still does not fit (or the budget is already exhausted). Nothing is
        reserved when this raises or is cancelled.
        """
        if self.limit is None:
            return
        while not self.exhausted and not self._fits(worst_case) and self._in_flight > 0:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        if self.exhausted or not self._fits(worst_case):
            raise self._refuse(worst_case)
        self.reserved += worst_case
        self._in_flight += 1

    def hold(self, amount: float) -> None:
        """Hold money already committed elsewhere (a batch submitted by an earlier run) without a check."""
        if self.limit is not None:
            self.reserved += amount

    def settle(self, worst_case: float, actual: float, acquired: bool = False) -> None:
        """Release a reservation of `worst_case` and count what was really spent. `acquired`: it was made by
        `acquire`. Requests waiting in `acquire` check again."""
        if self.limit is not None:
            self.reserved -= worst_case
            if acquired:
                self._in_flight -= 1
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self.spent += actual
