"""Hostile endpoints: replies synthkd cannot store as they are, odd HTTP statuses, empty and filtered replies,
a web page at base_url, redirects. Every paid reply is kept, a row's problem is a failed row, an endpoint's
problem is one line, and no API key is sent to another host."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from synthkd.jsonl import read_jsonl
import yaml

from synthkd.client.accounting import Budget, Meter
from synthkd.client.cache import RequestCache
from synthkd.client.endpoint import Call, EndpointClient
from synthkd.client.refusals import redirect_error
from synthkd.client.replies import Result, empty_detail, interpret, to_cached, to_cached_n
from synthkd.config.endpoints import EndpointConfig, Prices, Sampling
from synthkd.errors import EndpointError
from synthkd.runner import _check_probe
from tests.conftest import generate_pipeline, read_rows, run_cli, run_json
from tests.fakeserver import ServerHandle, running_server

PRICES = Prices(input_per_million=1.0, output_per_million=2.0)
KEY = "sk-test-hostile-0123456789"


def _one_line_error(proc: Any, code: int, *fragments: str) -> str:
    """The CLI's one error line (asserted: that exit code, no traceback, the fragments in it)."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("synthkd: error:")]
    assert len(errors) == 1 and proc.stderr.rstrip().splitlines()[-1] == errors[0], proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def _unseeded(pipeline: Path, **endpoint: Any) -> Path:
    """The pipeline with an unseeded generate stage (so the test server's faults fall on the same prompts every
    run) and the given endpoint settings."""
    data = yaml.safe_load(pipeline.read_text())
    data["stages"][-1]["sampling"] = {"max_tokens": 64}
    data["endpoints"]["teacher"].update(endpoint)
    pipeline.write_text(yaml.safe_dump(data, sort_keys=False))
    return pipeline


def _client(base_url: str, cache: RequestCache, **extra: Any) -> EndpointClient:
    cfg = EndpointConfig(base_url=base_url, model="teacher", timeout_s=5, max_retries=1, prices=PRICES, **extra)
    return EndpointClient("teacher", cfg, base_url=cfg.base_urls, api_key=KEY, cache=cache, budget=Budget(None, 0.0))


def _ask(client: EndpointClient, prompt: str, meter: Meter | None = None) -> Result:
    async def go() -> Result:
        try:
            return await client.call(Call([{"role": "user", "content": prompt}], Sampling(max_tokens=32)), meter or Meter())
        finally:
            await client.aclose()

    return asyncio.run(go())


# ---- defect 5: statuses other than the handled ones ---------------------------------------------
def test_per_row_rejections_are_failed_rows_and_the_run_goes_on(tmp_path: Path) -> None:
    faults = [{"kind": "status", "status": code, "rate": 0.25, "times": -1} for code in (413, 422, 415)]
    with running_server(faults=faults) as server:
        pipeline = _unseeded(generate_pipeline(tmp_path, server.base_url, n=12))
        proc = run_cli("run", str(pipeline), "--out", str(tmp_path / "run"))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    rows, failed = read_rows(tmp_path / "run", "answers"), read_rows(tmp_path / "run", "answers", failed=True)
    assert rows and failed and len(rows) + len(failed) == 12
    assert {f["reason"] for f in failed} <= {"http:413", "http:422", "http:415"}
    assert all("Injected status" in f["detail"] for f in failed)
    assert sum(run_json(tmp_path / "run")["stages"]["answers"]["failures"].values()) == len(failed)


def test_wrong_endpoint_status_stops_the_run_with_one_line(tmp_path: Path) -> None:
    with running_server(faults=[{"kind": "status", "status": 405, "rate": 1.0, "times": -1}]) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=4)
        proc = run_cli("run", str(pipeline), "--out", str(tmp_path / "run"))
        chat = server.stats().get("chat_requests", 0)
    _one_line_error(proc, 2, "refused the request (405)", "endpoints.teacher.base_url", "/v1")
    assert chat <= 4  # stopped at the first answers, not retried
    assert run_json(tmp_path / "run")["status"] == "failed"


@pytest.mark.parametrize(("status", "body", "fragment"), [
    (200, b"<!doctype html><html><body>Open WebUI</body></html>", "not JSON"),
    (200, b"[]", "not JSON"),
    (405, b'{"detail": "Method Not Allowed"}', "answered 405"),
    (501, b"", "answered 501"),
])
def test_preflight_wants_an_openai_compatible_answer(status: int, body: bytes, fragment: str) -> None:
    with pytest.raises(EndpointError) as caught:
        _check_probe("teacher", None, "http://host:8080", status, body, None)
    message = caught.value.message()
    assert fragment in message and "OpenAI-compatible" in message and "/v1" in message


