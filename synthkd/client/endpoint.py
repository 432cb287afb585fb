"""The endpoint client: one narrow `call()` over the openai SDK with concurrency, limits,
retries, structured outputs, the request cache and accounting.

A call never raises for a problem of its own row: it returns a Result whose `error` names the
reason (and whose `text` keeps the raw reply). It raises only for problems of the whole run:
BudgetExceeded, or EndpointError when the endpoint refuses us outright (bad key, no credit, unknown
model or route, a redirect: never followed, so neither the key nor the prompt goes to another host).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence, cast

import openai
from pydantic import BaseModel
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from synthkd.client.accounting import Budget, Meter
from synthkd.client.adaptive import AdaptiveLimiter
from synthkd.client.cache import CachedReply, RequestCache, request_key
from synthkd.client.calls import Call
from synthkd.client.ratelimit import RateLimiter
from synthkd.client.replicas import ReplicaPool
from synthkd.client.refusals import error_kind, refused_error, short_error
from synthkd.client.replies import Result, interpret, to_cached, to_cached_n, unusable
from synthkd.client.retry import BackoffWithRetryAfter, RetryableReplyError, is_retryable, rejects_request, stops_run
from synthkd.client.schema import response_format_for, schema_digest
from synthkd.client.wire import ChatCompletion, ChatRequest, RequestIdentity, SamplingParams
from synthkd.config.endpoints import EndpointConfig, Sampling
from synthkd.errors import ServeError, StorageError, SynthkdError


class EndpointClient:
    """Calls one named endpoint. Create one per endpoint per run; close with `aclose()`."""

    def __init__(
        self,
        name: str,
        config: EndpointConfig,
        *,
        base_url: str | list[str],
        api_key: str | None,
        cache: RequestCache,
        budget: Budget,
        model_identity: str | None = None,
        legacy_identity: str | None = None,
        alive: Callable[[], str | None] | list[Callable[[], str | None] | None] | None = None,
        on_replica_death: Callable[[int, str], None] | None = None,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.base_url = urls[0]
        self.cache = cache
        self.budget = budget
        # The cache key names the weights, not just the served name: a student restarted on a new
        # checkpoint keeps its served name but must not be answered from the old weights' cache.
        # Replicas serve the same model, so the first URL names them all (adding one reuses the cache).
        self.model_identity = model_identity or f"{config.model}@{urls[0].rstrip('/')}"
        # An identity older synthkd versions keyed this endpoint's replies by: looked up on a miss (see `cached`).
        self.legacy_identity = legacy_identity if legacy_identity != self.model_identity else None
        # Per-request seeds come from the identity without the URL, so a pipeline samples the same replies from
        # whichever server answers it (and the same as before the URL was part of the key).
        self._seed_identity = self.legacy_identity
        self._semaphore = asyncio.Semaphore(config.concurrency)
        # Within the hard cap, as many attempts in flight as the endpoint takes without 429s (None: the cap).
        self.adaptive = AdaptiveLimiter(config.concurrency) if config.adaptive else None
        self._limiter = RateLimiter(config.rpm, config.tpm)
        self._fatal: SynthkdError | None = None
        self._merged: dict[int, tuple[Sampling, Sampling, SamplingParams]] = {}
        # With n_per_request: whether the endpoint still takes n>1 (a 400 to it, or fewer choices, says no for the run).
        self._n_ok = True
        # Batch mode (synthkd.client.batch): replies collected from a batch this invocation, counted as paid requests
        # when a call first reads them (True: the reply that carries its request); and requests a batch could not
        # answer that must not go online (failed_items: batch), with the reason their calls fail.
        self.batch_fresh: dict[str, bool] = {}
        self.withheld: dict[str, tuple[str, str]] = {}
        self.batch_lock = asyncio.Lock()
        self.created = time.time()  # batch failures collected before this are an earlier invocation's
        self.note = note or _print_note  # where the client's notes to the user go (the progress output)
        # For servers synthkd runs, `alive` returns None while the process lives, else why it died. A
        # dead server is not retried for minutes: the run stops at once with the server's log, unless
        # the endpoint has other replicas (then it is taken out and restarted: `on_replica_death`).
        checks = alive if isinstance(alive, list) else [alive] * len(urls)
        self.pool = ReplicaPool.connect(config, urls, api_key, checks, on_replica_death)

    @property
    def takes_n(self) -> bool:
        """Whether the endpoint still takes n>1 this run (with n_per_request; a refusal turns it off)."""
        return self._n_ok

    @property
    def urls(self) -> list[str]:
        return self.pool.urls

    async def aclose(self) -> None:
        await self.pool.aclose()

    # ---- request identity -------------------------------------------------------------
    def _sampling(self, call_sampling: Sampling) -> tuple[Sampling, SamplingParams]:
        """Endpoint defaults merged with a call's sampling, computed once per Sampling object."""
        key = id(call_sampling)
        hit = self._merged.get(key)
        if hit is None or hit[0] is not call_sampling:
            sampling = self.config.sampling.merged(call_sampling)
            # Sampling's fields less seed and extra_body are SamplingParams' keys; the dump (not a copy field by field)
            # stays what the cache keys of earlier runs hashed, with the same keys in the same order.
            params = cast(SamplingParams, sampling.model_dump(exclude_none=True, exclude={"seed", "extra_body"}))
            hit = (call_sampling, sampling, params)
            self._merged[key] = hit
        return hit[1], hit[2]

    def _identity(self, call: Call) -> tuple[Sampling, SamplingParams, RequestIdentity]:
        """(merged sampling, sent sampling params, what the cache key hashes) for a call's first attempt."""
        sampling, params = self._sampling(call.sampling)
        identity: RequestIdentity = {
            "model": self.model_identity,
            "messages": call.messages,
            "params": params,
            "sample": call.sample,
        }
        if call.schema is not None:
            identity["schema"] = schema_digest(call.schema)
        if call.logprobs:
            identity["logprobs"] = True
        if call.tools:
            identity["tools"] = call.tools
        if call.tool_choice is not None:
            identity["tool_choice"] = call.tool_choice
        if sampling.extra_body:
            identity["extra_body"] = sampling.extra_body
        return sampling, params, identity

    def group_key(self, call: Call) -> str:
        """A call's identity apart from its sample index: calls with the same group key can share a request with `n`."""
        identity = self._identity(call)[2]
        del identity["sample"]
        return request_key(identity)

    def request_for(self, call: Call, attempt: int) -> tuple[str, ChatRequest]:
        """(cache key, request kwargs) for one attempt of a call."""
        sampling, params, identity = self._identity(call)
        if attempt:
            identity["attempt"] = attempt
        key = request_key(identity)
        kwargs: ChatRequest = {"model": self.config.model, "messages": call.messages, **params}
        if self.config.max_tokens_param != "max_tokens" and "max_tokens" in kwargs:
            # Sent under the name the endpoint takes; the cache key above keeps the cap's meaning, not its name.
            kwargs[self.config.max_tokens_param] = kwargs.pop("max_tokens")
        if sampling.seed is not None:
            # One seed per request, derived from its identity: reruns ask for the same sample.
            seed_key = key if self._seed_identity is None else request_key({**identity, "model": self._seed_identity})
            kwargs["seed"] = (sampling.seed + int(seed_key[:8], 16)) % (2**31 - 1)
        if call.schema is not None:
            kwargs["response_format"] = response_format_for(call.schema)
        if call.logprobs:
            kwargs["logprobs"] = True
        if call.tools:
            kwargs["tools"] = call.tools
        if call.tool_choice is not None:
            kwargs["tool_choice"] = call.tool_choice
        if sampling.extra_body:
            kwargs["extra_body"] = sampling.extra_body
        return key, kwargs

    def cached(self, call: Call, attempt: int, key: str) -> CachedReply | None:
        """The stored reply of attempt `attempt` of `call` (whose cache key is `key`), or None.

        On a miss, the key the call had under `legacy_identity` is tried, and a reply found there is used only
        if this endpoint (by name) paid for it: a run cached by an older synthkd is not paid for again, and
        another endpoint that happened to send the same model name is never answered from it.
        """
        reply = self.cache.get(key)
        if reply is None and self.legacy_identity is not None:
            identity = self._identity(call)[2]
            identity["model"] = self.legacy_identity
            if attempt:
                identity["attempt"] = attempt
            reply = self.cache.get(request_key(identity), endpoint=self.name)
        return reply

    # ---- one call ---------------------------------------------------------------------
    async def call(self, call: Call, meter: Meter) -> Result:
        """Get a usable reply for `call`, from the cache or the endpoint. See module docstring."""
        return await self._attempts(call, meter, 0, Result(text=None, error="not_attempted"))

    async def _attempts(self, call: Call, meter: Meter, start: int, result: Result) -> Result:
        """Attempts `start`.. of a call (each a cache key of its own) until one gives a usable reply."""
        for attempt in range(start, self.config.invalid_retries + 1):
            key, kwargs = self.request_for(call, attempt)
            reply = self.cached(call, attempt, key)
            cached = reply is not None
            request = True
            if cached and self.batch_fresh and key in self.batch_fresh:
                # Paid for in a batch this invocation: this stage's call, not an earlier run's cache hit.
                cached, request = False, self.batch_fresh.pop(key)
            if reply is None:
                held = self.withheld.get(key)
                if held is not None:
                    meter.failures[held[0]] += 1
                    return Result(text=None, error=held[0], detail=held[1])
                try:
                    reply = await self._fetch(key, kwargs, meter)
                except _RowFailure as failure:
                    meter.failures[failure.reason] += 1
                    return Result(text=None, error=failure.reason, detail=failure.detail)
            meter.add_reply(self.name, reply.prompt_tokens, reply.completion_tokens, reply.cost, cached,
                            reply.reasoning_tokens, reply.cached_prompt_tokens, request=request)
            result = interpret(reply, call.schema, cached)
            if result.settled:  # usable, or failed in a way another (paid) attempt would repeat
                break
        if result.error:
            meter.failures[result.error] += 1
        return result

    # ---- k samples in one request (n_per_request) --------------------------------------
    async def call_group(self, calls: Sequence[Call], meter: Meter) -> list[Result]:
        """Results for calls that differ only in their sample index (one `group_key`), in order.

        The samples missing from the cache go in one request with n = how many are missing; choice j is
        stored under the cache key the j-th missing sample has as a request of its own (so a rerun without
        n, or with another k, finds it). Cached samples, a lone missing one, a repeat of a sample, and every
        sample once the endpoint has refused n, are answered by `call` as usual. A reply that fails its
        schema is retried on its own, as `call` does (attempt 1, 2, ...).
        """
        results: list[Result | None] = [None] * len(calls)
        missing: list[tuple[int, str, ChatRequest]] = []
        rest: list[int] = []
        seen: set[str] = set()
        for i, call in enumerate(calls):
            key, kwargs = self.request_for(call, 0)
            if key in seen or key in self.withheld or self.cached(call, 0, key) is not None:
                rest.append(i)
            else:
                seen.add(key)
                missing.append((i, key, kwargs))
        singles = [i for i, _, _ in missing]
        if len(missing) > 1 and self._n_ok:
            for i, result in (await self._call_n(calls, missing, meter)).items():
                results[i] = result
            singles = [i for i in singles if results[i] is None]
        # Repeats of a sample come after its request, so they find its reply in the cache.
        for i, result in zip(singles, await _gather([self.call(calls[i], meter) for i in singles])):
            results[i] = result
        for i in rest:
            results[i] = await self.call(calls[i], meter)
        return [r if r is not None else Result(text=None, error="not_attempted") for r in results]

    async def _call_n(self, calls: Sequence[Call], missing: list[tuple[int, str, ChatRequest]], meter: Meter) -> dict[int, Result]:
        """One request with n = len(missing) (the seed and body of the first missing sample, plus `n`).

        Returns results for the samples it answered: none when the endpoint refused n (then they go singly).
        """
        keys = [key for _, key, _ in missing]
        kwargs: ChatRequest = {**missing[0][2], "n": len(missing)}
        try:
            replies = await self._fetch_n(keys, kwargs, meter)
        except _RowFailure as failure:
            if failure.reason == "bad_request" or failure.reason.startswith("http:"):
                # The request was refused (400, 422, ...): most likely for its n; its samples go singly.
                self.refuse_n(meter, failure.detail)
                return {}
            meter.failures[failure.reason] += len(missing)
            return {i: Result(text=None, error=failure.reason, detail=failure.detail) for i, _, _ in missing}
        if len(replies) < len(missing):
            self.refuse_n(meter, f"asked for {len(missing)} choices, the reply had {len(replies)}")
        meter.add_n_request(self.name, len(replies))
        out: dict[int, Result] = {}
        retry: list[int] = []
        for j, reply in enumerate(replies):
            i = missing[j][0]
            # The request is counted once (with the first reply, which carries the prompt's tokens and cost).
            meter.add_reply(self.name, reply.prompt_tokens, reply.completion_tokens, reply.cost, False,
                            reply.reasoning_tokens, reply.cached_prompt_tokens, request=j == 0)
            out[i] = interpret(reply, calls[i].schema, False)
            if not out[i].settled:
                retry.append(i)
            elif out[i].error:
                meter.failures[out[i].error] += 1
        for i, result in zip(retry, await _gather([self._attempts(calls[i], meter, 1, out[i]) for i in retry])):
            out[i] = result
        return out

    def refuse_n(self, meter: Meter, why: str) -> None:
        meter.add_n_refused(self.name)
        if self._n_ok:
            self._n_ok = False
            self.note(f"[{self.name}] the endpoint does not take n>1 ({why}); each sample goes as its own request "
                       "for the rest of the run")

    async def _fetch_n(self, keys: list[str], kwargs: ChatRequest, meter: Meter) -> list[CachedReply]:
        """Send one request with n choices; store choice j under keys[j] before returning the replies."""
        return await self._send_and_store(keys, kwargs, meter, lambda completion: to_cached_n(completion, self.config, len(keys)))

    async def _fetch(self, key: str, kwargs: ChatRequest, meter: Meter) -> CachedReply:
        """Send one request with retries; store the reply in the cache before returning it."""
        return (await self._send_and_store([key], kwargs, meter, lambda completion: [to_cached(completion, self.config)]))[0]

    async def _send_and_store(self, keys: list[str], kwargs: ChatRequest, meter: Meter,
                              parse: Callable[[ChatCompletion], list[CachedReply]]) -> list[CachedReply]:
        """One request under the budget, the concurrency and the rate limits; its replies cached under `keys`."""
        if self._fatal is not None:
            raise self._fatal
        worst = self.worst_case_cost(kwargs)  # the whole request: the prompt once, n times the reply cap
        reserved = False
        actual = 0.0
        try:
            async with self._semaphore:
                # Reserved once a slot is ours: the worst cases of queued requests must not crowd the cap.
                await self.budget.acquire(worst)
                reserved = True
                await self._limiter.acquire(self._estimate_tokens(kwargs))
                completion = await self._send_with_retries(kwargs, meter)
            try:
                replies = parse(completion)
            except Exception as exc:  # parse never raises by design; if it does, what was paid is still kept
                raw = json.dumps(completion, default=str)
                replies = [unusable(raw, f"synthkd could not read the reply ({exc!r})") for _ in keys]
            actual = sum(r.cost for r in replies)
            try:
                for key, reply in zip(keys, replies):
                    self.cache.put(key, self.name, self.config.model, reply)
            except StorageError as exc:
                # The cache keeps what it could not write and writes it when it can; no new request is sent
                # while replies cannot be stored (each would be paid for and perhaps lost).
                self._fatal = exc
                raise
            return replies
        finally:
            if reserved:
                self.budget.settle(worst, actual, acquired=True)

    async def _send_with_retries(self, kwargs: ChatRequest, meter: Meter) -> ChatCompletion:
        try:
            try:
                # Fast path: most requests succeed at once and need no retry machinery.
                return await self._send_once(kwargs, meter)
            except Exception as exc:
                if not is_retryable(exc) or self.config.max_retries == 0 or self._dead():
                    raise
                first_error = exc
            meter.retries += 1
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.config.max_retries),
                wait=BackoffWithRetryAfter(),
                retry=retry_if_exception(lambda e: is_retryable(e) and not self._dead()),
                reraise=True,
            )
            await asyncio.sleep(BackoffWithRetryAfter.first_wait(first_error))
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        meter.retries += 1
                    # A retry is a request the provider counts: it waits for the rate limits as the first did.
                    await self._limiter.acquire(self._estimate_tokens(kwargs))
                    return await self._send_once(kwargs, meter)
        except openai.APIStatusError as exc:
            if stops_run(exc.status_code):
                self._fatal = refused_error(self.name, self.config, exc)
                raise self._fatal from None
            if rejects_request(exc.status_code):  # the endpoint refused this one request: a failed row
                raise _RowFailure("bad_request" if exc.status_code == 400 else f"http:{exc.status_code}", short_error(exc)) from None
            raise self._gave_up(exc) from None
        except Exception as exc:  # retries exhausted on a retryable error
            raise self._gave_up(exc) from None
        raise AssertionError("unreachable")

    def _gave_up(self, exc: Exception) -> Exception:
        """What a request's last error becomes once retrying is over: the run stops if the server died."""
        died = self._dead()
        if died:
            self._fatal = ServeError(f"the server of endpoint {self.name!r} died: {died}")
            return self._fatal
        if is_retryable(exc):
            return _RowFailure(f"gave_up:{error_kind(exc)}", short_error(exc))
        return exc

    def _dead(self) -> str | None:
        return self.pool.all_dead()

    async def _send_once(self, kwargs: ChatRequest, meter: Meter) -> ChatCompletion:
        """POST /chat/completions through the openai client (its documented custom-request API).

        The client still does the HTTP, auth and status-code errors; skipping its typed request
        transform and response models saves about a third of its CPU per request, which is the
        bottleneck at hundreds of requests per second on a small machine.
        """
        body = request_body(kwargs)
        # An attempt waits for a slot under the adaptive limit; a retry waiting out Retry-After holds none.
        adaptive = self.adaptive
        ticket = await adaptive.acquire() if adaptive is not None else 0
        try:
            replica = self.pool.pick()
        except BaseException:
            if adaptive is not None:
                adaptive.release()
            raise
        replica.outstanding += 1
        try:
            # cast_to, the raw HTTP response: its body as it came (no response model) and its headers
            # (no more CPU than cast_to=bytes); status errors still raise.
            # No redirects: a base_url that redirects is misconfigured, and the body would go to another host.
            response = await replica.client.post("/chat/completions", body=body, cast_to=_RAW_RESPONSE,
                                                 options={"follow_redirects": False})
        except Exception as exc:
            self.pool.failed(replica, exc)
            if getattr(exc, "status_code", None) == 429:
                if adaptive is not None:
                    adaptive.on_rate_limit(ticket)
                    meter.add_adaptive(self.name, adaptive.limit, adaptive.lowest, True)
                    self._learn(getattr(getattr(exc, "response", None), "headers", None) or {}, meter)
                else:
                    meter.add_rate_limited(self.name)
            raise
        finally:
            replica.outstanding -= 1
            if adaptive is not None:
                adaptive.release()
        self.pool.succeeded(replica)
        content = response.content
        if adaptive is not None:
            adaptive.on_success()
            adaptive.on_headers(response.headers, ticket)
            meter.add_adaptive(self.name, adaptive.limit, adaptive.lowest, False)
            self._learn(response.headers, meter)
        if len(self.pool.replicas) > 1:
            meter.add_replica_call(self.name, replica.url)
        try:
            data: ChatCompletion = json.loads(content)  # checked below; its values are checked where replies.py reads them
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RetryableReplyError(f"reply body is not JSON: {exc}") from None
        if not isinstance(data, dict) or not data.get("choices"):
            raise RetryableReplyError("reply has no choices")
        return data

    def _learn(self, headers: Any, meter: Meter) -> None:
        """The provider's announced quotas (x-ratelimit-limit-*) become rate limits below rpm / tpm (adaptive only)."""
        limiter = self._limiter
        before = (limiter.learned_rpm, limiter.learned_tpm)
        limiter.learn(headers)
        if (limiter.learned_rpm, limiter.learned_tpm) != before:
            meter.add_learned_limits(self.name, limiter.learned_rpm, limiter.learned_tpm)

    def _estimate_tokens(self, kwargs: ChatRequest) -> int:
        chars = sum(len(m.get("content") or "") for m in kwargs["messages"])
        return chars // 4 + int(_cap(kwargs) or 256) * int(kwargs.get("n") or 1)

    def worst_case_cost(self, kwargs: ChatRequest) -> float:
        prices = self.config.prices
        if not (prices.input_per_million or prices.output_per_million):
            return 0.0
        chars = sum(len(m.get("content") or "") for m in kwargs["messages"])
        # A token is at least one character for every tokenizer in use, so chars bounds prompt tokens.
        # No prompt-cache discount here: whether the provider will serve the prompt from its cache is unknown.
        return prices.cost(chars + 16, int(_cap(kwargs) or 4096) * int(kwargs.get("n") or 1))


