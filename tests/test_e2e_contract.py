"""The stage contract end to end with real vLLM and TRL (slow): a rerun that skips a finished Lion stage
evaluates the same trained student as the first run; failed calls of DPO and Montessori reach
failed.jsonl with their reason (the teacher, judge and responder are the test server, with faults;
the trained models are served by vLLM)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, check_run_outputs, read_rows, run_cli, run_json
from tests.fakeserver import running_server

pytestmark = [pytest.mark.slow, pytest.mark.needs_vllm, pytest.mark.needs_torch, pytest.mark.needs_trl]

FAULTS = [{"kind": "server_error", "rate": 0.15, "times": -1, "status": 500}]


def _pipeline(tmp: Path, name: str, edit: Any) -> Path:
    """A shipped pipeline with absolute paths, edited by `edit(data)`, written into tmp."""
    data = yaml.safe_load((REPO / "pipelines" / name).read_text())
    data["prompts_dir"] = str(REPO / "prompts")
    for stage in data["stages"]:
        if stage["type"] == "load":
            stage["path"] = str((REPO / "pipelines" / stage["path"]).resolve())
    edit(data)
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _remote(data: dict[str, Any], base_url: str, *names: str) -> None:
    for n in names:
        data["endpoints"][n] = {"base_url": base_url, "model": n, "concurrency": 16, "timeout_s": 10, "max_retries": 1}


def test_rerun_that_skips_lion_evaluates_the_same_trained_student(tmp_path: Path, synthkd_home: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["stages"][0]["limit"] = 24
        data["stages"][1].update(iterations=1, new_per_iteration=8)
        data["stages"] += [
            {"name": "heldout", "type": "load", "path": str(REPO / "data" / "lion" / "heldout_instructions.jsonl"), "limit": 8},
            {"name": "eval", "type": "eval", "input": "heldout", "student": "student", "teacher": "teacher", "judge": "code:rouge_l",
             "nll": False, "answer_sampling": {"temperature": 0.0, "max_tokens": 16}},
        ]

    path = _pipeline(tmp_path, "lion_tiny.yaml", edit)
    out, env = tmp_path / "run", {"SYNTHKD_HOME": str(synthkd_home)}
    proc = run_cli("run", str(path), "--out", str(out), env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = str(out / "checkpoints" / "lion" / "iter1")
    first = run_json(out)["stages"]
    assert first["lion"]["weights"] == {"student": trained}
    assert first["eval"]["eval"]["student_weights"] == trained
    # Change only the eval stage: Lion is skipped as done, the eval runs again, on the same checkpoint.
    proc = run_cli("run", str(path), "--out", str(out), "--set", "stages.eval.answer_sampling.max_tokens=12", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[lion] done earlier" in proc.stderr
    assert run_json(out)["stages"]["eval"]["eval"]["student_weights"] == trained
    check_run_outputs(out)


def test_dpo_failed_calls_reach_failed_jsonl(tmp_path: Path, synthkd_home: Path) -> None:
    with running_server(faults=FAULTS) as server:
        def edit(data: dict[str, Any]) -> None:
            _remote(data, server.base_url, "teacher", "judge")
            data["stages"][0]["limit"] = 16
            data["stages"][1]["limit"] = 6
            data["stages"][4].update(iterations=1, samples=2)

        out = tmp_path / "run"
        proc = run_cli("run", str(_pipeline(tmp_path, "dpo.yaml", edit)), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)}, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    failed = read_rows(out, "dpo", failed=True)
    assert failed and {f["reason"] for f in failed} == {"gave_up:500"}
    assert {f["step"] for f in failed} <= {"teacher_answer", "student_answer", "judge", "student_sample", "judge_sample"}
    assert "teacher_answer" in {f["step"] for f in failed}  # the teacher is the faulty server
    stage = run_json(out)["stages"]["dpo"]
    assert stage["failed"] == len(failed) == stage["iterations"][0]["failed"]
    assert read_rows(out, "dpo.iter1.pairs", failed=True) == failed
    check_run_outputs(out)


def test_montessori_failed_judge_calls_are_kept_not_scored(tmp_path: Path, synthkd_home: Path) -> None:
    # The judge fails half its calls for good; the responder answers (its own server, without faults).
    with running_server(faults=[{"kind": "server_error", "rate": 0.5, "times": -1, "status": 500}]) as judge, running_server() as responder:
        def edit(data: dict[str, Any]) -> None:
            _remote(data, responder.base_url, "responder")
            _remote(data, judge.base_url, "judge")
            data["stages"][0]["limit"] = 40
            data["stages"][2].update(signal="judge", iterations=1, warmup_size=8, final_prompts=3,
                                     synthesis={**data["stages"][2]["synthesis"], "prompts": 6})

        out = tmp_path / "run"
        proc = run_cli("run", str(_pipeline(tmp_path, "montessori.yaml", edit)), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)}, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    failed = read_rows(out, "montessori", failed=True)
    steps = {f["step"] for f in failed}
    assert "judge" in steps and {f["reason"] for f in failed if f["step"] == "judge"} == {"gave_up:500"}
    # The random tiny teacher's own synthesis calls fail too (cut JSON): kept with their reason as well.
    assert {f["reason"] for f in failed} <= {"gave_up:500", "truncated", "schema_violation", "invalid_json"}
    judged_failed = {f["id"] for f in failed if f["step"] == "judge"}
    candidates = read_rows(out, "montessori.iter1.candidates")
    # A candidate whose judge call failed is unmeasured (no signal, utility 0), never scored mid-scale.
    assert all(c["signal"] is None and c["utility"] == 0.0 for c in candidates if c["id"] in judged_failed)
    assert all(c["signal"] is not None for c in candidates if c["id"] not in judged_failed)
    stage = run_json(out)["stages"]["montessori"]
    assert stage["failed"] == len(failed)
    # The teacher stays on its tuned weights and the student endpoint moves onto the trained student, for later stages.
    tuned = isinstance(stage["iterations"][0]["teacher_dpo"], dict)
    assert stage["weights"]["teacher"] == (str(out / "checkpoints" / "montessori" / "teacher-iter1") if tuned else "tiny:teacher")
    assert stage["weights"]["student"] == str(out / "checkpoints" / "montessori" / "student-iter1")
    check_run_outputs(out)