@pytest.mark.parametrize(("status", "body"), [
    (200, b'{"object": "list", "data": []}'),
    (200, b"{" + b" " * (1 << 17)),  # a model list longer than what the preflight reads
    (404, b'{"error": {"message": "no /models here"}}'),  # a provider without /models
    (500, b"oops"),
])
def test_preflight_accepts_api_answers(status: int, body: bytes) -> None:
    _check_probe("teacher", None, "http://host:8080/v1", status, body, None)


# ---- defect 4: replies that cannot be stored as they are -----------------------------------------
@pytest.fixture(scope="module")
def server() -> Any:
    with running_server() as handle:
        yield handle


def _fault(server: ServerHandle, kind: str, **extra: Any) -> None:
    server.reset()
    server.set_faults([{"kind": kind, "rate": 1.0, "times": -1, **extra}])


def test_content_as_a_list_of_parts_is_joined(server: ServerHandle, tmp_path: Path) -> None:
    _fault(server, "parts")
    parts = _ask(_client(server.base_url, RequestCache(tmp_path / "parts.sqlite")), "the same prompt")
    server.set_faults([])
    plain = _ask(_client(server.base_url, RequestCache(tmp_path / "plain.sqlite")), "the same prompt")
    assert parts.ok and parts.text == plain.text and plain.text  # the text parts joined, the image part ignored


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": "12.0", "completion_tokens": "7"},
    {"prompt_tokens": None, "completion_tokens": -3, "completion_tokens_details": {"reasoning_tokens": "x"}},
    {"prompt_tokens": 1.5e400, "completion_tokens": [1]},
    "not an object",
])
def test_odd_usage_values_are_coerced_and_the_reply_kept(server: ServerHandle, tmp_path: Path, usage: Any) -> None:
    _fault(server, "bad_usage", usage=usage)
    cache = RequestCache(tmp_path / "cache.sqlite")
    meter = Meter()
    result = _ask(_client(server.base_url, cache), "count me", meter)
    server.set_faults([])
    assert result.ok and result.text
    assert cache.count() == 1 and meter.calls == 1
    if isinstance(usage, dict) and usage.get("prompt_tokens") == "12.0":
        assert cache.total_cost() == pytest.approx((12 * 1.0 + 7 * 2.0) / 1e6)  # string counts still priced


def test_an_unreadable_paid_reply_is_a_cached_failed_row(server: ServerHandle, tmp_path: Path) -> None:
    _fault(server, "no_message")
    cache = RequestCache(tmp_path / "cache.sqlite")
    result = _ask(_client(server.base_url, cache), "no message for me")
    assert result.error == "unusable_reply" and "no message" in (result.detail or "")
    assert result.text and '"choices"' in result.text  # the raw body, for the failed row
    assert cache.count() == 1 and cache.total_cost() > 0  # stored, with what its usage says it cost
    before = server.stats()["chat_requests"]
    again = _ask(_client(server.base_url, cache), "no message for me")  # a rerun: the failed row, unpaid
    assert server.stats()["chat_requests"] == before and again.cached and again.error == "unusable_reply"
    server.set_faults([])


@pytest.mark.parametrize(("code", "fragment"), [(405, "/v1"), (501, "/v1"), (402, "no credit"), (404, "model")])
def test_statuses_that_stop_the_run(server: ServerHandle, tmp_path: Path, code: int, fragment: str) -> None:
    _fault(server, "status", status=code)
    with pytest.raises(EndpointError) as caught:
        _ask(_client(server.base_url, RequestCache(tmp_path / "cache.sqlite")), "anything")
    server.set_faults([])
    assert f"refused the request ({code})" in caught.value.message() and fragment in caught.value.message()
    assert server.stats()["chat_requests"] == 1  # not retried


