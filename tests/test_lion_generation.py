"""Lion's generation as published and for small teachers, against the test server with a remote student (no training
unless said): the paper's hard prompt by default, list mode (few-shot continuation of a same-family list, plain text,
one instruction a call), its filters (held-out copies, per-family length), the yield counters and final_imitation."""

from __future__ import annotations

import hashlib
import json
import random
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthkd.lion.config import LionTemplates
from synthkd.lion.steps import normalized, one_line
from tests.conftest import REPO, hf_served, lion_pipeline, read_rows, run_cli, run_json
from tests.fakeserver import running_server

POOL = REPO / "data" / "distill" / "pool.jsonl"
HELDOUT = REPO / "data" / "distill" / "heldout.jsonl"
N_SEEDS, N_HELDOUT = 24, 20
LIST_ASK = "Write the task only, on one line."  # in prompts/lion/generate_list.jinja2
WORDS = ("amber", "bridge", "candle", "desert", "engine", "feather", "galaxy", "hammer", "iceberg", "jungle", "kettle",
         "ladder", "magnet", "needle", "orchard", "pepper", "quartz", "rocket", "saddle", "tunnel", "umbrella", "violin",
         "walnut", "yogurt", "zipper", "anchor", "biscuit", "compass", "dolphin", "eclipse", "fossil", "glacier")
MARKER = re.compile(r"^\s*(\(?\d+[.)]\)?|[-*])\s")


def _rows(path: Path, n: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()[:n]]


@cache
def _families() -> dict[str, str]:
    return {one_line(r["instruction"]): r["family"] for r in _rows(POOL, N_SEEDS)}


def list_teacher(body: dict[str, Any], index: int) -> str | None:
    """Reply hook: the teacher continues a list-mode prompt in one of four known ways (None: the usual reply).

    0: a held-out instruction in capitals, then a further item; 1: a bulleted novel task, then another;
    2: a novel task after "(n)"; 3: a task that runs on far past the examples' length. A list whose
    examples come from two families gets a reply saying so, which the test looks for."""
    messages = body.get("messages") or []
    prompt = str(messages[-1].get("content", "")) if messages else ""
    if body.get("model") != "teacher" or LIST_ASK not in prompt:
        return None
    examples = re.findall(r"^\d+\. (.+)$", prompt, re.M)
    if len({_families()[e] for e in examples if e in _families()}) != 1:
        return "Mixed families were shown in one list"
    n = len(examples)
    h = int(hashlib.sha256(f"{prompt}|{body.get('seed')}|{index}".encode()).hexdigest()[:8], 16)
    rng = random.Random(h)
    novel = "Describe " + " ".join(rng.choice(WORDS) for _ in range(8)) + " in one sentence."
    case = h % 4
    if case == 0:
        return f"{n + 1}. {_rows(HELDOUT, N_HELDOUT)[h % N_HELDOUT]['instruction'].upper()}\n{n + 2}. {novel}"
    if case == 1:
        return f"- {novel}\n- Another task"
    if case == 2:
        return f"({n + 1}) {novel}"
    return f"{n + 1}. Describe " + " ".join(rng.choice(WORDS) for _ in range(120))


def _list_pipeline(tmp: Path, base_url: str, **lion: Any) -> Path:
    """lion_pipeline on distill pool seeds (with `family`) and a held-out stage, in list mode."""
    path = lion_pipeline(tmp, base_url, iterations=1, new_per_iteration=12, generation_mode="list", heldout="heldout", **lion)
    seeds = tmp / "pool_seeds.jsonl"
    seeds.write_text("".join(json.dumps(r) + "\n" for r in _rows(POOL, N_SEEDS)))
    data = yaml.safe_load(path.read_text())
    data["stages"][0]["path"] = str(seeds)
    data["stages"].insert(1, {"name": "heldout", "type": "load", "path": str(HELDOUT), "limit": N_HELDOUT})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _adds_up(it: dict[str, Any], mode: str) -> dict[str, Any]:
    """The iteration's generation_yield, checked: usable + rejected = calls, yield = usable / calls."""
    y = it["generation_yield"]
    assert y["mode"] == mode and y["calls"] > 0
    assert y["usable"] + sum(y["rejected"].values()) == y["calls"]
    assert y["yield"] == pytest.approx(y["usable"] / y["calls"])
    # What joined the pools is usable; a usable one that did not was surplus (its kind's target was met).
    assert it["new_instructions"] + it["generation_rejected"].get("surplus", 0) == y["usable"]
    return y


