"""Rationale distillation, decontamination, evaluation and the report, end to end against the test
server (teacher, judge and student remote) with a real TRL SFT of a tiny student."""

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, check_run_outputs, read_rows, remote_endpoint, run_cli, run_json
from tests.fakeserver import running_server


def _pipeline(tmp: Path, base_url: str) -> Path:
    lines = (REPO / "data" / "rationale" / "arithmetic_train.jsonl").read_text().splitlines()[:10]
    test = (REPO / "data" / "rationale" / "arithmetic_test.jsonl").read_text().splitlines()[:5]
    # Plant a contaminated training task: it contains a whole test question.
    import json
    leak = json.loads(lines[0])
    leak["id"], leak["question"] = "leak", "Copy: " + json.loads(test[0])["question"]
    (tmp / "train.jsonl").write_text("\n".join(lines + [json.dumps(leak)]) + "\n")
    (tmp / "test.jsonl").write_text("\n".join(test) + "\n")
    spec = {
        "name": "rationale", "prompts_dir": str(REPO / "prompts"),
        "endpoints": {n: remote_endpoint(base_url, n) for n in ("teacher", "judge", "student")},
        "stages": [
            {"name": "tasks", "type": "load", "path": str(tmp / "train.jsonl")},
            {"name": "testset", "type": "load", "path": str(tmp / "test.jsonl")},
            {"name": "clean", "type": "decontaminate", "input": "tasks", "column": "question", "against": "testset", "against_column": "question"},
            # The test server's answers are pseudo-words: gold never matches, so use self-consistency.
            {"name": "rationales", "type": "rationale", "input": "clean", "gold_column": None, "samples": 3, "format": "multitask",
             "sampling": {"temperature": 0.7, "max_tokens": 200, "seed": 3}},  # a seed per sample: distinct samples
            {"name": "sft", "type": "sft", "input": "rationales", "model": "tiny:student",
             "sft": {"num_train_epochs": 1, "max_length": 128, "bf16": False, "per_device_train_batch_size": 8}},
            {"name": "eval", "type": "eval", "input": "testset", "question_column": "question", "gold_column": "answer"},
        ],
    }
    path = tmp / "rationale.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.needs_torch
@pytest.mark.needs_trl
def test_rationale_decontaminate_eval_report(tmp_path: Path, synthkd_home: Path) -> None:
    with running_server() as server:
        pipeline = _pipeline(tmp_path, server.base_url)
        out = tmp_path / "run"
        proc = run_cli("run", str(pipeline), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)})
        assert proc.returncode == 0, proc.stderr[-3000:]
    stages = run_json(out)["stages"]
    assert stages["clean"]["decontamination"] == {"dropped": 1, "kept": 10, "ngram": 13, "reference_size": 5}
    assert [r["id"] for r in read_rows(out, "clean", failed=True)] == ["leak"]
    r = stages["rationales"]["rationale"]
    # Distinct pseudo-word answers: the majority is the first sample, so one of three is kept per input.
    assert (r["inputs"], r["samples"], r["kept"], r["training_examples"]) == (10, 30, 10, 20)
    per_input = read_rows(out, "rationales.per_input")
    assert len(per_input) == 10 and all(p["kept"] == 1 and abs(p["kept_fraction"] - 1 / 3) < 1e-9 for p in per_input)
    tasks = sorted({row["task"] for row in read_rows(out, "rationales")})
    assert tasks == ["answer", "rationale"]
    assert len(read_rows(out, "rationales", failed=True)) == 20  # the minority rationales, with their reason
    assert stages["sft"]["steps"] > 0
    e = stages["eval"]["eval"]
    assert e["n"] == 5 and e["wins"] + e["ties"] + e["losses"] == e["judged"] == 5
    assert e["exact_match_n"] == 5 and 0 <= e["exact_match"] <= 1
    assert 0 < e["student_share_of_teacher"]
    check_run_outputs(out)

    proc = run_cli("report", str(out))
    assert proc.returncode == 0, proc.stderr
    html = (out / "report" / "index.html").read_text()
    assert "eval" in html and (out / "report" / "report.md").is_file()
    assert list((out / "report").glob("*.png"))


def test_eval_on_its_own(tmp_path: Path, synthkd_home: Path) -> None:
    with running_server() as server:
        pipeline = _pipeline(tmp_path, server.base_url)
        out = tmp_path / "eval-run"
        proc = run_cli("eval", str(pipeline), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert server.stats()["chat_requests"] == 5 * 4  # student, teacher, judge twice: nothing else ran
    stages = run_json(out)["stages"]
    assert set(stages) == {"testset", "eval"}
    assert stages["eval"]["eval"]["n"] == 5 and '"student_share_of_teacher"' in proc.stdout

    spec = yaml.safe_load(pipeline.read_text())
    spec["stages"][-1]["input"] = "clean"
    pipeline.write_text(yaml.safe_dump(spec))
    proc = run_cli("eval", str(pipeline), "--out", str(out))
    assert proc.returncode == 2 and "not a load stage" in proc.stderr and "Traceback" not in proc.stderr
