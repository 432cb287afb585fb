"""Fan a list of calls out over one endpoint client with bounded workers, in input order.

The executor is the only place that decides where calls run. Everything it needs is in the
Call objects and the cache is keyed by content, so replacing this function with a fan-out over
a cluster of replicas keeps the cache and resume guarantees as they are.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from synthkd.client.accounting import Meter
from synthkd.client.endpoint import Call, EndpointClient, Result
from synthkd.progress import StepProgress


async def run_calls(client: EndpointClient, calls: Sequence[Call], meter: Meter, progress: StepProgress | None = None) -> list[Result]:
    """Results for `calls`, in the same order. Stops early (raising) on budget or endpoint errors."""
    results: list[Result | None] = [None] * len(calls)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(calls):
            i = next_index
            next_index += 1
            results[i] = await client.call(calls[i], meter)
            if progress is not None:
                progress.advance()

    # Cache hits complete without awaiting I/O, so more workers than the endpoint's concurrency
    # only help when replies are missing; the client's semaphore bounds real requests in flight.
    n_workers = min(len(calls), max(client.config.concurrency * 2, 8))
    tasks = [asyncio.create_task(worker()) for _ in range(n_workers)]
    try:
        done = await asyncio.gather(*tasks, return_exceptions=True)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        raise
    errors = [e for e in done if isinstance(e, BaseException)]
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]
