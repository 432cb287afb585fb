"""The one retry layer: which errors are worth another try, and how long to wait first."""

from __future__ import annotations

import random

import openai
from tenacity import RetryCallState

# Errors after which the same request may well succeed (and every other 5xx but 501). Everything else
# is either a problem of the whole endpoint (STOPS_RUN, redirects: stop the run) or of this one row (400,
# 413, 422, other 4xx: kept as a failed record).
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
# The endpoint cannot be used at all: bad key (401/403), no credit (402), no such model or route (404,
# 405), no chat completions there (501).
STOPS_RUN = frozenset({401, 402, 403, 404, 405, 501})


def retryable_status(code: int) -> bool:
    """Whether a request answered with this HTTP status may succeed when sent again."""
    return code in RETRYABLE_STATUS or (code >= 500 and code not in STOPS_RUN)


def rejects_request(code: int) -> bool:
    """Whether this HTTP status refuses the one request (400, 413, 422, ...): its row fails, the run goes on."""
    return 400 <= code < 500 and not stops_run(code) and not retryable_status(code)


def stops_run(code: int) -> bool:
    """Whether this HTTP status says the endpoint cannot be used at all (a redirect included: the
    URL is not the API's, and following it could send the key to another host)."""
    return code in STOPS_RUN or 300 <= code < 400


class RetryableReplyError(Exception):
    """A 200 answer that is unusable but may be fine next time (e.g. a body that is not JSON)."""


def is_retryable(exc: BaseException) -> bool:
    """True for rate limits, 5xx, timeouts, dropped connections and garbled bodies."""
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, RetryableReplyError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return retryable_status(exc.status_code)
    if isinstance(exc, openai.APIResponseValidationError):
        return True
    return False


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The server's Retry-After (seconds or retry-after-ms), if the error carries one."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return float(value)
        except ValueError:
            return None  # an HTTP date: fall back to backoff
    return None


class BackoffWithRetryAfter:
    """tenacity wait strategy: Retry-After when given (capped), else exponential backoff with full jitter."""

    def __init__(self, initial: float = 0.5, maximum: float = 60.0) -> None:
        self.initial, self.maximum = initial, maximum

    @staticmethod
    def first_wait(exc: BaseException) -> float:
        """Wait before the first retry (the fast path's failure is outside tenacity's count)."""
        told = retry_after_seconds(exc)
        return min(told, 60.0) + random.uniform(0, 0.1) if told is not None else random.uniform(0.25, 0.5)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        told = retry_after_seconds(exc)
        if told is not None:
            return min(told, self.maximum) + random.uniform(0, 0.1)
        ceiling = min(self.maximum, self.initial * (2 ** state.attempt_number))
        return random.uniform(ceiling / 2, ceiling)
