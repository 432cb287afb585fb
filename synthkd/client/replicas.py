"""Several servers behind one endpoint name: pick the least-loaded replica, take out the ones that die.

An endpoint with one base URL is a pool of one, so this is the only path a request takes. The
request cache, the budget and the accounting stay with the endpoint client (on the driver), which
is why spreading calls over replicas keeps resume and "no call repeated" exactly as they were.
"""

from __future__ import annotations

import base64
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable

import openai

from synthkd.config.endpoints import EndpointConfig

# Consecutive connection failures or timeouts after which a replica is taken out of rotation.
OUT_AFTER = 3
# How long a remote replica taken out waits before it is tried again (a served one waits for its restart).
COOLDOWN_S = 30.0


@dataclass
class Replica:
    """One OpenAI-compatible server of an endpoint."""

    url: str
    client: openai.AsyncOpenAI
    alive: Callable[[], str | None] | None = None  # served replicas: None while the process runs, else why it died
    outstanding: int = 0
    calls: int = 0
    failures_in_a_row: int = 0
    out_until: float = 0.0  # taken out of rotation until then (inf: until restarted)
    death: str | None = None

    def available(self, now: float) -> bool:
        return now >= self.out_until


@dataclass
class ReplicaPool:
    """The replicas of one endpoint, and the choice of which one takes the next request."""

    replicas: list[Replica] = field(default_factory=list)
    on_death: Callable[[int, str], None] | None = None  # served replicas: ask for a restart
    _retired: list[openai.AsyncOpenAI] = field(default_factory=list)

    @classmethod
    def connect(cls, config: EndpointConfig, urls: list[str], api_key: str | None,
                alive: list[Callable[[], str | None] | None] | None = None,
                on_death: Callable[[int, str], None] | None = None) -> "ReplicaPool":
        """One openai client per URL (retries off: the endpoint client's retry layer is the only one)."""
        replicas = []
        for i, url in enumerate(urls):
            http_client = openai.DefaultAioHttpClient() if config.transport == "aiohttp" else None
            bare, basic = split_credentials(url)
            client = openai.AsyncOpenAI(base_url=bare, api_key=api_key or "not-needed", max_retries=0,
                                        timeout=config.timeout_s, http_client=http_client,
                                        default_headers={"Authorization": basic} if basic and not api_key else None)
            replicas.append(Replica(url, client, alive[i] if alive else None))
        return cls(replicas, on_death)

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def pick(self) -> Replica:
        """The available replica with the fewest requests in flight (ties: the one used least)."""
        now = time.monotonic()
        self._check_deaths()
        ready = [r for r in self.replicas if r.available(now)]
        if not ready:  # every one is out: try the one that comes back first rather than fail the row here
            ready = [min(self.replicas, key=lambda r: r.out_until)]
        return min(ready, key=lambda r: (r.outstanding, r.calls))

    def succeeded(self, replica: Replica) -> None:
        replica.calls += 1
        replica.failures_in_a_row = 0

    def failed(self, replica: Replica, exc: BaseException) -> None:
        """A request to this replica failed; connection-level failures in a row take it out."""
        if not isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)):
            return  # a 429 or 5xx is the server answering: it is alive
        replica.failures_in_a_row += 1
        if self._check_death(self.replicas.index(replica)):
            return
        if replica.failures_in_a_row >= OUT_AFTER and len(self.replicas) > 1:
            replica.out_until = time.monotonic() + COOLDOWN_S

    def reconnect(self, config: EndpointConfig, api_key: str | None, index: int, url: str, alive: Callable[[], str | None] | None) -> None:
        """A restarted replica rejoins the rotation at its new URL (the old client closes when idle)."""
        fresh = ReplicaPool.connect(config, [url], api_key, [alive]).replicas[0]
        self._retired.append(self.replicas[index].client)
        self.replicas[index] = fresh

    def all_dead(self) -> str | None:
        """Why the endpoint cannot answer at all: every replica's process is gone; else None."""
        self._check_deaths()
        deaths = [r.death for r in self.replicas]
        if all(deaths) and self.on_death is None:
            return "; ".join(d for d in deaths if d)
        return None

    def _check_deaths(self) -> None:
        for i in range(len(self.replicas)):
            self._check_death(i)

    def _check_death(self, index: int) -> bool:
        replica = self.replicas[index]
        if replica.death is not None:
            return True
        died = replica.alive() if replica.alive is not None else None
        if died is None:
            return False
        replica.death, replica.out_until = died, float("inf")
        if self.on_death is not None:
            self.on_death(index, died)
        return True

    async def aclose(self) -> None:
        for client in [r.client for r in self.replicas] + self._retired:
            await client.close()


def split_credentials(url: str) -> tuple[str, str | None]:
    """(the URL without `user:password@`, the Basic Authorization header they make, or None).

    Credentials in a base URL are sent as a header, as browsers and httpx do: aiohttp refuses them beside the
    Authorization header the openai client always sets, and urllib reads them as part of the host name."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), f"Basic {token}"
