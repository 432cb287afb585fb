"""Batch mode: a step's uncached requests go to the endpoint's batch API, and their replies into the request cache.

`BatchPhase.fill(calls)` runs before the ordinary (online) pass over the same calls, which then finds
the batch's replies in the cache exactly as if they had been answered online; only what no batch
answered is left for it. One round: work out which request each call still needs (its next retry
attempt when a cached reply failed its schema), upload them as JSONL files (split by the provider's
limits; `custom_id` is the request's cache key), create the batches, poll until each ends, then
store every reply under its cache key and record why each unanswered item failed. Rounds go on
while new requests appear (schema retries; failed items with `failed_items: batch`).

Crash safety (see batch_store): a submission is written to cache.sqlite before its batch is created,
its batch id right after, and the batch is marked collected only after its replies are stored. A
rerun polls the batches already submitted rather than submitting their requests again, and a
submission whose batch id was never written is found at the provider by its input file first.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Sequence

import openai

from synthkd.client.accounting import Meter
from synthkd.client.batch_api import CHAT_URL, BatchAPI, batch_errors, error_text
from synthkd.client.batch_store import BatchItem, BatchStore, Submission
from synthkd.client.endpoint import Call, EndpointClient, request_body
from synthkd.client.replies import interpret, to_cached, to_cached_n
from synthkd.client.retry import is_retryable, rejects_request, retryable_status
from synthkd.client.wire import BatchResultLine, ChatRequest
from synthkd.config.endpoints import BatchConfig
from synthkd.errors import BudgetExceeded, EndpointError
from synthkd.jsonl import dumps_line

# A batch in one of these states will not change again.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# How long a batch's status may be unreadable (outage, network) before the run stops; the batch keeps running at the
# provider and a rerun collects it. Waiting is most of a batch run: a short outage must not end a night's run.
POLL_PATIENCE_S = 3600.0


@dataclass(slots=True)
class _Line:
    """A request a batch file will carry: the cache keys its choices answer (several with `n`) and its body."""

    keys: list[str]
    body: ChatRequest | dict[str, Any]  # request_body's: with the user's extra_body fields, an open dict
    worst: float


class BatchPhase:
    """Fills the cache for one step's calls through the batch API of one endpoint."""

    def __init__(self, client: EndpointClient, cfg: BatchConfig, meter: Meter) -> None:
        self.client, self.cfg, self.meter = client, cfg, meter
        self.name = client.name
        self.store = BatchStore(client.cache)
        self.api = BatchAPI(client.name, client.config, client.pool.replicas[0].client)
        self.factor = client.config.prices.batch_price_factor
        self._reserved: dict[str, float] = {}  # submission -> worst-case cost held in the budget until collected
        self._recorded: set[str] = set()  # custom_ids of lines whose submission is recorded in the store

    async def fill(self, calls: Sequence[Call]) -> None:
        """Submit, wait for and collect batches until no call needs a request a batch should send."""
        # One batch phase per endpoint at a time: two steps planning at once could submit the same request twice.
        async with self.client.batch_lock:
            over_budget: BudgetExceeded | None = None
            while True:
                lines, holding = self._plan(calls)
                submitted: list[str] = []
                if lines and len(lines) >= self.cfg.min_requests:
                    submitted, over_budget = await self._submit(lines)
                if not holding and not submitted:
                    if over_budget is not None:
                        raise over_budget
                    break
                await self._wait(holding | set(submitted))
                if over_budget is not None:
                    raise over_budget  # after what the budget allowed has been collected

    # ---- what to send ----------------------------------------------------------------
    def _plan(self, calls: Sequence[Call]) -> tuple[list[_Line], set[str]]:
        """(requests to submit now, pending submissions that already carry requests these calls need)."""
        client = self.client
        pending = {key: sub.local_id for sub in self.store.pending(self.name) for item in sub.items for key in item.keys}
        tries, last = self.store.failures(self.name, self.client.created)
        needs: dict[str, tuple[Call, int, ChatRequest]] = {}
        holding: set[str] = set()
        for call in calls:
            for attempt in range(client.config.invalid_retries + 1):
                key, kwargs = client.request_for(call, attempt)
                reply = client.cached(call, attempt, key)
                if reply is None:
                    if key in pending:
                        holding.add(pending[key])
                    elif key not in needs and key not in client.withheld and self._resubmit(key, tries[key], last.get(key)):
                        needs[key] = (call, attempt, kwargs)
                    break
                if interpret(reply, call.schema, True).settled:  # usable, or a failure another attempt would repeat
                    break
        return self._lines(needs), holding

    def _resubmit(self, key: str, tries: int, last: str | None) -> bool:
        """Whether a request goes into a batch now; a request no batch will answer may be withheld from the online pass."""
        if not tries or last is None:
            return True
        reason, _, detail = last.partition(": ")
        code = reason.removeprefix("batch:")
        if code.isdigit() and not retryable_status(int(code)):
            self.client.withheld[key] = (reason, detail)  # the provider refused the request itself: online would too
            return False
        if self.cfg.failed_items == "online":
            return False  # the online pass sends it
        if tries >= self.cfg.max_submissions:
            self.client.withheld[key] = (reason, f"{detail} (submitted in {tries} batches)")
            return False
        return True

    def _lines(self, needs: dict[str, tuple[Call, int, ChatRequest]]) -> list[_Line]:
        """One line per request; with n_per_request, a record's missing first-attempt samples share one line with n."""
        client = self.client
        groups: dict[str, list[tuple[str, ChatRequest]]] = {}
        for key, (call, attempt, kwargs) in needs.items():
            group = client.group_key(call) if client.config.n_per_request and client.takes_n and attempt == 0 else key
            groups.setdefault(group, []).append((key, kwargs))
        lines = []
        for members in groups.values():
            kwargs = members[0][1] if len(members) == 1 else {**members[0][1], "n": len(members)}
            lines.append(_Line([key for key, _ in members], request_body(kwargs),
                               client.worst_case_cost(kwargs) * self.factor))
        return lines

    # ---- submitting -------------------------------------------------------------------
    async def _submit(self, lines: list[_Line]) -> tuple[list[str], BudgetExceeded | None]:
        """Upload and create batches for the lines the budget allows (at the batch price); their submission ids."""
        budget = self.client.budget
        allowed: list[_Line] = []
        over: BudgetExceeded | None = None
        for line in lines:
            try:
                budget.reserve(line.worst)
            except BudgetExceeded as exc:
                over = exc
                break
            allowed.append(line)
        submitted: list[str] = []
        unsent = self._chunks(allowed)
        try:
            while unsent:
                chunk = unsent[0]
                submitted.append(await self._submit_file(chunk))
                unsent.pop(0)
        finally:
            # A recorded file holds its share of the reservation until it is collected (or rejected); give back
            # the share of files never recorded.
            share = sum(line.worst for chunk in unsent for line, _ in chunk if line.keys[0] not in self._recorded)
            if share > 0:
                budget.settle(share, 0.0)
        return submitted, over

    def _chunks(self, lines: list[_Line]) -> list[list[tuple[_Line, bytes]]]:
        """Lines encoded as JSONL and split by the provider's request and byte limits per batch file."""
        chunks: list[list[tuple[_Line, bytes]]] = [[]]
        size = 0
        for line in lines:
            data = (dumps_line({"custom_id": line.keys[0], "method": "POST", "url": CHAT_URL, "body": line.body},
                               separators=(",", ":")) + "\n").encode()
            if chunks[-1] and (len(chunks[-1]) >= self.cfg.max_requests_per_batch or size + len(data) > self.cfg.max_bytes_per_batch):
                chunks.append([])
                size = 0
            chunks[-1].append((line, data))
            size += len(data)
        return [c for c in chunks if c]

    async def _submit_file(self, chunk: list[tuple[_Line, bytes]]) -> str:
        local_id = uuid.uuid4().hex[:16]
        file_id = await self.api.upload(f"synthkd-{self.name}-{local_id}.jsonl", b"".join(data for _, data in chunk))
        items = [BatchItem(line.keys[0], tuple(line.keys), line.worst) for line, _ in chunk]
        # Written before the batch exists: from here on a rerun knows this file may have become a batch.
        self.store.add(local_id, self.name, file_id, items)
        self._reserved[local_id] = sum(item.worst_cost for item in items)
        self._recorded.update(item.custom_id for item in items)
        try:
            batch = await self._create(local_id, file_id, time.time())
        except EndpointError as exc:
            refused = exc.__context__
            if not isinstance(refused, openai.APIStatusError) or refused.status_code in (401, 403, 404):
                raise
            # The provider refused this batch (e.g. a file it will not take): a failed batch, not a stuck one.
            self._reject(local_id, items, f"{refused.status_code}: {str(refused).splitlines()[0][:200]}")
            return local_id
        self.meter.add_batch(self.name, submitted=len(items), batches=1)
        self._note(f"submitted batch {batch.id}: {len(items)} requests ({batch.status})")
        return local_id

    def _reject(self, local_id: str, items: Sequence[BatchItem], why: str) -> None:
        """A submission the provider would not create: collected at once, every item failed with the reason."""
        self._note(f"the endpoint refused to create a batch of {len(items)} requests ({why})")
        self.store.collected(local_id, "rejected", {item.custom_id: f"batch:rejected: {why}" for item in items})
        self.client.budget.settle(self._reserved.pop(local_id, 0.0), 0.0)
        self.meter.add_batch(self.name, failed=len(items))

    async def _create(self, local_id: str, file_id: str, since: float) -> Any:
        """Create the batch of a recorded file and record its id the moment it is known."""
        batch = await self.api.create(file_id, self.cfg.completion_window, local_id, since)
        self.store.set_batch(local_id, batch.id, batch.status)
        return batch

    # ---- waiting and collecting ------------------------------------------------------
    async def _wait(self, local_ids: set[str]) -> None:
        """Poll the submissions until each has ended, collecting each as it does."""
        subs = {s.local_id: s for s in self.store.pending(self.name) if s.local_id in local_ids}
        for sub in subs.values():
            if sub.local_id not in self._reserved:  # submitted by an earlier invocation: hold its cost again
                self._reserved[sub.local_id] = sum(item.worst_cost for item in sub.items)
                self.client.budget.hold(self._reserved[sub.local_id])
        seen: dict[str, tuple[Any, ...]] = {}
        unreadable_since: float | None = None
        try:
            while subs:
                for local_id, sub in list(subs.items()):
                    if sub.batch_id is None:
                        sub = subs[local_id] = await self._adopt(sub)
                    try:
                        batch = await self.api.retrieve(sub.batch_id)
                        unreadable_since = None
                    except EndpointError as exc:
                        if isinstance(exc.__context__, openai.NotFoundError):
                            await self._forget(sub, str(exc.__context__).splitlines()[0][:200])
                            del subs[local_id]
                            continue
                        unreadable_since = unreadable_since or time.monotonic()
                        if not is_retryable(exc.__context__ or exc) or time.monotonic() - unreadable_since > POLL_PATIENCE_S:
                            raise
                        self._note(f"could not read batch {sub.batch_id}'s status ({exc}); trying again")
                        break
                    counts = batch.request_counts
                    state = (batch.status, counts.completed if counts else None, counts.failed if counts else None)
                    if seen.get(local_id) != state:
                        seen[local_id] = state
                        done = f" {counts.completed}/{counts.total} done, {counts.failed} failed" if counts and counts.total else ""
                        self._note(f"batch {batch.id}: {batch.status}{done}")
                        self.store.set_status(local_id, batch.status, counts)
                    if batch.status in TERMINAL:
                        await self._collect(sub, batch)
                        del subs[local_id]
                if subs:
                    await asyncio.sleep(self.cfg.poll_interval_s)
        except BaseException:
            if subs:
                self._note(f"{len(subs)} batch(es) still at the provider; the next run collects them "
                           "without submitting their requests again")
            raise

    async def _forget(self, sub: Submission, why: str) -> None:
        """A batch the endpoint does not know (another account or URL, or deleted): its requests count as failed once."""
        self._note(f"batch {sub.batch_id} is unknown to the endpoint ({why}); its requests are "
                   "treated as a failed batch")
        self.store.collected(sub.local_id, "unknown", {item.custom_id: f"batch:unknown: {why[:200]}" for item in sub.items})
        self.client.budget.settle(self._reserved.pop(sub.local_id, 0.0), 0.0)

    async def _adopt(self, sub: Submission) -> Submission:
        """A submission whose batch id was never written: find its batch by input file, or create it now."""
        found = await self.api.find(sub.file_id, sub.created)
        batch = found if found is not None else await self._create(sub.local_id, sub.file_id, sub.created)
        self.store.set_batch(sub.local_id, batch.id, batch.status)
        return replace(sub, batch_id=batch.id)

    async def _collect(self, sub: Submission, batch: Any) -> None:
        """Store every reply of an ended batch under its cache keys; record why each other item failed."""
        client, config = self.client, self.client.config
        items = {item.custom_id: item for item in sub.items}
        answered: set[str] = set()
        errors: dict[str, str] = {}
        actual = 0.0
        n_refused: set[str] = set()
        for record in await self._records(batch.output_file_id) + await self._records(batch.error_file_id):
            cid = record.get("custom_id")
            if not isinstance(cid, str) or cid in answered:
                continue
            item = items.get(cid)
            if item is None:
                continue
            response = record.get("response") or {}
            body = response.get("body") if isinstance(response, dict) else None
            if isinstance(response, dict) and response.get("status_code") == 200 and isinstance(body, dict) and body.get("choices"):
                replies = to_cached_n(body, config, len(item.keys), self.factor) if len(item.keys) > 1 else [to_cached(body, config, self.factor)]
                for j, (key, reply) in enumerate(zip(item.keys, replies)):
                    client.cache.put(key, self.name, config.model, reply)
                    client.batch_fresh[key] = j == 0
                    actual += reply.cost
                if len(replies) < len(item.keys):
                    client.refuse_n(self.meter, f"a batch reply had {len(replies)} of {len(item.keys)} choices")
                answered.add(cid)
                errors.pop(cid, None)
            elif len(item.keys) > 1 and isinstance(response, dict) and isinstance(response.get("status_code"), int) \
                    and rejects_request(response["status_code"]):
                # n>1 refused (400, 422, ...): its samples go singly in the next round, not counted as a failed submission.
                client.refuse_n(self.meter, error_text(record))
                n_refused.add(cid)
            else:
                errors[cid] = error_text(record)
        why = batch_errors(batch) or f"the batch ended {batch.status}"
        for cid in items:
            if cid not in answered and cid not in errors and cid not in n_refused:
                errors[cid] = f"batch:{batch.status}: {why}"
        self.store.collected(sub.local_id, batch.status, errors)
        reserved = self._reserved.pop(sub.local_id, 0.0)
        client.budget.settle(reserved, actual)
        self.meter.add_batch(self.name, answered=len(answered), failed=len(errors))
        reasons = Counter(error.partition(": ")[0] for error in errors.values())
        failed = f", {len(errors)} failed ({', '.join(f'{r} x{c}' for r, c in reasons.most_common(3))})" if errors else ""
        self._note(f"batch {batch.id} {batch.status}: {len(answered)} answered{failed}, ${actual:.4f}")

    async def _records(self, file_id: str | None) -> list[BatchResultLine]:
        """A result file's lines; a file the provider no longer has counts as no answers (its items fail once)."""
        try:
            return await self.api.records(file_id)
        except EndpointError as exc:
            if not isinstance(exc.__context__, openai.NotFoundError):
                raise
            self._note(f"batch result file {file_id} is gone ({exc}); its requests count as failed")
            return []

    def _note(self, text: str) -> None:
        self.client.note(f"[{self.name}] {text}")
