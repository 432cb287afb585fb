"""pipelines/chat.yaml and pipelines/tools.yaml as shipped (smaller), offline: SmolLM2-135M-Instruct served by
vLLM as user simulator and teacher, a depth-pruned student trained with TRL on the assistant turns and scored on
held-out conversations / tool tasks before and after. Slow: real vLLM and TRL.

The chat test's student is the suite's 10-layer one (the efficacy and scoring tests build it) instead of the
pipeline's 24-layer one: the machinery under test is the same, and it trains and serves a model 2.4 times smaller
(420 s -> 352 s measured beside another slow test)."""

from pathlib import Path

import pytest
from datasets import load_from_disk

from tests.conftest import REPO, check_run_outputs, read_rows, run_cli, run_json

STUDENT = "smollm2-135m-instruct?layers=10"
SMALL_STUDENT = ["--set", f"endpoints.student.serve.model_path={STUDENT}", "--set", f"stages.sft.model={STUDENT}"]

pytestmark = [pytest.mark.slow, pytest.mark.needs_vllm, pytest.mark.needs_torch, pytest.mark.needs_trl]


def test_chat_pipeline_as_shipped(tmp_path: Path, synthkd_home: Path) -> None:
    out = tmp_path / "run"
    small = ["--set", "stages.seeds.limit=6", "--set", "stages.heldout_seeds.limit=3", "--set", "stages.chats.max_turns=2",
             "--set", "stages.heldout_chats.max_turns=2", "--set", "stages.sft.sft.num_train_epochs=1", *SMALL_STUDENT]
    # shorter turns: generation on the CPU was most of the test's time; the machinery is the same
    for stage in ("chats", "heldout_chats"):
        small += ["--set", f"stages.{stage}.user_sampling.max_tokens=24", "--set", f"stages.{stage}.teacher_sampling.max_tokens=48"]
    for stage in ("eval_base", "eval_trained"):
        small += ["--set", f"stages.{stage}.sampling.max_tokens=48"]
    proc = run_cli("run", str(REPO / "pipelines" / "chat.yaml"), "--out", str(out), *small, env={"SYNTHKD_HOME": str(synthkd_home)}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    chats = load_from_disk(str(out / "datasets" / "chats"))
    assert len(chats) + len(read_rows(out, "chats", failed=True)) == 6
    for row in chats:
        roles = [m["role"] for m in row["messages"]]
        assert roles[0] == "system" and roles[1:] == ["user", "assistant"] * row["turns"]
    stages = run_json(out)["stages"]
    assert stages["sft"]["steps"] > 0
    for name in ("eval_base", "eval_trained"):
        assert stages[name]["turns"] > 0 and stages[name]["nll"]["n"] == stages[name]["turns"]
    # the trained student is what the second evaluation scored, its weights loaded into the running server
    assert stages["eval_trained"]["student_weights"] == str(out / "checkpoints" / "sft")
    assert "weights loaded into its running server" in " ".join(proc.stderr.split())
    assert len(list((out / "logs").glob("server-student-*.log"))) == 1  # one student server, not a second start
    check_run_outputs(out)


def test_tools_pipeline_as_shipped(tmp_path: Path, synthkd_home: Path) -> None:
    out = tmp_path / "run"
    # The shipped 24-layer student: the untrained 10-layer one cannot close a structured tool call at all.
    # The student's replies keep the pipeline's 160-token cap: the untrained student rambles inside its answer's JSON
    # string, and with 64 tokens every reply was cut before the JSON closed (the stage then has no row to score).
    small = ["--set", "stages.tasks.limit=6", "--set", "stages.heldout_tasks.limit=4", "--set", "stages.sft.sft.num_train_epochs=1"]
    proc = run_cli("run", str(REPO / "pipelines" / "tools.yaml"), "--out", str(out), *small, env={"SYNTHKD_HOME": str(synthkd_home)}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = run_json(out)["stages"]
    traj = stages["trajectories"]
    assert traj["trajectories"] + traj["failed"] == 6
    for row in read_rows(out, "trajectories"):
        assert row["messages"][1]["role"] == "user" and row["messages"][-1]["role"] == "assistant" and row["structured_messages"]
        for m in row["messages"]:
            for call in m.get("tool_calls") or []:
                assert call["function"]["name"] in ("calculator", "lookup_capital", "days_between", "weekday")
    for name in ("eval_base", "eval_trained"):
        assert stages[name]["gold"]["n"] == 4 and stages[name]["right_tool"]["n"] == 4
    check_run_outputs(out)