# ---- defect 6: empty and filtered replies ---------------------------------------------------------
def test_a_filtered_reply_is_a_cached_failed_row(server: ServerHandle, tmp_path: Path) -> None:
    _fault(server, "content_filter")
    cache = RequestCache(tmp_path / "cache.sqlite")
    result = _ask(_client(server.base_url, cache), "make it filtered")
    assert result.error == "content_filter" and result.detail
    assert server.stats()["chat_requests"] == 1 and cache.count() == 1  # not asked again: it would be filtered again
    again = _ask(_client(server.base_url, cache), "make it filtered")
    assert server.stats()["chat_requests"] == 1 and again.cached and again.error == "content_filter"  # rerun: unpaid
    server.set_faults([])


def test_an_empty_reply_is_cached_as_it_came(server: ServerHandle, tmp_path: Path) -> None:
    # Paid, so kept: a stage keeping training data fails its row (below), an evaluation scores it 0.
    _fault(server, "empty")
    cache = RequestCache(tmp_path / "cache.sqlite")
    result = _ask(_client(server.base_url, cache), "say nothing")
    assert result.ok and result.text == "" and "content is empty" in (empty_detail(result) or "")
    again = _ask(_client(server.base_url, cache), "say nothing")
    assert server.stats()["chat_requests"] == 1 and again.cached and again.text == ""
    server.set_faults([])


def test_no_training_row_without_an_answer(tmp_path: Path) -> None:
    faults = [{"kind": "empty", "rate": 0.2, "times": -1}, {"kind": "content_filter", "rate": 0.2, "times": -1},
              {"kind": "no_message", "rate": 0.2, "times": -1}, {"kind": "parts", "rate": 0.3, "times": -1}]
    with running_server(faults=faults) as server:
        pipeline = _unseeded(generate_pipeline(tmp_path, server.base_url, n=20))
        out = tmp_path / "run"
        assert run_cli("run", str(pipeline), "--out", str(out)).returncode == 0
    rows, failed = read_rows(out, "answers"), read_rows(out, "answers", failed=True)
    assert rows and all(r["response"].strip() for r in rows) and len(rows) + len(failed) == 20
    assert {f["reason"] for f in failed} == {"empty_reply", "content_filter", "unusable_reply"}
    assert all(f["raw"] for f in failed if f["reason"] == "unusable_reply")
    assert run_json(out)["stages"]["answers"]["failures"] == dict(Counter(f["reason"] for f in failed))


# ---- defect 7: a web page at base_url; a stage whose every row fails -------------------------------
def test_html_page_at_base_url_fails_the_preflight(tmp_path: Path) -> None:
    with running_server(html=True) as server:
        pipeline = generate_pipeline(tmp_path, server.root_url, n=4)
        proc = run_cli("run", str(pipeline), "--out", str(tmp_path / "run"))
        requests = server.stats()["requests"]
    _one_line_error(proc, 2, f"{server.root_url}/models", "OpenAI-compatible", "/v1")
    assert requests == 2  # the probe and the stats query: nothing paid


def test_a_stage_whose_every_row_fails_the_same_way_stops_the_run(tmp_path: Path) -> None:
    with running_server(faults=[{"kind": "status", "status": 422, "rate": 1.0, "times": -1}]) as server:
        pipeline = generate_pipeline(tmp_path, server.base_url, n=5)
        proc = run_cli("run", str(pipeline), "--out", str(tmp_path / "run"))
    _one_line_error(proc, 1, "stage 'answers'", "no rows from 5 input rows", "http:422", "Injected status 422")
    state = run_json(tmp_path / "run")
    assert state["status"] == "failed" and state["stages"]["answers"]["status"] == "failed"
    assert state["stages"]["answers"]["failures"] == {"http:422": 5}
    assert not (tmp_path / "run" / "datasets" / "answers" / "_done.json").exists()  # a rerun tries it again
    kept = read_jsonl(tmp_path / "run" / "failed" / "answers.jsonl")  # the failed rows are not dropped
    assert len(kept) == 5 and {row["reason"] for row in kept} == {"http:422"}


# ---- defect 14: redirects never carry the key to another host ---------------------------------------
def test_preflight_does_not_follow_a_redirect_to_another_host(tmp_path: Path) -> None:
    with running_server() as other:
        with running_server(redirect_to=f"http://127.0.0.1:{other.port}?token=abc") as redirector:
            pipeline = generate_pipeline(tmp_path, redirector.base_url, n=3, api_key_env="SYNTHKD_HOSTILE_KEY")
            proc = run_cli("run", str(pipeline), "--out", str(tmp_path / "run"), env={"SYNTHKD_HOSTILE_KEY": KEY})
            seen = other.stats()
    assert seen["authorization"] == [] and seen["requests"] == 1  # the stats query alone: nothing reached it
    line = _one_line_error(proc, 2, "redirect (307)", f"http://127.0.0.1:{other.port}/v1/models", "base_url")
    assert "token=abc" not in line and KEY not in proc.stderr + proc.stdout


