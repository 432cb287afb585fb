"""Tests for the fake server's Batch API (tests/fakebatch.py), through the real openai client."""
from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types import Batch

from tests.fakeserver import ServerHandle, fraction, running_server

MODEL = "fake-model"
CHAT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def _item(custom_id: str, **body: Any) -> dict[str, Any]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"say something about {custom_id}"}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def _jsonl(lines: list[Any]) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def _submit(client: openai.OpenAI, lines: list[Any], **kwargs: Any) -> Batch:
    uploaded = client.files.create(file=("batch.jsonl", _jsonl(lines)), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h", **kwargs)


def _wait(client: openai.OpenAI, batch_id: str, timeout: float = 15) -> tuple[Batch, list[tuple[str, int]]]:
    """Poll until the batch is terminal; return it and the (status, completed) pairs seen."""
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        counts = batch.request_counts
        seen.append((batch.status, counts.completed if counts else 0))
        if batch.status in TERMINAL:
            return batch, seen
        time.sleep(0.02)
    raise AssertionError(f"batch {batch_id} not done after {timeout}s: {seen[-1]}")


def _lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in client.files.content(file_id).content.splitlines()]


@pytest.fixture()
def client() -> Iterator[Any]:
    clients: list[openai.OpenAI] = []

    def make(server: ServerHandle) -> openai.OpenAI:
        clients.append(openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=10))
        return clients[-1]

    yield make
    for made in clients:
        made.close()


def test_batch_replies_match_online_replies(tmp_path: Any, client: Any) -> None:
    log_path = tmp_path / "requests.jsonl"
    lines = [_item("a"), _item("b", n=2, seed=7, temperature=0.5),
             _item("c", max_completion_tokens=5, response_format={"type": "json_object"})]
    with running_server(models=[MODEL], log_path=log_path, log_sync=True, batch_seconds=0.6,
                        max_inflight=1) as server:
        api = client(server)
        online = {line["custom_id"]: api.chat.completions.create(**line["body"]) for line in lines}
        # The online fault plan is not applied to batch items.
        server.set_faults([{"kind": "server_error", "rate": 1.0, "times": -1}])
        uploaded = api.files.create(file=("batch.jsonl", _jsonl(lines)), purpose="batch")
        assert uploaded.purpose == "batch" and uploaded.bytes == len(_jsonl(lines))
        assert api.files.retrieve(uploaded.id).filename == "batch.jsonl"
        assert api.files.content(uploaded.id).content == _jsonl(lines)
        created = api.batches.create(input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h",
                                     metadata={"run": "t1"})
        assert created.status == "validating" and created.metadata == {"run": "t1"}
        # A client that went away polls the same batch id with a fresh connection.
        batch, seen = _wait(client(server), created.id)

        assert batch.status == "completed" and batch.error_file_id is None and batch.errors is None
        assert batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (3, 3, 0)
        assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
        statuses = [status for status, _ in seen]
        assert statuses[0] == "validating" and "in_progress" in statuses and statuses[-1] == "completed"
        assert any(0 < done < 3 for _, done in seen), f"no poll saw progress: {seen}"
        results = _lines(api, batch.output_file_id)
        assert sorted(r["custom_id"] for r in results) == ["a", "b", "c"]
        for result in results:
            assert result["id"].startswith("batch_req_") and result["error"] is None
            assert result["response"]["status_code"] == 200
            assert result["response"]["request_id"].startswith("req_")
            body, reply = result["response"]["body"], online[result["custom_id"]]
            assert body["object"] == "chat.completion"
            assert [c["message"]["content"] for c in body["choices"]] == [c.message.content for c in reply.choices]
            assert [c["finish_reason"] for c in body["choices"]] == [c.finish_reason for c in reply.choices]
            assert reply.usage is not None and body["usage"] == reply.usage.model_dump(exclude_none=True)

        stats = server.stats()
        assert (stats["batch_files"], stats["batches_created"], stats["batch_items"]) == (1, 1, 3)
        assert stats["peak_inflight"] == 1 and "rejected_inflight" not in stats
        assert server.batches() == [{"id": batch.id, "status": "completed", "input_file_id": uploaded.id,
                                     "custom_ids": ["a", "b", "c"], "metadata": {"run": "t1"}}]
        logged = [entry for entry in server.log_entries() if "batch" in entry]
        assert sorted(entry["custom_id"] for entry in logged) == ["a", "b", "c"]
        assert {entry["status"] for entry in logged} == {200} and {entry["batch"] for entry in logged} == {batch.id}
        assert sum("batch" not in entry for entry in server.log_entries()) == 3  # the online requests