def request_body(kwargs: ChatRequest) -> ChatRequest | dict[str, Any]:
    """The JSON body of a request: extra_body's fields go into the body itself (kwargs stays as it is for a retry).

    With extra_body, an open dict: it holds whatever fields the user passes to their server, under any names."""
    extra = kwargs.get("extra_body")
    return {**{k: v for k, v in kwargs.items() if k != "extra_body"}, **extra} if extra else kwargs


def _cap(kwargs: ChatRequest) -> int | None:
    """The reply-token cap of a request, under whichever name it is sent."""
    return kwargs.get("max_tokens") or kwargs.get("max_completion_tokens")


def _print_note(text: str) -> None:
    """Where a client's notes go when it was given no `note` (the progress output's console)."""
    from synthkd.progress import console

    console.print(text, highlight=False, markup=False)


async def _gather(awaitables: list[Any]) -> list[Any]:
    """Results of awaitables run together; once all have finished, the first exception among them is raised."""
    if not awaitables:
        return []
    done = await asyncio.gather(*awaitables, return_exceptions=True)
    for item in done:
        if isinstance(item, BaseException):
            raise item
    return done


def _raw_response_type() -> Any:
    """The HTTP response class the openai client returns as it is for `cast_to` (httpx2's from openai 3, httpx's before)."""
    try:
        from openai._httpx2 import http_response_types
    except ImportError:
        import httpx

        return httpx.Response
    return http_response_types()[0]


_RAW_RESPONSE = _raw_response_type()


class _RowFailure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail
