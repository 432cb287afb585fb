"""RPM/TPM buckets on a fake clock: bursts up to the quota, then requests are spaced by the rate."""

import asyncio

import pytest

from synthkd.client import ratelimit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(ratelimit.time, "monotonic", c.monotonic)
    monkeypatch.setattr(ratelimit.asyncio, "sleep", c.sleep)
    return c


def test_rpm_bucket_spaces_requests_after_the_burst(clock: FakeClock) -> None:
    limiter = ratelimit.RateLimiter(rpm=60, tpm=None)

    async def go() -> list[float]:
        stamps = []
        for _ in range(63):
            await limiter.acquire(10)
            stamps.append(clock.now)
        return stamps

    stamps = asyncio.run(go())
    assert stamps[59] == 0.0  # a minute's quota goes at once
    assert [round(s, 6) for s in stamps[60:]] == [1.0, 2.0, 3.0]  # then one a second


def test_tpm_bucket_waits_for_tokens(clock: FakeClock) -> None:
    limiter = ratelimit.RateLimiter(rpm=None, tpm=6000)  # 100 tokens a second

    async def go() -> None:
        await limiter.acquire(6000)
        await limiter.acquire(500)

    asyncio.run(go())
    assert round(clock.now, 6) == 5.0


def test_oversized_request_does_not_deadlock(clock: FakeClock) -> None:
    limiter = ratelimit.RateLimiter(rpm=None, tpm=100)
    asyncio.run(limiter.acquire(10_000))
    assert clock.now == 0.0
