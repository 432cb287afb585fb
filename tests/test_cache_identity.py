"""The request cache names a remote endpoint by its first base URL and model (defect 2 of the reliability issue):
two servers that both call their model `local` never answer from each other's cache, a run cached by an older
synthkd (model alone in the key) is not paid for again, and `cache_identity` keeps the replies of a moved server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from synthkd.client.accounting import Budget, Meter
from synthkd.client.cache import CachedReply, RequestCache
from synthkd.client.endpoint import Call, EndpointClient
from synthkd.config.endpoints import EndpointConfig, Sampling
from tests.conftest import REPO, read_rows, remote_endpoint, run_cli, seeds_file
from tests.fakeserver import running_server

N = 6


def _two_endpoint_pipeline(tmp: Path, teacher_url: str, student_url: str, **student_extra: Any) -> Path:
    """Teacher and student both serve a model called `local`; each answers the same seeds."""
    seeds = seeds_file(tmp, N)
    stages: list[dict[str, Any]] = [{"name": "seeds", "type": "load", "path": str(seeds)}]
    for who in ("teacher", "student"):
        stages.append({"name": f"{who}_answers", "type": "generate", "input": "seeds", "endpoint": who,
                       "template": "lion/answer.jinja2", "sampling": {"max_tokens": 16, "seed": 3}})
    data = {"name": "two", "prompts_dir": str(REPO / "prompts"), "stages": stages,
            "endpoints": {"teacher": remote_endpoint(teacher_url, "local"),
                          "student": remote_endpoint(student_url, "local", **student_extra)}}
    path = tmp / "two.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_two_servers_with_the_same_model_name_each_answer_their_own_requests(tmp_path: Path) -> None:
    with running_server() as teacher, running_server() as student:
        pipeline = _two_endpoint_pipeline(tmp_path, teacher.base_url, student.base_url)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
        # Each server answered every one of its rows: the student's rows are the student's replies.
        assert teacher.stats().get("chat_requests", 0) == N
        assert student.stats().get("chat_requests", 0) == N
        assert len(read_rows(out, "student_answers")) == N

        # The student moves to a new URL serving the same model: by default the cache cannot know that, so it asks
        # again; with cache_identity naming the old server the replies already paid for are used.
        with running_server() as moved:
            pipeline = _two_endpoint_pipeline(tmp_path, teacher.base_url, moved.base_url,
                                              cache_identity=f"local@{student.base_url}")
            proc = run_cli("run", str(pipeline), "--out", str(out))
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert moved.stats().get("chat_requests", 0) == 0
            assert teacher.stats().get("chat_requests", 0) == N  # unchanged: nothing was asked twice


def test_replies_cached_under_the_old_key_are_reused_by_their_own_endpoint_only(tmp_path: Path) -> None:
    """A cache written when the key held the model alone: the endpoint that paid for a reply finds it; another
    endpoint with the same model name does not."""
    call = Call([{"role": "user", "content": "Name a prime number."}], Sampling(max_tokens=16, temperature=0.0))
    cache = RequestCache(tmp_path / "cache.sqlite")

    def client(name: str, url: str, old: bool = False) -> EndpointClient:
        cfg = EndpointConfig(base_url=url, model="local")
        if old:  # the key as synthkd computed it before the URL was part of it
            return EndpointClient(name, cfg, base_url=cfg.base_urls, api_key=None, cache=cache, budget=Budget(None, 0.0),
                                  model_identity=cfg.model)
        return EndpointClient(name, cfg, base_url=cfg.base_urls, api_key=None, cache=cache, budget=Budget(None, 0.0),
                              model_identity=cfg.identity, legacy_identity=cfg.model)

    async def ask(name: str, url: str) -> tuple[str | None, bool]:
        c = client(name, url)
        try:
            result = await c.call(call, Meter())
        finally:
            await c.aclose()
        return result.text, result.cached

    with running_server() as server:
        old = client("teacher", server.base_url, old=True)
        legacy_key = old.request_for(call, 0)[0]
        asyncio.run(old.aclose())
        cache.put(legacy_key, "teacher", "local", CachedReply("Seven.", "stop", 5, 2, 0.0))
        assert ask_and_count(lambda: ask("teacher", server.base_url), server) == (("Seven.", True), 0)
        text, cached = asyncio.run(ask("student", server.base_url))
        assert not cached and text != "Seven." and server.stats().get("chat_requests", 0) == 1
        # The old reply is read through its old key, not copied: the cache's total cost (the basis of budget_usd)
        # counts it once.
        assert cache.count() == 2


def ask_and_count(ask: Any, server: Any) -> tuple[tuple[str | None, bool], int]:
    """(what `ask` returned, chat requests the server received meanwhile)."""
    before = server.stats().get("chat_requests", 0)
    got = asyncio.run(ask())
    return got, server.stats().get("chat_requests", 0) - before