def test_list_mode_continues_a_same_family_list_one_line_per_call(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with running_server(reply_hook="tests.test_lion_generation:list_teacher", log_path=log, log_sync=True) as server:
        pipeline = _list_pipeline(tmp_path, server.base_url)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        teacher = [e for e in server.log_entries() if e["model"] == "teacher"]
    it = run_json(out)["stages"]["lion"]["iterations"][0]
    y = _adds_up(it, "list")
    # No schema is sent in list mode; each generation call stops at the newline, and each counts once.
    assert all(e["response_format"] is None for e in teacher)
    assert sum(1 for e in teacher if e["stop"] == ["\n"]) == y["calls"]
    new, failed = read_rows(out, "lion.iter1.generated"), read_rows(out, "lion.iter1.generated", failed=True)
    assert len(new) + len(failed) == y["calls"] and new
    # One instruction per reply: the first line, its list marker stripped; the novel ones are kept.
    assert all(r["instruction"].startswith("Describe ") and r["instruction"].endswith(" in one sentence.") for r in new)
    assert not any(MARKER.match(r["instruction"]) or "\n" in r["instruction"] for r in new)
    # Every list showed one family, and a new instruction carries its seed's.
    seeds = {r["id"]: r for r in _rows(POOL, N_SEEDS)}
    assert all(r["family"] == seeds[r["seed_id"]]["family"] for r in new + failed)
    assert not any("Mixed families" in (r.get("raw") or "") for r in failed)
    # Held-out copies (case changed) and run-on continuations are dropped, with their reasons.
    heldout = {normalized(r["instruction"]) for r in _rows(HELDOUT, N_HELDOUT)}
    assert y["rejected"].get("heldout_copy", 0) > 0 and y["rejected"].get("too_long", 0) > 0
    assert not any(normalized(r["instruction"]) in heldout for r in new)


def test_json_mode_yield_counts_real_calls_and_final_imitation_trains_on_the_last_generation(tmp_path: Path) -> None:
    with running_server() as server:
        pipeline = lion_pipeline(tmp_path, server.base_url, n_seeds=16, iterations=2, final_imitation=True)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        status = run_cli("status", str(out))
    stage = run_json(out)["stages"]["lion"]
    for it in stage["iterations"]:
        y = _adds_up(it, "json")
        # The teacher's requests of the iteration (paid, or answered by the cache): the generation calls counted,
        # then an answer per new instruction.
        teacher = it["usage"]["by_endpoint"]["teacher"]
        assert teacher["calls"] + teacher["cache_hits"] == y["calls"] + it["new_instructions"]
        # A seed drawn again in iteration 2 is asked again, never answered by iteration 1's cached instruction.
        assert teacher["cache_hits"] == 0
    final_pool = read_rows(out, "lion.final.train_pool")
    last = stage["iterations"][-1]
    assert len(final_pool) == last["train_pool"] + last["new_instructions"] == len(read_rows(out, "lion"))
    assert {r["instruction"] for r in read_rows(out, "lion.iter2.generated")} <= {r["instruction"] for r in final_pool}
    # A remote student without student_model trains nothing: the step is recorded, and says why it was skipped.
    final = stage["final_imitation"]
    assert final["train_pool"] == final["sft_examples"] == len(final_pool) and final["sft"].startswith("skipped:")
    assert "final imitation: skipped: no student weights" in status.stdout


def test_final_imitation_after_a_generation_that_added_nothing_is_skipped_and_says_so(tmp_path: Path) -> None:
    with running_server() as server:
        pipeline = lion_pipeline(tmp_path, server.base_url, n_seeds=8, iterations=1, new_per_iteration=0, final_imitation=True)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
    final = run_json(out)["stages"]["lion"]["final_imitation"]
    assert final == {"train_pool": 8, "sft": "skipped: the last generation added no instruction to the train pool"}
    assert not (out / "checkpoints" / "lion" / "final").exists()


def test_final_imitation_without_final_generation_is_one_clear_error(tmp_path: Path) -> None:
    pipeline = lion_pipeline(tmp_path, "http://127.0.0.1:9/v1", final_imitation=True, final_generation=False)
    proc = run_cli("validate", str(pipeline))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "final_generation" in proc.stderr


def test_the_default_hard_prompt_is_the_papers_and_the_harder_one_stays_selectable(tmp_path: Path) -> None:
    prompts = REPO / "prompts" / "lion"
    assert LionTemplates().generate_hard == "lion/generate_hard.jinja2"
    faithful, harder = (prompts / "generate_hard.jinja2").read_text(), (prompts / "generate_harder.jinja2").read_text()
    assert "same type" in faithful and "same domain" in faithful and "about as hard" in faithful and "more difficult" not in faithful
    assert "more difficult" in harder
    pipeline = lion_pipeline(tmp_path, "http://127.0.0.1:9/v1", templates={"generate_hard": "lion/generate_harder.jinja2"})
    assert run_cli("validate", str(pipeline)).returncode == 0


@pytest.mark.slow  # about 20 s: two trainings and three starts of a served student
@pytest.mark.needs_torch
@pytest.mark.needs_trl
def test_final_imitation_moves_a_served_student_onto_its_checkpoint(tmp_path: Path, synthkd_home: Path) -> None:
    with running_server() as server:
        pipeline = lion_pipeline(tmp_path, server.base_url, n_seeds=8, iterations=1, new_per_iteration=4, final_imitation=True,
                                 referee="code:rouge_l", heldout="heldout", heldout_sampling={"temperature": 0.0, "max_tokens": 8},
                                 sft={"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 128, "bf16": False})
        data = yaml.safe_load(pipeline.read_text())
        data["endpoints"]["student"] = hf_served("tiny:student")
        data["stages"].insert(1, {"name": "heldout", "type": "load", "path": str(HELDOUT), "limit": 4})
        pipeline.write_text(yaml.safe_dump(data, sort_keys=False))
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        status = run_cli("status", str(out))
    stage = run_json(out)["stages"]["lion"]
    final = stage["final_imitation"]
    assert final["checkpoint"] == str(out / "checkpoints" / "lion" / "final") and final["sft"]["steps"] == 2
    assert final["sft_examples"] == len(read_rows(out, "lion")) > stage["iterations"][0]["sft_examples"]
    # The student endpoint ends on the final checkpoint, and the held-out table has the final student's row.
    assert stage["weights"] == {"student": final["checkpoint"]}
    assert final["heldout"]["n"] == 4 and len(read_rows(out, "lion.heldout.final")) == 4
    assert "held-out final imitation" in status.stdout


def test_the_heldout_table_has_a_row_for_the_final_imitation() -> None:
    from synthkd.scoring.heldout import heldout_table

    def fig(x: float) -> dict[str, Any]:
        return {"n": 10, "rouge_l": {"mean": x, "ci_low": x - 1, "ci_high": x + 1}}

    stage = {"heldout_base": fig(10), "iterations": [{"iteration": 1, "heldout": fig(20)}], "final_imitation": {"heldout": fig(30)},
             "heldout_teacher": fig(100)}
    labels = [line.split("  ")[0] for line in heldout_table(stage).splitlines()[1:]]
    assert labels == ["base student", "iteration 1", "final imitation", "teacher"]
    assert "30.0 [29.0, 31.0]" in heldout_table(stage).splitlines()[3]
