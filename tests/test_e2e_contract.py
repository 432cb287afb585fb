"""The stage contract end to end with real vLLM and TRL (slow): a DPO run with a code judge whose teacher
fails calls for good keeps them in failed.jsonl with their reason (the teacher is the test server,
with faults; the trained student is served by vLLM). Montessori's failed judge calls: test_e2e_vllm.py::test_montessori_judge_and_icl_signals[judge]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import check_run_outputs, read_rows, run_cli, run_json, shipped_pipeline
from tests.fakeserver import running_server

pytestmark = [pytest.mark.slow, pytest.mark.needs_vllm, pytest.mark.needs_torch, pytest.mark.needs_trl]

FAULTS = [{"kind": "server_error", "rate": 0.15, "times": -1, "status": 500}]


def _remote(data: dict[str, Any], base_url: str, *names: str) -> None:
    for n in names:
        data["endpoints"][n] = {"base_url": base_url, "model": n, "concurrency": 16, "timeout_s": 10, "max_retries": 1}


def test_dpo_code_judge_with_a_faulty_teacher(tmp_path: Path, synthkd_home: Path) -> None:
    """`judge: code:rouge_l` mines teacher-over-student pairs without a judge call and evaluates judge-free
    (the held-out curve), while the teacher (the test server) fails 15% of its calls for good: those
    reach failed.jsonl with their reason, and the run finishes. (Formerly two runs:
    test_e2e_vllm.py's code-judge test with a vLLM teacher, and this file's failed-calls test.)"""
    with running_server(faults=FAULTS, log_path=tmp_path / "server.jsonl") as server:
        def edit(data: dict[str, Any]) -> None:
            _remote(data, server.base_url, "teacher", "judge")
            data["stages"][0]["limit"] = 16
            data["stages"][1]["limit"] = 6
            # processes: 2: the dpo stage, like every stage that trains, trains through the launcher on N processes
            data["stages"][4].update(iterations=1, judge="code:rouge_l", sources=["teacher_vs_student"], processes=2)

        out = tmp_path / "run"
        proc = run_cli("run", str(shipped_pipeline(tmp_path, "dpo.yaml", edit)), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)}, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        models = {e["model"] for e in server.log_entries()}
    stage = run_json(out)["stages"]["dpo"]
    # The judge endpoint is configured and reachable, and gets no call.
    assert models == {"teacher"} and "judge" not in stage["by_endpoint"]
    scored = stage["heldout_teacher"]["n"]  # prompts with a non-empty teacher reference
    assert 0 < scored <= 6 and stage["heldout_base"]["n"] == stage["iterations"][0]["heldout"]["n"] == scored
    assert "rouge_l" in stage["heldout_teacher"] and "held-out, stage dpo" in proc.stdout
    from synthkd.scoring.metrics import rouge_l_f1

    for pair in read_rows(out, "dpo"):
        rouge = rouge_l_f1(pair["rejected"][0]["content"], pair["chosen"][0]["content"])
        assert abs(pair["margin"] - (10 - rouge / 10)) < 1e-9 and pair["margin"] >= 1.0
    failed = read_rows(out, "dpo", failed=True)
    assert failed and {f["reason"] for f in failed} == {"gave_up:500"}
    assert {f["step"] for f in failed} == {"teacher_answer"}  # the teacher is the faulty server; the student is vLLM
    assert stage["failed"] == len(failed) == stage["iterations"][0]["failed"]
    assert read_rows(out, "dpo.iter1.pairs", failed=True) == failed
    log = (out / "logs" / "train-dpo-iter1.log").read_text()
    assert "accelerate.commands.launch --num_processes 2" in log and stage["iterations"][0]["dpo"]["pairs"] > 0, log[-2000:]
    check_run_outputs(out)
