"""One way to train a checkpoint: every stage type that trains (sft and dpo are covered in
tests/test_train_accelerate.py; here lion, skd and montessori) runs its training under `processes: 2`
through the supervised launcher, and every training run leaves its log under RUN_DIR/logs/.

Every role answers from the test server (Montessori's teacher, whose weights are trained and served, from a test
server synthkd starts as its serve command). Slow: real multi-process training (torch.distributed over gloo)."""

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import remote_endpoint, run_cli, run_json, shipped_pipeline
from tests.fakeserver import running_server

pytestmark = [pytest.mark.slow, pytest.mark.needs_torch, pytest.mark.needs_trl]


def _lion(url: str) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["endpoints"] = {n: remote_endpoint(url, n) for n in ("teacher", "student")}
        data["stages"][0]["limit"] = 12
        data["stages"][1].update(referee="code:rouge_l", student_model="tiny:student", iterations=1, new_per_iteration=4,
                                 final_generation=False, processes=2,
                                 sft={"num_train_epochs": 1, "max_length": 64, "per_device_train_batch_size": 2, "bf16": False})
    return edit


def _skd(url: str) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["endpoints"] = {n: remote_endpoint(url, n) for n in ("teacher", "judge", "student")}
        skd = data["stages"][-1]
        skd.update(processes=2,
                   sft={"num_train_epochs": 1, "max_length": 96, "bf16": False, "per_device_train_batch_size": 4})
        skd["heads"].update(prompts=2, n=4)
        skd["tails"]["n"] = 2
        skd["critic"].update(label_sample=30, epochs=1)
    return edit


def _montessori(url: str) -> Any:
    def edit(data: dict[str, Any]) -> None:
        # The teacher must be served by synthkd (its weights are trained): the test server, started as its serve
        # command, answers for whatever weights it is given, so synthesis yields instructions to learn from.
        served = {"model_path": "tiny:teacher", "command": [sys.executable, "-m", "tests.fakeserver", "--host", "{host}", "--port", "{port}"]}
        data["endpoints"] = {"teacher": {"base_url": None, "model": "teacher", "concurrency": 16, "serve": served},
                             **{n: remote_endpoint(url, n) for n in ("responder", "judge", "student")}}
        data["stages"][0]["limit"] = 24
        m = data["stages"][-1]
        m.update(iterations=1, warmup_size=8, final_prompts=2, processes=2)
        m["synthesis"].update(prompts=3, n=2)
    return edit


@pytest.mark.parametrize("name,stage,tags", [
    ("lion_tiny.yaml", "lion", ["iter1"]),
    ("skd.yaml", "skd", ["critic", "student"]),  # the critic (a classifier job) and the student both under processes: 2
    ("montessori.yaml", "montessori", ["teacher-iter1", "student-iter1"]),
])
def test_training_stage_on_two_processes(name: str, stage: str, tags: list[str], tmp_path: Path, synthkd_home: Path) -> None:
    edits = {"lion": _lion, "skd": _skd, "montessori": _montessori}
    with running_server() as server:
        path = shipped_pipeline(tmp_path, name, edits[stage](server.base_url))
        out = tmp_path / "run"
        proc = run_cli("run", str(path), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run_json(out)["stages"][stage]["status"] == "done"
    trained = [t for t in tags if (out / "checkpoints" / stage / t / "model.safetensors").is_file()]
    assert trained, f"no checkpoint of {stage} was trained"
    for tag in trained:
        log = (out / "logs" / f"train-{stage}-{tag}.log").read_text()
        # the supervised launcher ran it: accelerate with two processes, the checkpoint written once
        assert "accelerate.commands.launch --num_processes 2" in log, log[-2000:]
        assert not (out / "checkpoints" / stage / f"{tag}.launch").exists()
