"""Lion's best-of-n teacher answers (`answer_select`), against the test server's scripted teacher
(tests/scripted_best_of_n.py): the gold match kept for a seed with gold, the consensus for one without, every
candidate a dataset, the summary in run.json and status; a config that would pay n times for one greedy reply
is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests import scripted_best_of_n as teacher
from tests.conftest import lion_pipeline, read_rows, remote_endpoint, run_cli, run_json
from tests.fakeserver import running_server
from tests.test_bad_input import _expect_error

SEEDS = [{"id": "capital", "instruction": teacher.CAPITAL, "gold": "Paris"},
         {"id": "answer", "instruction": teacher.ANSWER, "gold": "42"},
         {"id": "open", "instruction": teacher.OPEN}]


def _pipeline(tmp: Path, base_url: str, **lion: object) -> Path:
    """A one-iteration Lion on the three scripted seeds, no generation, the teacher sampling 4 candidates per request."""
    path = lion_pipeline(tmp, base_url, iterations=1, new_per_iteration=0, referee="code:exact_match",
                         answer_select={"n": 4}, **lion)
    data = yaml.safe_load(path.read_text())
    (tmp / "scripted.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SEEDS))
    data["stages"][0]["path"] = str(tmp / "scripted.jsonl")
    data["endpoints"]["teacher"] = remote_endpoint(base_url, "teacher", n_per_request=True)
    data["stages"][1]["answer_sampling"]["temperature"] = 0.7
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_lion_keeps_the_gold_match_or_the_consensus_as_the_teacher_answer(tmp_path: Path) -> None:
    with running_server(reply_hook="tests.scripted_best_of_n:reply", log_path=tmp_path / "log.jsonl", log_sync=True) as server:
        out = tmp_path / "run"
        proc = run_cli("run", str(_pipeline(tmp_path, server.base_url)), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        teacher_requests = [e for e in server.log_entries() if e["model"] == "teacher"]
        status = run_cli("status", str(out))
    # One request with n=4 per seed; the student answers once per seed.
    assert sorted(e["n"] for e in teacher_requests) == [4, 4, 4]
    answers = {r["id"]: r["messages"][-1]["content"] for r in read_rows(out, "lion.iter1.train_pool")}
    assert answers == {"capital": "The capital of France is Paris.",  # the first gold match (sample 1)
                       "answer": "It is 41.",  # no gold match: the consensus (0 and 3 agree, tie to 0)
                       "open": "The cat sat on a mat."}  # no gold: the medoid
    # The referee compares the student with the kept answer.
    judged = {r["id"]: r["teacher_answer"] for r in read_rows(out, "lion.iter1.discrimination")}
    assert judged == answers
    cands = read_rows(out, "lion.answer_candidates")
    assert [(c["id"], c["sample"]) for c in cands] == [(s["id"], k) for s in SEEDS for k in range(4)]
    assert [c["sample"] for c in cands if c["chosen"]] == [1, 0, 3]
    assert [c["gold_match"] for c in cands if c["id"] == "capital"] == [False, True, True, False]
    summary = run_json(out)["stages"]["lion"]["answer_selection"]
    assert summary["by_rule"] == {"gold": 1, "consensus (no gold match)": 1, "consensus": 1}
    assert (summary["rows"], summary["failed_rows"], summary["candidates"], summary["passed"]) == (3, 0, 12, 12)
    assert "teacher answers, best of n: consensus 1, consensus (no gold match) 1, gold 1" in status.stdout


def test_answer_select_at_temperature_zero_is_one_clear_error(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, "http://127.0.0.1:9/v1")
    data = yaml.safe_load(path.read_text())
    data["stages"][1]["answer_sampling"]["temperature"] = 0.0
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    _expect_error(run_cli("validate", str(path)), "answer_select.n is 4", "temperature 0", "answer_sampling: {temperature: 0.7}")
