"""The stage contract end to end with real vLLM and TRL (slow): failed calls of DPO reach failed.jsonl
with their reason (the teacher and judge are the test server, with faults; the trained student is
served by vLLM). Montessori's failed judge calls: test_e2e_vllm.py::test_montessori_judge_and_icl_signals[judge]."""

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


def test_dpo_failed_calls_reach_failed_jsonl(tmp_path: Path, synthkd_home: Path) -> None:
    with running_server(faults=FAULTS) as server:
        def edit(data: dict[str, Any]) -> None:
            _remote(data, server.base_url, "teacher", "judge")
            data["stages"][0]["limit"] = 16
            data["stages"][1]["limit"] = 6
            data["stages"][4].update(iterations=1, samples=2)

        out = tmp_path / "run"
        proc = run_cli("run", str(shipped_pipeline(tmp_path, "dpo.yaml", edit)), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)}, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    failed = read_rows(out, "dpo", failed=True)
    assert failed and {f["reason"] for f in failed} == {"gave_up:500"}
    assert {f["step"] for f in failed} <= {"teacher_answer", "student_answer", "judge", "student_sample", "judge_sample"}
    assert "teacher_answer" in {f["step"] for f in failed}  # the teacher is the faulty server
    stage = run_json(out)["stages"]["dpo"]
    assert stage["failed"] == len(failed) == stage["iterations"][0]["failed"]
    assert read_rows(out, "dpo.iter1.pairs", failed=True) == failed
    check_run_outputs(out)