def test_injected_batch_failure(client: Any) -> None:
    with running_server(batch_seconds=0.3, batch_faults=["fail", "ok"]) as server:
        api = client(server)
        failed, _ = _wait(api, _submit(api, [_item("a"), _item("b")]).id)
        assert failed.status == "failed" and failed.failed_at is not None
        assert failed.errors is not None and failed.errors.data is not None
        assert failed.errors.data[0].code == "injected_failure"
        assert failed.output_file_id is None and failed.error_file_id is None
        assert server.stats().get("batch_items", 0) == 0
        ok, _ = _wait(api, _submit(api, [_item("a"), _item("b")]).id)
        assert ok.status == "completed" and len(_lines(api, ok.output_file_id)) == 2


def test_injected_expiry(client: Any) -> None:
    with running_server(batch_seconds=0.3, batch_faults=[{"expire": 0.5}, "expire"]) as server:
        api = client(server)
        for count, answered in ((4, 2), (3, 2)):  # round(0.5 * 3) == 2
            ids = [f"x{i}" for i in range(count)]
            batch, _ = _wait(api, _submit(api, [_item(i) for i in ids]).id)
            assert batch.status == "expired" and batch.expired_at is not None and batch.completed_at is None
            assert batch.request_counts is not None
            assert (batch.request_counts.completed, batch.request_counts.failed) == (answered, count - answered)
            assert [r["custom_id"] for r in _lines(api, batch.output_file_id)] == ids[:answered]
            errors = _lines(api, batch.error_file_id)
            assert [r["custom_id"] for r in errors] == ids[answered:]
            assert all(r["response"] is None and r["error"]["code"] == "batch_expired" for r in errors)


def test_injected_item_errors(client: Any) -> None:
    ids = [f"item-{i}" for i in range(12)]
    bad = {i for i in ids if fraction(i, 0) < 0.5}
    assert bad and bad != set(ids)
    with running_server(batch_seconds=0.3, batch_faults=[{"item_errors": 0.5, "status": 503}]) as server:
        api = client(server)
        batch, _ = _wait(api, _submit(api, [_item(i) for i in ids]).id)
        assert batch.status == "completed"
        assert {r["custom_id"] for r in _lines(api, batch.output_file_id)} == set(ids) - bad
        errors = _lines(api, batch.error_file_id)
        assert {r["custom_id"] for r in errors} == bad
        assert all(r["response"]["status_code"] == 503 and "error" in r["response"]["body"]
                   and r["error"] is None for r in errors)
        assert batch.request_counts is not None and batch.request_counts.failed == len(bad)


def test_item_error_rate_spares_a_resubmission(client: Any) -> None:
    ids = [f"q{i}" for i in range(12)]
    bad = [i for i in ids if fraction(i, 1) < 0.5]
    assert bad and len(bad) < len(ids)
    with running_server(batch_seconds=0.3, batch_item_error_rate=0.5) as server:
        api = client(server)
        first, _ = _wait(api, _submit(api, [_item(i) for i in ids]).id)
        assert first.status == "completed"
        errors = _lines(api, first.error_file_id)
        assert sorted(r["custom_id"] for r in errors) == sorted(bad)
        assert {r["response"]["status_code"] for r in errors} == {500}
        retry, _ = _wait(api, _submit(api, [_item(i) for i in bad]).id)
        assert retry.status == "completed" and retry.error_file_id is None
        assert sorted(r["custom_id"] for r in _lines(api, retry.output_file_id)) == sorted(bad)
        assert [b["custom_ids"] for b in server.batches()] == [ids, bad]


def test_cancel_keeps_finished_items(client: Any) -> None:
    ids = [f"c{i}" for i in range(6)]
    with running_server(batch_seconds=1.0) as server:
        api = client(server)
        batch = _submit(api, [_item(i) for i in ids])
        while (api.batches.retrieve(batch.id).request_counts or batch.request_counts).completed < 1:
            time.sleep(0.01)
        assert api.batches.cancel(batch.id).status == "cancelling"
        assert api.batches.cancel(batch.id).status in {"cancelling", "cancelled"}  # idempotent
        done, seen = _wait(api, batch.id)
        assert done.status == "cancelled" and done.cancelling_at and done.cancelled_at
        assert "cancelling" in [status for status, _ in seen] or seen[0][0] == "cancelled"
        finished = [r["custom_id"] for r in _lines(api, done.output_file_id)]
        dropped = _lines(api, done.error_file_id)
        assert finished and dropped and finished + [r["custom_id"] for r in dropped] == ids
        assert all(r["error"]["code"] == "batch_cancelled" for r in dropped)
        assert server.stats()["batch_items"] == len(finished)
        time.sleep(0.8)  # nothing is answered after the cancel
        assert server.stats()["batch_items"] == len(finished)

        cancelled_early, _ = _wait(api, api.batches.cancel(_submit(api, [_item("z")]).id).id)
        assert cancelled_early.status == "cancelled" and cancelled_early.output_file_id is None
        completed, _ = _wait(api, _submit(api, [_item("y")]).id)
        with pytest.raises(openai.ConflictError):
            api.batches.cancel(completed.id)