def test_redirect_message_hides_credentials() -> None:
    message = redirect_error("teacher", 302, "https://user:secret@gw.example/v1/models?api_key=abc#x").message()
    assert "https://***@gw.example/v1/models?***" in message and "secret" not in message and "abc" not in message


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_calls_do_not_follow_a_redirect(tmp_path: Path, transport: str) -> None:
    with running_server() as other, running_server(redirect_to=other.root_url) as redirector:
        client = _client(redirector.base_url, RequestCache(tmp_path / "cache.sqlite"), transport=transport)
        with pytest.raises(EndpointError) as caught:
            _ask(client, "where am I?")
        seen = other.stats()
    assert seen["authorization"] == [] and seen["requests"] == 1  # the stats query alone: nothing reached it
    assert "redirect (307)" in caught.value.message() and f"{other.root_url}/v1/chat/completions" in caught.value.message()


# ---- the reply parser never raises -----------------------------------------------------------------
CONFIG = EndpointConfig(base_url="http://127.0.0.1:9/v1", model="teacher", prices=PRICES)


def _check_parsed(replies: list[Any], cache: RequestCache) -> None:
    for reply in replies:
        result = interpret(reply, None, False)
        assert isinstance(result, Result) and (result.ok or result.error)
        assert empty_detail(result) is None or not (result.text or "").strip()
        cache.put("k", "teacher", "teacher", reply)  # whatever came back can be stored ...
        assert cache.get("k") is not None  # ... and read back


def test_reply_parser_on_hand_picked_hostile_replies(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "cache.sqlite")
    odd: list[Any] = [
        None, [], "text", {"choices": None}, {"choices": [None]}, {"choices": [{"message": None}]},
        {"choices": [{"message": {"content": 42}}]}, {"choices": [{"message": {"content": [{"type": "text", "text": 5}]}}]},
        {"choices": [{"message": {"content": "\ud800 lone surrogate", "reasoning_content": {"a": 1}}, "finish_reason": {"x": 1}}]},
        {"choices": [{"message": {"content": None, "refusal": "I can't help with that."}}]},
        {"choices": [{"text": "legacy completion"}], "usage": {"prompt_tokens": 10**40}},
        {"choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"logprob": "nan"}, 3]}}]},
        {"choices": [{"message": {"content": "y"}, "finish_reason": "\udfff"}]},
    ]
    for completion in odd:
        _check_parsed([to_cached(completion, CONFIG)], cache)
        _check_parsed(to_cached_n(completion, CONFIG, 3), cache)
    refused = interpret(to_cached(odd[9], CONFIG), None, False)
    assert refused.error == "refusal" and "can't help" in (refused.detail or "")


def test_reply_parser_never_raises_fuzzed(tmp_path: Path) -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                          max_leaves=12)
    part = st.fixed_dictionaries({"type": st.sampled_from(["text", "output_text", "image_url", "thinking"]), "text": values})
    message = st.fixed_dictionaries({}, optional={
        "content": values | st.lists(part | values, max_size=3), "reasoning_content": values, "refusal": values,
        "tool_calls": values})
    choice = st.fixed_dictionaries({}, optional={"message": message | values, "finish_reason": values, "index": values,
                                                 "logprobs": values, "text": values}) | values
    usage = st.fixed_dictionaries({}, optional={
        "prompt_tokens": values, "completion_tokens": values, "completion_tokens_details": values,
        "prompt_tokens_details": st.fixed_dictionaries({}, optional={"cached_tokens": values})}) | values
    completion = st.fixed_dictionaries({}, optional={"choices": st.lists(choice, max_size=3) | values, "usage": usage}) | values
    cache = RequestCache(tmp_path / "cache.sqlite")

    @hypothesis.settings(max_examples=300, deadline=None, database=None)
    @hypothesis.given(completion, st.integers(min_value=1, max_value=4))
    def check(body: Any, asked: int) -> None:
        _check_parsed([to_cached(body, CONFIG)], cache)
        _check_parsed(to_cached_n(body, CONFIG, asked), cache)

    check()
