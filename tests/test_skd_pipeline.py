"""SKD end to end against the test server with a user-declared relation schema, a label file and a
real tiny classifier critic; and SKD's bad-input cases (exit 2 before any call)."""

import json
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk

from tests.conftest import REPO, check_run_outputs, read_rows, remote_endpoint, run_cli, run_json
from tests.fakeserver import running_server

URL = "http://127.0.0.1:9/v1"  # nothing listens here: a test that reaches the network fails


def _spec(tmp: Path, base_url: str, labels: Path | None = None) -> dict:
    relations = {
        "usedFor": {"phrase": "This is used for", "template": "skd/tail.jinja2", "examples": [{"head": "PersonX buys a hammer", "tail": "driving nails"}]},
        "xWant": {"phrase": "As a result, PersonX wants", "template": "skd/tail.jinja2"},
    }
    return {
        "name": "skd", "prompts_dir": str(REPO / "prompts"),
        "endpoints": {n: remote_endpoint(base_url, n) for n in ("teacher", "judge", "student")},
        "stages": [
            {"name": "seeds", "type": "load", "path": str(REPO / "data" / "skd" / "seed_events.jsonl")},
            {"name": "heldout", "type": "load", "path": str(REPO / "data" / "skd" / "heldout_events.jsonl"), "limit": 5},
            {"name": "skd", "type": "skd", "input": "seeds", "heldout": "heldout", "relations": relations,
             "heads": {"k": 5, "prompts": 3, "n": 6, "drop_lowest_logprob": 0.2, "sampling": {"max_tokens": 64, "seed": 1}},
             "tails": {"n": 3, "sampling": {"max_tokens": 64, "seed": 2}},
             "critic": {"labels": str(labels) if labels else None, "label_sample": 60, "target_recall": 0.8, "epochs": 2},
             "sft": {"num_train_epochs": 1, "max_length": 96, "bf16": False, "per_device_train_batch_size": 8}},
        ],
    }


def _write(tmp: Path, spec: dict) -> Path:
    path = tmp / "skd.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.needs_torch
@pytest.mark.needs_trl
def test_skd_end_to_end(tmp_path: Path, synthkd_home: Path) -> None:
    with running_server() as server:
        path = _write(tmp_path, _spec(tmp_path, server.base_url))
        out = tmp_path / "run"
        proc = run_cli("run", str(path), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)})
        assert proc.returncode == 0, proc.stderr[-3000:]
    stage = run_json(out)["stages"]["skd"]
    s = stage["skd"]
    heads = s["heads"]
    # 3 prompts x 6 samples; the test server returns logprobs, so the lowest 20% are cut.
    assert heads["sampled"] == 18 and isinstance(heads["low_logprob"], int) and heads["low_logprob"] > 0
    n_heads = len(read_rows(out, "skd.heads"))
    raw = read_rows(out, "skd.raw")
    assert {r["relation"] for r in raw} == {"usedFor", "xWant"} and len({r["head"] for r in raw}) == n_heads
    # Tails are deduplicated per (head, relation).
    assert len({(r["head"], r["relation"], r["tail"].lower()) for r in raw}) == len(raw)
    critic = s["critic"]
    assert critic["kind"] == "classifier" and critic["labels"] > 0 and critic["train"] + critic["val"] == critic["labels"]
    assert len(critic["pr_curve"]["precision"]) == len(critic["pr_curve"]["recall"]) > 0
    threshold = critic["threshold"]
    scored, kept = read_rows(out, "skd.scored"), read_rows(out, "skd.filtered")
    assert len(scored) == len(raw) and kept == [r for r in scored if r["critic_score"] >= threshold]
    assert s["corpus"] == {"raw": len(raw), "filtered": len(kept), "kept_fraction": len(kept) / len(raw)}
    # The three rates side by side: teacher unfiltered, filtered corpus, student on held-out heads.
    acc = s["acceptance"]
    assert acc["filtered_corpus"]["accepted"] == 1.0 and 0 <= acc["teacher_unfiltered"]["accepted"] <= 1
    assert acc["student_heldout"]["n"] == 5 * 2
    sft = load_from_disk(str(out / "datasets" / "skd"))
    assert len(sft) == len(kept) and sft[0]["messages"][1]["content"] == kept[0]["tail"]
    check_run_outputs(out)


@pytest.mark.needs_torch
@pytest.mark.needs_trl
def test_skd_with_label_file(tmp_path: Path, synthkd_home: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    rows = [{"head": f"PersonX does thing {i}", "relation": "xWant", "tail": ("to rest" if i % 2 else "purple the the"), "label": "accept" if i % 2 else "reject"} for i in range(40)]
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with running_server() as server:
        path = _write(tmp_path, _spec(tmp_path, server.base_url, labels))
        out = tmp_path / "run"
        proc = run_cli("run", str(path), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        calls = server.stats().get("chat_requests", 0)
    summary = run_json(out)["stages"]["skd"]["skd"]
    assert summary["critic"]["labels"] == 40
    # No judge labelling: only heads (18), tails, and the student's held-out tails (5 heads x 2
    # relations) when the critic kept anything to train the student on.
    n_heads = len(read_rows(out, "skd.heads"))
    student_calls = 5 * 2 if "student_heldout" in summary["acceptance"] else 0
    assert student_calls == (10 if summary["corpus"]["filtered"] else 0)
    assert calls == 18 + n_heads * 2 * 3 + student_calls


@pytest.mark.parametrize("edit, message", [
    (lambda s, t: s["stages"][2]["relations"]["xWant"].update(template="skd/missing.jinja2"), "template file not found"),
    (lambda s, t: s["stages"][2]["critic"].update(target_recall=1.5), "inside (0, 1)"),
    (lambda s, t: s["stages"][2]["critic"].update(target_recall=None), "exactly one of target_recall and target_precision"),
    (lambda s, t: s["stages"][2]["critic"].update(labels=str(t)), "unknown label 'maybe'"),
])
def test_skd_bad_input(tmp_path: Path, edit, message: str) -> None:
    bad_labels = tmp_path / "bad.jsonl"
    bad_labels.write_text(json.dumps({"head": "PersonX sleeps", "relation": "xWant", "tail": "to rest", "label": "maybe"}) + "\n")
    spec = _spec(tmp_path, URL)
    edit(spec, bad_labels)
    proc = run_cli("run", str(_write(tmp_path, spec)), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.needs_torch
@pytest.mark.needs_trl
def test_skd_llm_critic(tmp_path: Path, synthkd_home: Path) -> None:
    spec = _spec(tmp_path, "")
    with running_server() as server:
        for ep in spec["endpoints"].values():
            ep["base_url"] = server.base_url
        spec["stages"][2]["critic"] = {"kind": "llm", "target_recall": 0.8}
        out = tmp_path / "run"
        proc = run_cli("run", str(_write(tmp_path, spec)), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)})
        assert proc.returncode == 0, proc.stderr[-3000:]
    s = run_json(out)["stages"]["skd"]["skd"]
    scored = read_rows(out, "skd.scored")
    assert s["critic"]["kind"] == "llm" and {r["critic_score"] for r in scored} <= {0.0, 1.0}
    assert len(read_rows(out, "skd.filtered")) == sum(r["critic_score"] == 1.0 for r in scored) == s["corpus"]["filtered"]
