"""Fan a list of calls out over one endpoint client with bounded workers, in input order.

The executor is the only place that decides where calls run. Everything it needs is in the
Call objects and the cache is keyed by content, so replacing this function with a fan-out over
a cluster of replicas keeps the cache and resume guarantees as they are. With the endpoint's
`n_per_request`, calls that differ only in their sample index run as one unit, their missing samples
in one request with `n`; each sample keeps its own cache entry.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from synthkd.client.accounting import Meter
from synthkd.client.endpoint import Call, EndpointClient, Result
from synthkd.config.endpoints import BatchConfig
from synthkd.progress import StepProgress


async def run_calls(client: EndpointClient, calls: Sequence[Call], meter: Meter, progress: StepProgress | None = None,
                    batch: BatchConfig | None = None) -> list[Result]:
    """Results for `calls`, in the same order. Stops early (raising) on budget or endpoint errors.

    With `batch`, the requests missing from the cache first go through the endpoint's batch API
    (`synthkd.client.batch`); the pass below then reads their replies from the cache and sends online
    only what no batch answered (or nothing of it, with `failed_items: batch`).

    Work goes out in units: each call alone, or, with `n_per_request`, the calls identical but for
    their sample index together (their samples missing from the cache go in one request with `n`,
    `EndpointClient.call_group`).
    """
    if batch is not None and calls:
        from synthkd.client.batch import BatchPhase

        await BatchPhase(client, batch, meter).fill(calls)
    if client.config.n_per_request:
        groups: dict[str, list[int]] = {}
        for i, call in enumerate(calls):
            groups.setdefault(client.group_key(call), []).append(i)
        units = list(groups.values())
    else:
        units = [[i] for i in range(len(calls))]
    results: list[Result | None] = [None] * len(calls)
    next_unit = 0

    async def worker() -> None:
        nonlocal next_unit
        while next_unit < len(units):
            unit = units[next_unit]
            next_unit += 1
            if len(unit) == 1:
                results[unit[0]] = await client.call(calls[unit[0]], meter)
            else:
                for i, result in zip(unit, await client.call_group([calls[i] for i in unit], meter)):
                    results[i] = result
            if progress is not None:
                progress.advance(len(unit))

    # Cache hits complete without awaiting I/O, so more workers than the endpoint's concurrency
    # only help when replies are missing; the client's semaphore bounds real requests in flight.
    n_workers = min(len(units), max(client.config.concurrency * 2, 8))
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
