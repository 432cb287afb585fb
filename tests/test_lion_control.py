"""Lion's control arm (new_from: pool) and final_generation: false, against the test server with a remote student
(no training): what is drawn, what is paid for, and what the iteration stats say."""

import json
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO, lion_pipeline, read_rows, run_cli, run_json
from tests.fakeserver import running_server

URL = "http://127.0.0.1:9/v1"  # nothing listens on port 9


def _with_pool(pipeline: Path, rows: list[dict[str, Any]]) -> Path:
    """Add a load stage `pool` (before the lion stage) holding `rows`."""
    path = pipeline.parent / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = yaml.safe_load(pipeline.read_text())
    data["stages"].insert(1, {"name": "pool", "type": "load", "path": str(path)})
    pipeline.write_text(yaml.safe_dump(data, sort_keys=False))
    return pipeline


def _pool_rows(n: int) -> list[dict[str, Any]]:
    """The project's first n seed instructions (the first 16 are also the Lion seeds), plus one repeated text."""
    rows = [json.loads(line) for line in (REPO / "data" / "lion" / "seed_instructions.jsonl").read_text().splitlines()[:n]]
    return rows + [{"id": "again", "instruction": rows[-1]["instruction"]}]


def _teacher_calls(iteration: dict[str, Any]) -> int:
    return int(iteration["usage"]["by_endpoint"].get("teacher", {}).get("calls", 0))


def test_new_from_pool_draws_unseen_pool_instructions_and_never_generates(tmp_path: Path) -> None:
    pool = _pool_rows(40)  # 24 instructions the seeds do not have
    with running_server() as server:
        pipeline = _with_pool(lion_pipeline(tmp_path, server.base_url, n_seeds=16, iterations=3, new_per_iteration=8,
                                            new_from="pool", pool="pool", final_generation=False), pool)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    iterations = run_json(out)["stages"]["lion"]["iterations"]
    by_id = {r["id"]: r["instruction"] for r in pool}
    seeds = {r["instruction"] for r in pool[:16]}
    drawn: list[str] = []
    for it in iterations[:2]:
        rows = read_rows(out, f"lion.iter{it['iteration']}.generated")
        assert len(rows) == it["new_instructions"] == it["pool_drawn"] == 8 and it["pool_exhausted"] is False
        assert all(r["kind"] == "pool" and r["origin"] == f"iter{it['iteration']}-pool" and by_id[r["seed_id"]] == r["instruction"] for r in rows)
        drawn += [r["instruction"] for r in rows]
        # Only the teacher's answers to the drawn instructions are paid for: no generation call.
        assert _teacher_calls(it) == 8
        assert it["judged"] > 0  # discrimination still ran
    assert len(set(drawn)) == len(drawn) == 16 and not set(drawn) & seeds
    last = iterations[2]
    assert last["new_instructions"] == 0 and last["generation"] == "skipped: final_generation is false" and _teacher_calls(last) == 0
    assert read_rows(out, "lion.iter3.generated") == [] and last["judged"] == 0
    # The final train pool: the seeds and what was drawn.
    assert sorted(r["instruction"] for r in read_rows(out, "lion")) == sorted(seeds | set(drawn))


def test_a_pool_that_runs_out_gives_what_is_left_and_says_so(tmp_path: Path) -> None:
    pool = _pool_rows(26)  # 10 instructions beyond the seeds (and "again", a repeat of the last)
    with running_server() as server:
        pipeline = _with_pool(lion_pipeline(tmp_path, server.base_url, n_seeds=16, iterations=3, new_per_iteration=8,
                                            new_from="pool", pool="pool"), pool)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    iterations = run_json(out)["stages"]["lion"]["iterations"]
    assert [(it["pool_drawn"], it["pool_exhausted"]) for it in iterations] == [(8, False), (2, True), (0, True)]
    drawn = [r["instruction"] for it in (1, 2) for r in read_rows(out, f"lion.iter{it}.generated")]
    assert sorted(drawn) == sorted(r["instruction"] for r in pool[16:26])


def test_final_generation_false_skips_only_the_last_generation(tmp_path: Path) -> None:
    with running_server() as server:
        pipeline = lion_pipeline(tmp_path, server.base_url, n_seeds=16, iterations=2, final_generation=False)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    first, last = run_json(out)["stages"]["lion"]["iterations"]
    assert first["new_instructions"] > 0 and first.get("generation") is None
    assert _teacher_calls(first) > first["new_instructions"]  # generation calls, then the answers
    assert last["new_instructions"] == 0 and last["generation"] == "skipped: final_generation is false"
    # Nothing would train on the last judgement: the student does not answer the pool and the referee is not called.
    assert _teacher_calls(last) == 0 and last["judged"] == 0 and last["discrimination"].startswith("skipped")
    assert last.get("hard_fraction") is None and last["usage"]["calls"] == 0
    assert not (out / "datasets" / "lion.iter2.discrimination").exists()


def test_final_discrimination_judges_the_last_iteration_without_generating(tmp_path: Path) -> None:
    with running_server() as server:
        pipeline = lion_pipeline(tmp_path, server.base_url, n_seeds=16, iterations=2, final_generation=False,
                                 final_discrimination=True)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    last = run_json(out)["stages"]["lion"]["iterations"][-1]
    assert last["judged"] > 0 and last.get("discrimination") is None and 0 <= last["hard_fraction"] <= 1
    assert _teacher_calls(last) == 0 and last["new_instructions"] == 0
    assert len(read_rows(out, "lion.iter2.discrimination")) == last["judged"]


def test_new_from_pool_without_a_pool_is_one_clear_error(tmp_path: Path) -> None:
    proc = run_cli("validate", str(lion_pipeline(tmp_path, URL, new_from="pool")))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("synthkd: error:") and "set `pool`" in proc.stderr


def test_the_pool_stage_is_read_and_checked(tmp_path: Path) -> None:
    proc = run_cli("validate", str(lion_pipeline(tmp_path, URL, new_from="pool", pool="nope")))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "stages.1.pool" in proc.stderr, proc.stderr
