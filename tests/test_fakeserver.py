"""Tests for the fault-injecting fake OpenAI server (tests/fakeserver.py)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import BaseModel, Field

from tests.fakeserver import REPO_ROOT, ServerHandle, fraction, running_server, schema_instance

MODEL = "fake-model"


class Address(BaseModel):
    city: str
    zip_code: int = Field(ge=10000, le=99999)
    ratio: float = Field(gt=0, lt=1)


class Record(BaseModel):
    rating: int = Field(ge=1, le=10)
    summary: str
    tags: list[str]
    address: Address
    nickname: str | None = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    log_path = tmp_path_factory.mktemp("fakeserver") / "requests.jsonl"
    with running_server(models=[MODEL, "other-model"], log_path=log_path, log_sync=True) as handle:
        yield handle


@pytest.fixture()
def client(server: ServerHandle) -> Iterator[openai.OpenAI]:
    server.set_faults([])
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=10) as c:
        yield c


def ask(client: openai.OpenAI, prompt: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=kwargs.pop("model", MODEL), messages=[{"role": "user", "content": prompt}], **kwargs)


# ------------------------------------------------------------ normal replies --
def test_completion_is_deterministic(client: openai.OpenAI) -> None:
    first = ask(client, "tell me a story", seed=1, temperature=0.7)
    again = ask(client, "tell me a story", seed=1, temperature=0.7, max_tokens=500)
    other_seed = ask(client, "tell me a story", seed=2, temperature=0.7)
    other_temp = ask(client, "tell me a story", seed=1, temperature=0.2)
    text = first.choices[0].message.content
    assert first.object == "chat.completion" and first.model == MODEL
    assert first.choices[0].message.role == "assistant" and first.choices[0].finish_reason == "stop"
    assert 24 <= len(text.split()) <= 40
    assert again.choices[0].message.content == text
    assert other_seed.choices[0].message.content != text
    assert other_temp.choices[0].message.content != text
    assert first.usage.prompt_tokens == 4
    assert first.usage.completion_tokens == len(text.split())
    assert first.usage.total_tokens == 4 + len(text.split())


def test_n_logprobs_and_max_tokens(client: openai.OpenAI) -> None:
    reply = ask(client, "several answers please", n=3, logprobs=True, max_tokens=5)
    texts = [c.message.content for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1, 2] and len(set(texts)) == 3
    for choice in reply.choices:
        assert choice.finish_reason == "length" and len(choice.message.content.split()) == 5
        tokens = choice.logprobs.content
        assert [t.token for t in tokens] == choice.message.content.split()
        assert all(t.logprob < 0 and t.bytes is None and t.top_logprobs == [] for t in tokens)
    assert reply.usage.completion_tokens == 15
    repeat = ask(client, "several answers please", n=3, logprobs=True, max_completion_tokens=5)
    assert [c.message.content for c in repeat.choices] == texts
    assert repeat.choices[1].logprobs == reply.choices[1].logprobs


def test_n_bills_the_prompt_once_and_refuse_n(client: openai.OpenAI) -> None:
    one = ask(client, "count my prompt once", seed=5)
    many = ask(client, "count my prompt once", seed=5, n=4)
    assert many.usage.prompt_tokens == one.usage.prompt_tokens == 4
    assert many.usage.completion_tokens == sum(len(c.message.content.split()) for c in many.choices)
    assert many.choices[0].message.content == one.choices[0].message.content  # choice 0 is the single reply
    assert len({c.message.content for c in many.choices}) == 4
    with running_server(refuse_n=True) as refusing, \
            openai.OpenAI(base_url=refusing.base_url, api_key="x", max_retries=0, timeout=10) as plain:
        assert ask(plain, "one please", n=1).choices and ask(plain, "one please").choices
        with pytest.raises(openai.BadRequestError):
            ask(plain, "two please", n=2)
        assert refusing.stats()["status_400"] == 1


def test_json_object_and_models(client: openai.OpenAI, server: ServerHandle) -> None:
    reply = ask(client, "json please", response_format={"type": "json_object"})
    assert set(json.loads(reply.choices[0].message.content)) == {"text"}
    assert [m.id for m in client.models.list()] == [MODEL, "other-model"]
    with pytest.raises(openai.NotFoundError):
        ask(client, "hi", model="unknown-model")
    with urllib.request.urlopen(server.root_url + "/health") as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.root_url + "/v1/nothing-here")
    assert info.value.code == 404 and "error" in json.loads(info.value.read())


def test_json_schema_from_pydantic(client: openai.OpenAI) -> None:
    summaries = set()
    for i in range(50):
        parsed = client.chat.completions.parse(
            model=MODEL, messages=[{"role": "user", "content": f"describe item {i}"}],
            response_format=Record)  # openai's strict schema: $defs, anyOf null
        record = Record.model_validate_json(parsed.choices[0].message.content)
        assert parsed.choices[0].message.parsed == record
        assert len(record.summary.split()) >= 6 and record.tags and record.nickname is not None
        summaries.add(record.summary)
        plain = ask(client, f"describe item {i}", response_format={
            "type": "json_schema",
            "json_schema": {"name": "Record", "schema": Record.model_json_schema()}})
        Record.model_validate_json(plain.choices[0].message.content)
    assert len(summaries) == 50


def test_schema_instance_keywords() -> None:
    schema = {
        "type": "object", "$defs": {"Node": {"type": "object", "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
        "properties": {
            "short": {"type": "string", "maxLength": 12, "minLength": 3},
            "long": {"type": "string", "minLength": 200},
            "color": {"enum": ["red", "green"]}, "fixed": {"const": 7},
            "odd": {"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 5},
            "neg": {"type": "number", "maximum": -50},
            "flag": {"type": "boolean"}, "nothing": {"type": "null"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 1000}]},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
                     "items": False, "minItems": 2, "maxItems": 2},
            "many": {"type": "array", "items": {"type": "integer"}, "minItems": 5},
            "tree": {"$ref": "#/$defs/Node"},
            "stamp": {"type": "string", "format": "date-time"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}}}}
    value = schema_instance(schema, b"seed")
    assert value == schema_instance(schema, b"seed") != schema_instance(schema, b"other")
    assert 3 <= len(value["short"]) <= 12 and len(value["long"]) >= 200
    assert value["color"] in {"red", "green"} and value["fixed"] == 7 and value["odd"] == 4
    assert value["neg"] <= -50 and isinstance(value["flag"], bool) and value["nothing"] is None
    assert value["maybe"] >= 1000 and len(value["many"]) >= 5
    assert isinstance(value["pair"][0], int) and isinstance(value["pair"][1], str)
    assert value["tree"]["children"] and next(iter(value["counts"].values())) >= 0
    jsonschema = pytest.importorskip("jsonschema")
    for seed in range(30):
        jsonschema.validate(schema_instance(schema, str(seed).encode()), schema)


# ---------------------------------------------------------------- faults --
@pytest.mark.parametrize("rule, expected", [
    ({"kind": "rate_limit", "retry_after": 0.25}, openai.RateLimitError),
    ({"kind": "server_error", "status": 503}, openai.InternalServerError),
    ({"kind": "server_error"}, openai.InternalServerError),
    ({"kind": "drop"}, openai.APIConnectionError),
    ({"kind": "hang", "hang_seconds": 30}, openai.APITimeoutError),
    ({"kind": "not_json"}, ValueError),  # the client fails to decode the body
])
def test_error_faults_clear_on_second_attempt(client: openai.OpenAI, server: ServerHandle,
                                              rule: dict[str, Any], expected: type) -> None:
    server.set_faults([{**rule, "rate": 1.0, "times": 1}])
    prompt = f"fault {json.dumps(rule)}"
    with pytest.raises(expected) as info:
        ask(client, prompt, timeout=0.5)
    if rule["kind"] == "rate_limit":
        assert info.value.response.headers["retry-after"] == "0.25"
    if rule["kind"] == "server_error":
        assert info.value.status_code == rule.get("status", 500)
    assert ask(client, prompt).choices[0].finish_reason == "stop"


def test_content_faults(client: openai.OpenAI, server: ServerHandle) -> None:
    schema_format = {"type": "json_schema",
                     "json_schema": {"name": "Record", "schema": Record.model_json_schema()}}
    server.set_faults([{"kind": "schema_violation", "times": -1}])
    bad = ask(client, "violate", response_format=schema_format).choices[0].message.content
    with pytest.raises(ValueError):
        Record.model_validate_json(bad)
    with pytest.raises(ValueError):
        json.loads(ask(client, "violate", response_format={"type": "json_object"})
                   .choices[0].message.content)
    server.set_faults([{"kind": "truncate"}])
    cut = ask(client, "truncate me", response_format=schema_format).choices[0]
    full = ask(client, "truncate me", response_format=schema_format).choices[0]
    assert cut.finish_reason == "length" and full.finish_reason == "stop"
    assert full.message.content.startswith(cut.message.content)
    assert len(cut.message.content) == len(full.message.content) // 2
    server.set_faults([{"kind": "delay", "seconds": 0.3}])
    start = time.monotonic()
    assert ask(client, "slow one").choices[0].finish_reason == "stop"
    assert time.monotonic() - start >= 0.3


def test_rate_selects_prompts_deterministically(client: openai.OpenAI,
                                                server: ServerHandle) -> None:
    server.set_faults([{"kind": "truncate", "rate": 0.0},
                       {"kind": "rate_limit", "rate": 0.3, "times": -1}])
    failed = []
    for i in range(60):
        try:
            ask(client, f"sampled {i}")
            failed.append(False)
        except openai.RateLimitError:
            failed.append(True)
    assert 5 <= sum(failed) <= 35
    keys = [prompt_key(f"sampled {i}") for i in range(60)]
    assert failed == [fraction(key, 1) < 0.3 for key in keys]
    with pytest.raises(openai.RateLimitError):  # permanent: fails again
        ask(client, f"sampled {failed.index(True)}")


def test_client_retries_and_request_log(server: ServerHandle) -> None:
    server.set_faults([{"kind": "rate_limit", "retry_after": 0.05, "times": 2},
                       {"kind": "server_error"}])
    retrying = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=3)
    reply = retrying.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "log me"}], temperature=0.5)
    assert reply.choices[0].finish_reason == "stop"
    ask(retrying, "log me", temperature=0.9)
    entries = [e for e in server.log_entries() if e["prompt_key"] == prompt_key("log me")]
    assert [e["attempt"] for e in entries] == [0, 1, 2, 3]
    assert [e["fault"] for e in entries] == ["rate_limit", "rate_limit", None, None]
    assert entries[0]["body_key"] == entries[2]["body_key"] != entries[3]["body_key"]
    assert all(e["model"] == MODEL and e["t"] > 0 for e in entries)
    stats = server.stats()
    assert stats["fault_rate_limit"] >= 2 and stats["chat_requests"] >= 4


def test_bad_fault_plan_rejected(server: ServerHandle) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        server.set_faults([{"kind": "explode"}])
    assert info.value.code == 400


def test_cli_faults_file(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"kind": "server_error", "status": 502, "times": -1}]))
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakeserver", "--faults-file", str(plan)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:")
        client = openai.OpenAI(base_url=line.split()[1] + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as info:
            ask(client, "anything")
        assert info.value.status_code == 502
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def prompt_key(prompt: str, seed: int | None = None) -> str:
    """The server's prompt key for a single user message to MODEL."""
    from tests.fakeserver import digest
    return digest({"model": MODEL, "messages": [{"role": "user", "content": prompt}],
                   "seed": seed})
