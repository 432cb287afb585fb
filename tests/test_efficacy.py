"""`synthkd efficacy` end to end on tiny models: the test server is the teacher (priced at the nominal price, as a
local teacher is), `tiny:student` is served by tests/hfserver.py and trained with TRL. What a user checks: every arm
spends at most its cap, arms compared with each other train the same number of steps, no arm sees gold, the outputs
name every held-out set, and a rerun pays for nothing and reports the same figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthkd.client.cache import RequestCache
from tests.conftest import REPO, hf_served, remote_endpoint, run_cli
from tests.fakeserver import running_server

# One worker runs the module: its end-to-end fixture is built once, not once per xdist worker.
pytestmark = [pytest.mark.needs_torch, pytest.mark.needs_trl, pytest.mark.xdist_group("efficacy")]

FAST_ARMS = "kd,lion_control,lion"  # the fast tier: the baseline, a restarting control and the method against it
ALL_ARMS = "kd,kd_sampled,kd_best_of_n,lion_control,lion,lion_list,kd_more_sft,kd_dpo,kd_dpo_nll"


def _pipeline(tmp: Path, base_url: str) -> Path:
    data = {
        "name": "eff", "prompts_dir": str(REPO / "prompts"),
        # cache_identity: the test server's port changes between the two invocations; the replies stay its replies.
        "endpoints": {"teacher": remote_endpoint(base_url, "teacher", cache_identity="test-teacher"), "student": hf_served("tiny:student")},
        "stages": [{"name": "pool", "type": "load", "path": str(REPO / "data/distill/pool.jsonl"), "limit": 40},
                   {"name": "indist", "type": "load", "path": str(REPO / "data/distill/heldout.jsonl")}],
    }
    path = tmp / "eff.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _efficacy(tmp: Path, out: Path, arms: str = FAST_ARMS) -> Any:
    with running_server() as server:
        return run_cli("efficacy", str(_pipeline(tmp, server.base_url)), "--out", str(out), "--heldout", str(REPO / "data/distill/heldout_families.jsonl"),
                       "--heldout-limit", "6", "--steps", "2", "--extra-steps", "1", "--iterations", "2", "--batch", "4", "--max-tokens", "16", "--arms", arms,
                       env={"SYNTHKD_HOME": str(tmp / "home")})


def _check_spend_and_steps(out: Path, result: dict[str, Any], arms: str) -> None:
    """Every arm done, at or under the cap (the engine's budget_usd in its run), with the same steps as its baseline."""
    assert set(result["arms"]) == set(arms.split(",")), result["arms"].keys()
    assert all(a["status"] == "done" for a in result["arms"].values()), {n: a.get("reason") for n, a in result["arms"].items()}
    cap = result["budget_usd"]
    for name, a in result["arms"].items():
        spend = a["spend"]
        assert 0 < spend["cost_usd"] <= spend["max_cost_usd"] <= cap, name
        assert spend["calls"] > 0 and spend["input_tokens"] > 0 and spend["output_tokens"] > 0
    for spec in (out / "runs").glob("*/pipeline.yaml"):
        budget = yaml.safe_load(spec.read_text()).get("budget_usd")
        assert budget == (None if spec.parent.name in ("reference", "data") else cap), spec
    steps = {n: a["training"]["steps"] for n, a in result["arms"].items()}
    for name, a in result["arms"].items():
        assert steps[name] == (3 if name in ("kd_more_sft", "kd_dpo", "kd_dpo_nll") else 2), (name, steps)
        if a["baseline"]:
            assert steps[name] == steps[a["baseline"]], name


def _teacher_replies(out: Path) -> dict[str, int]:
    counts = {}
    for cache in sorted(out.glob("**/cache.sqlite")):
        db = RequestCache(cache)
        counts[str(cache.relative_to(out))] = db.totals("teacher")[0]
        db.close()
    return counts


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("efficacy")
    out = tmp / "out"
    proc = _efficacy(tmp, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, out, json.loads((out / "efficacy.json").read_text())


def test_every_arm_runs_under_its_cap_with_equal_steps(first_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, out, result = first_run
    _check_spend_and_steps(out, result, FAST_ARMS)
    arms = result["arms"]
    # Lion's rejected generations are paid and never trained on: reported, not hidden; the control pays for answers only.
    assert arms["lion"]["spend"]["untrained_calls"] >= 0 and arms["lion_control"]["spend"]["untrained_calls"] == 0


@pytest.mark.slow
def test_all_arms_with_the_dpo_group(tmp_path: Path) -> None:
    """Every arm, the DPO group included: DPO and DPO+NLL against the same extra SFT steps, at no extra teacher cost."""
    out = tmp_path / "out"
    proc = _efficacy(tmp_path, out, ALL_ARMS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "efficacy.json").read_text())
    _check_spend_and_steps(out, result, ALL_ARMS)
    arms = result["arms"]
    # DPO costs no extra teacher call: its teacher answers are the KD answers (cache hits in the same run).
    assert arms["kd_dpo"]["spend"]["calls"] == arms["kd_dpo_nll"]["spend"]["calls"] == arms["kd"]["spend"]["calls"]
    assert arms["kd_dpo"]["baseline"] == arms["kd_dpo_nll"]["baseline"] == "kd_more_sft"
    dpo = [s for s in yaml.safe_load((out / "runs" / "kd" / "pipeline.yaml").read_text())["stages"] if s["type"] == "dpo"]
    assert [s["dpo"].get("loss_type") for s in dpo] == [None, ["sigmoid", "sft"]]
    assert all(set(a["sets"]) == {"indist", "heldout_families"} for a in arms.values())
    # Best of n: n sampled answers per prompt, the consensus kept (no gold), on 1/n of KD's prompts.
    bon = yaml.safe_load((out / "runs" / "kd_best_of_n.s0" / "pipeline.yaml").read_text())["stages"]
    answers = next(s for s in bon if s["name"] == "kd_best_of_n.answers")
    assert answers["select"] == {"n": 4, "rule": "consensus", "checks": {"not_truncated": False}}
    assert answers["sampling"]["temperature"] > 0
    assert next(s for s in bon if s["name"] == "pool")["limit"] == result["sizes"]["kd_prompts"] // 4
    # List mode: the same Lion as the json arm but for the generation mode.
    lion, lion_list = ({k: v for k, v in _lion_stage(out, name).items() if k != "name"} for name in ("lion", "lion_list"))
    assert lion_list.pop("generation_mode") == "list" and lion_list.pop("fewshot_examples") == 4 and lion_list == lion


def _lion_stage(out: Path, name: str) -> dict[str, Any]:
    return next(s for s in yaml.safe_load((out / "runs" / f"{name}.s0" / "pipeline.yaml").read_text())["stages"] if s["type"] == "lion")


def test_no_arm_sees_gold_and_every_arm_trains_on_answers_only(first_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, out, _ = first_run
    for name in ("kd_pool.jsonl", "lion_seeds.jsonl", "control_reserve.jsonl"):
        rows = [json.loads(line) for line in (out / "data" / name).read_text().splitlines()]
        assert rows and all(set(r) <= {"id", "instruction", "family"} and "instruction" in r for r in rows), name
    for spec in (out / "runs").glob("*/pipeline.yaml"):
        for stage in yaml.safe_load(spec.read_text())["stages"]:
            if "sft" in stage:
                assert stage["sft"]["completion_only_loss"] is True and stage["sft"]["lr_scheduler_type"] == "cosine"
            if stage["type"] == "lion":
                assert stage["referee"] == "code:rouge_l" and stage["final_generation"] is False


def test_outputs_name_every_heldout_set_with_gold_and_statistics(first_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, out, result = first_run
    assert set(result["reference"]["sets"]) == {"indist", "heldout_families"}
    for name, a in result["arms"].items():
        for set_name in ("indist", "heldout_families"):
            entry = a["sets"][set_name]
            assert entry["metrics"]["gold_accuracy"]["n"] == result["reference"]["sets"][set_name]["gold_n"] > 0 and "nll" in entry["metrics"]
            if a["baseline"]:
                diff = entry["vs_baseline"]["gold_accuracy"]
                assert diff["ci_low"] <= diff["mean"] <= diff["ci_high"] and 0 <= diff["p_holm"] <= 1
                assert diff["verdict"] in ("pays off", "worse than the baseline", "no detectable difference at this budget")
    md = (out / "efficacy.md").read_text()
    assert "heldout_families" in md and "Lion control" in md and "What to conclude" in md
    assert (out / "efficacy.html").read_text().count("data:image/png;base64,") >= 2
    assert result["conclusion"] and result["examples"]["heldout_families"]


def test_a_rerun_pays_for_nothing_and_reports_the_same(first_run: tuple[Path, Path, dict[str, Any]]) -> None:
    tmp, out, result = first_run
    before = _teacher_replies(out)
    # The probes run again too (as after a changed prompt): priced from the cache, they must plan the same arms.
    (out / "probes" / "probes.json").unlink()
    proc = _efficacy(tmp, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _teacher_replies(out) == before
    again = json.loads((out / "efficacy.json").read_text())
    assert again["sizes"] == result["sizes"] and again["budget_usd"] == result["budget_usd"]
    for name, a in result["arms"].items():
        assert again["arms"][name]["sets"] == a["sets"], name
        assert again["arms"][name]["spend"] == a["spend"], name


@pytest.mark.parametrize(("args", "expect"), [
    (["--arms", "kd,magic"], "unknown arm(s) magic"),
    (["--heldout", "/nonexistent/x.jsonl"], "held-out file not found"),
    (["--pool", "nope"], "no load stage 'nope'"),
    (["--student", "teacher"], "is not served by synthkd"),
    (["--tier", "huge"], "unknown tier"),
    (["--budget-usd", "0"], "--budget-usd must be above 0"),
])
def test_bad_efficacy_input_is_one_line(tmp_path: Path, args: list[str], expect: str) -> None:
    proc = run_cli("efficacy", str(_pipeline(tmp_path, "http://127.0.0.1:9/v1")), "--out", str(tmp_path / "out"), *args,
                   env={"SYNTHKD_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2 and expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "runs").exists()  # nothing ran, nothing paid
