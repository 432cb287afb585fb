"""Best-of-n teacher answers (`select:` on a generate stage) against the test server, whose teacher's candidates
are scripted (tests/scripted_best_of_n.py): the gold match or the consensus kept, format checks before the rule,
a row no candidate passes as a failed row, the candidates and the preference pairs as datasets, a rerun paid
for by the cache; and the bad configurations as one line, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from synthkd.jsonl import read_jsonl
from tests import scripted_best_of_n as teacher
from tests.conftest import REPO, check_run_outputs, read_rows, remote_endpoint, run_cli, run_json
from tests.fakeserver import ServerHandle, running_server
from tests.test_bad_input import _expect_error

HOOK = "tests.scripted_best_of_n:reply"
QUESTIONS = [{"id": "capital", "instruction": teacher.CAPITAL, "gold": "Paris"},
             {"id": "answer", "instruction": teacher.ANSWER, "gold": "42"},
             {"id": "open", "instruction": teacher.OPEN, "gold": None}]
REVIEWS = [{"id": "truncated", "instruction": teacher.TRUNCATED, "gold": "positive"},
           {"id": "multi_line", "instruction": teacher.MULTI_LINE, "gold": None},
           {"id": "no_label", "instruction": teacher.NO_LABEL, "gold": None}]


def _pipeline(tmp: Path, base_url: str) -> Path:
    """Two best-of-n stages, one on questions (rule auto), one on reviews with format checks; each row's 4
    candidates in one request with n (so the scripted teacher's choice i is sample i)."""
    for name, rows in (("questions", QUESTIONS), ("reviews", REVIEWS)):
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    generate = {"type": "generate", "endpoint": "teacher", "template": "lion/answer.jinja2", "sampling": {"max_tokens": 64, "seed": 7}}
    data = {
        "name": "bestofn", "prompts_dir": str(REPO / "prompts"),
        "endpoints": {"teacher": remote_endpoint(base_url, "teacher", n_per_request=True)},
        "stages": [
            {"name": "questions", "type": "load", "path": str(tmp / "questions.jsonl")},
            {"name": "reviews", "type": "load", "path": str(tmp / "reviews.jsonl")},
            {"name": "answers", "input": "questions", **generate, "select": {"n": 4}},
            {"name": "labels", "input": "reviews", **generate,
             "select": {"n": 4, "checks": {"one_line": True, "labels": ["positive", "negative", "neutral"]}}},
        ],
    }
    path = tmp / "bestofn.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


Run = tuple[Path, Path, list[dict[str, Any]], ServerHandle]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """(pipeline, run directory, the server's request log, the server) of one run of the pipeline; the server
    stays up for the module (the cache keys name its URL)."""
    tmp = tmp_path_factory.mktemp("bestofn")
    with running_server(reply_hook=HOOK, log_path=tmp / "log.jsonl", log_sync=True) as server:
        pipeline = _pipeline(tmp, server.base_url)
        proc = run_cli("run", str(pipeline), "--out", str(tmp / "run"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        yield pipeline, tmp / "run", server.log_entries(), server


def _by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in rows}


def test_the_gold_match_or_else_the_consensus_is_kept_and_says_why(run: Run) -> None:
    _, out, log, _ = run
    assert [e["n"] for e in log] == [4] * 6  # one request with n=4 per row
    rows = _by_id(read_rows(out, "answers"))
    picked = {i: (r["selection"]["chosen"], r["selection"]["rule"], r["response"]) for i, r in rows.items()}
    assert picked == {"capital": (1, "gold", "The capital of France is Paris."),  # the first match, not sample 2
                      "answer": (0, "consensus (no gold match)", "It is 41."),  # 0 and 3 agree; the tie goes to 0
                      "open": (3, "consensus", "The cat sat on a mat.")}  # the medoid
    for r in rows.values():
        assert r["messages"] == [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]
        assert r["selection"]["n"] == 4 and r["selection"]["passed_checks"] == 4 and "sample" not in r
    assert rows["open"]["selection"]["agreement"] == pytest.approx((500 / 6 + 500 / 6) / 3, abs=1e-3)
    assert not read_rows(out, "answers", failed=True)
    summary = run_json(out)["stages"]["answers"]["selection"]
    assert summary["by_rule"] == {"gold": 1, "consensus (no gold match)": 1, "consensus": 1}
    assert (summary["candidates"], summary["passed"], summary["pairs"]) == (12, 12, 2)


def test_candidates_and_preference_pairs_are_datasets(run: Run) -> None:
    _, out, _, _ = run
    cands = read_rows(out, "answers.candidates")
    assert [(c["id"], c["sample"]) for c in cands] == [(q["id"], k) for q in QUESTIONS for k in range(4)]
    assert [c["text"] for c in cands if c["id"] == "capital"] == teacher.REPLIES[teacher.CAPITAL]
    assert [c["sample"] for c in cands if c["chosen"]] == [1, 0, 3]
    assert [c["gold_match"] for c in cands if c["id"] == "capital"] == [False, True, True, False]
    assert {c["gold_match"] for c in cands if c["id"] == "open"} == {None}
    # Only the row with a gold match gives pairs: its kept answer over each mismatching candidate.
    pairs = read_rows(out, "answers.pairs")
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("The capital of France is Paris.", "Lyon is the capital."), ("The capital of France is Paris.", "Marseille.")]
    assert all(p["prompt"] == [{"role": "user", "content": teacher.CAPITAL}] and p["source"] == "gold_match" for p in pairs)
    counts = check_run_outputs(out)  # every dataset loads; status and report read the run
    assert counts["answers.candidates"] == 12 and counts["labels.candidates"] == 12
    assert "best of n:" in run_cli("status", str(out)).stdout


def test_format_checks_filter_before_the_rule_and_a_row_none_passes_fails(run: Run) -> None:
    _, out, _, _ = run
    rows = _by_id(read_rows(out, "labels"))
    assert set(rows) == {"truncated", "multi_line"}
    # Sample 0 matches gold too but was cut by max_tokens; sample 1 ("Negative.") passed but does not match.
    assert (rows["truncated"]["selection"]["chosen"], rows["truncated"]["selection"]["rule"]) == (2, "gold")
    # 0 has two lines, 1 is not a label: the consensus of the two left, the tie to the lower sample.
    assert (rows["multi_line"]["selection"]["chosen"], rows["multi_line"]["selection"]["passed_checks"]) == (2, 2)
    reasons = {(c["id"], c["sample"]): c["reason"] for c in read_rows(out, "labels.candidates")}
    assert [reasons[("truncated", k)] for k in range(4)] == ["truncated", None, None, None]
    assert [reasons[("multi_line", k)] for k in range(4)] == ["not_one_line", "not_a_label", None, None]
    (failed,) = read_rows(out, "labels", failed=True)
    assert (failed["id"], failed["reason"]) == ("no_label", "no_candidate_passed_checks")
    assert [c["reason"] for c in failed["candidates"]] == ["empty_reply", "not_one_line", "truncated", "not_a_label"]
    assert [c["text"] for c in failed["candidates"]] == ["", "I think so\nyes", "positive", "maybe"]
    assert not any(c["chosen"] for c in read_rows(out, "labels.candidates") if c["id"] == "no_label")
    stage = run_json(out)["stages"]["labels"]
    assert stage["failures"]["no_candidate_passed_checks"] == 1 and stage["selection"]["failed_rows"] == 1


def test_a_rerun_is_paid_for_by_the_cache(run: Run, tmp_path: Path) -> None:
    pipeline, out, _, server = run
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(out / "cache.sqlite", again / "cache.sqlite")  # a fresh run directory with the paid replies
    server.reset()
    proc = run_cli("run", str(pipeline), "--out", str(again))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert server.stats().get("chat_requests", 0) == 0
    for name in ("answers", "answers.candidates", "answers.pairs", "labels", "labels.candidates"):
        assert read_rows(again, name) == read_rows(out, name), name
    assert run_json(again)["stages"]["answers"]["cache_hits"] == 12


def test_an_endpoint_that_answers_nothing_still_stops_the_run(tmp_path: Path) -> None:
    """Every candidate of every row failing at the endpoint is the endpoint's failure, as without select: the run
    stops with one line naming it, the failed rows (with their candidates) kept."""
    with running_server(faults=[{"kind": "server_error", "rate": 1.0, "times": -1, "status": 500}]) as server:
        path = _pipeline(tmp_path, server.base_url)
        data = yaml.safe_load(path.read_text())
        data["endpoints"]["teacher"]["max_retries"] = 0
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        proc = run_cli("run", str(path), "--out", str(tmp_path / "run"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "stage 'answers' produced no rows from 3 input rows" in proc.stderr and "gave_up:500" in proc.stderr
    failed = read_jsonl(tmp_path / "run" / "failed" / "answers.jsonl")
    assert [f["reason"] for f in failed] == ["gave_up:500"] * 3
    assert [[c["reason"] for c in f["candidates"]] for f in failed] == [["gave_up:500"] * 4] * 3


URL = "http://127.0.0.1:9/v1"  # nothing listens on port 9: no call may be made


@pytest.mark.parametrize(("edit", "fragments"), [
    ({"samples": 2}, ("select keeps one of n", "samples")),
    ({"sampling": {"temperature": 0.0}}, ("temperature 0", "stages.2.select.n")),
    ({"select": {"n": 4, "rule": "gold", "gold_column": "answer"}}, ("has no column(s) answer", "stages.2.select.gold_column")),
    ({"select": {"n": 4, "checks": {"labels": []}}}, ("stages.2.select.checks.labels",)),
])
def test_bad_select_configs_are_one_line_and_exit_2(tmp_path: Path, edit: dict[str, Any], fragments: tuple[str, ...]) -> None:
    path = _pipeline(tmp_path, URL)
    data = yaml.safe_load(path.read_text())
    data["stages"][2].update(edit)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    _expect_error(run_cli("validate", str(path)), *fragments)