def test_list_pagination(client: Any) -> None:
    with running_server(batch_seconds=0.3) as server:
        api = client(server)
        created = [_submit(api, [_item(f"p{i}")]).id for i in range(3)]
        newest_first = created[::-1]
        page = api.batches.list(limit=2)
        assert [b.id for b in page.data] == newest_first[:2] and page.has_more is True
        rest = api.batches.list(limit=2, after=page.data[-1].id)
        assert [b.id for b in rest.data] == newest_first[2:] and rest.has_more is False
        assert [b.id for b in api.batches.list(limit=2)] == newest_first  # the SDK follows `after`
        assert [b.id for b in api.batches.list(limit=5)] == newest_first
        assert [b["id"] for b in server.batches()] == created


@pytest.mark.parametrize(("lines", "bad_line"), [
    ([_item("a"), "{not json", _item("c")], 2),
    ([_item("a"), _item("a")], 2),
    ([_item("a"), {"custom_id": "b", "method": "POST", "url": CHAT}], 2),
    ([{"method": "POST", "url": CHAT, "body": {}}], 1),
    ([_item("a"), {**_item("b"), "url": "/v1/embeddings"}], 2),
])
def test_malformed_input_fails_the_batch(client: Any, lines: list[Any], bad_line: int) -> None:
    with running_server(batch_seconds=0.2) as server:
        api = client(server)
        batch, _ = _wait(api, _submit(api, lines).id)
        assert batch.status == "failed" and batch.errors is not None and batch.errors.data
        assert (batch.errors.data[0].code, batch.errors.data[0].line) == ("invalid_request", bad_line)
        assert batch.output_file_id is None and server.stats().get("batch_items", 0) == 0


def test_item_errors_follow_the_online_rules(client: Any) -> None:
    lines = [_item("ok"), _item("unknown", model="nope"), _item("many", n=2), _item("capped", max_tokens=3)]
    with running_server(batch_seconds=0.3, models=[MODEL], refuse_n=True, reject_max_tokens=True) as server:
        api = client(server)
        batch, _ = _wait(api, _submit(api, lines).id)
        assert batch.status == "completed"
        assert [r["custom_id"] for r in _lines(api, batch.output_file_id)] == ["ok"]
        errors = {r["custom_id"]: r["response"] for r in _lines(api, batch.error_file_id)}
        assert {k: v["status_code"] for k, v in errors.items()} == {"unknown": 404, "many": 400, "capped": 400}
        assert errors["unknown"]["body"]["error"]["code"] == "model_not_found"


def test_request_errors_and_reset(client: Any) -> None:
    with running_server(batch_seconds=0.2) as server:
        api = client(server)
        with pytest.raises(openai.NotFoundError):
            api.files.retrieve("file-missing")
        with pytest.raises(openai.NotFoundError):
            api.files.content("file-missing")
        with pytest.raises(openai.NotFoundError):
            api.batches.create(input_file_id="file-missing", endpoint=CHAT, completion_window="24h")
        uploaded = api.files.create(file=("b.jsonl", _jsonl([_item("a")])), purpose="batch")
        with pytest.raises(openai.BadRequestError):
            api.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
        with pytest.raises(openai.NotFoundError):
            api.batches.retrieve("batch_missing")
        request = urllib.request.Request(server.base_url + "/files", data=b'{"purpose": "batch"}',
                                         headers={"Content-Type": "application/json"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10)
        assert caught.value.code == 400 and "error" in json.loads(caught.value.read())
        batch = api.batches.create(input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h")
        server.reset()
        assert server.batches() == []
        with pytest.raises(openai.NotFoundError):
            api.batches.retrieve(batch.id)


def test_chunked_upload(client: Any) -> None:
    """An upload of unknown size comes with Transfer-Encoding: chunked."""
    boundary = "xyzBOUNDARY"
    content = _jsonl([_item("a")])
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'.encode(),
             f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
             'Content-Type: application/octet-stream\r\n\r\n'.encode(), content, f"\r\n--{boundary}--\r\n".encode()]
    with running_server() as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("POST", "/v1/files", body=iter(parts), encode_chunked=True,
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        reply = conn.getresponse()
        uploaded = json.loads(reply.read())
        assert reply.status == 200 and uploaded["bytes"] == len(content) and uploaded["filename"] == "in.jsonl"
        conn.close()
        assert client(server).files.content(uploaded["id"]).content == content
