"""From per-prompt scores to verdicts (synthkd/efficacy/compare.py): one scoring rule, NLL read the right way round,
Holm across arms, teacher hacking flagged, and two identical arms told apart from nothing."""

from __future__ import annotations

from typing import Any, Mapping

from synthkd.efficacy import stats
from synthkd.efficacy import compare as C
from synthkd.efficacy.compare import conclusions, nll_pairs, prompt_scores
from synthkd.efficacy.result import ArmResult, Difference
from synthkd.items import Item


def compare(scores: Any, baselines: Mapping[str, str | None]) -> dict[str, Any]:
    """The comparison as efficacy.json holds it."""
    return {arm: {s: entry.model_dump(mode="json") for s, entry in sets.items()} for arm, sets in C.compare(scores, baselines).items()}


def per_family(items: list[Item], runs: list[list[float]]) -> dict[str, Any]:
    return {f: g.model_dump() for f, g in C.per_family(items, runs).items()}


def hacking(vs: dict[str, dict[str, Any]]) -> bool:
    return C.hacking({k: Difference.model_validate(v) for k, v in vs.items()})


def arms(**given: dict[str, Any]) -> dict[str, ArmResult]:
    return {name: ArmResult.model_validate(a) for name, a in given.items()}


def test_one_scoring_rule_for_empty_answers() -> None:
    items = [Item("a", "capital of France?", "Paris", "capital"), Item("b", "say hi", None, "chat"), Item("c", "2+2?", "4", "math")]
    teacher = {"a": "The capital of France is Paris.", "b": "", "c": "4"}
    scores = prompt_scores(items, {"a": "Paris.", "c": ""}, teacher)  # "b" missing, "c" empty
    assert scores["gold_accuracy"] == [1.0, 0.0]  # prompts with gold only, in order; an empty answer is wrong
    assert scores["rouge_l"][1] == 0.0 and scores["rouge_l"][2] == 0.0 and scores["rouge_l"][0] > 0
    # The teacher left "b" empty: ROUGE-L 0 for every arm (even a teacher-identical one), and no NLL pair for it.
    assert prompt_scores(items, teacher, teacher)["rouge_l"][1] == 0.0
    assert nll_pairs(items, teacher) == [("capital of France?", teacher["a"]), ("2+2?", "4")]
    assert per_family(items, [[1.0, 0.0]]) == {"capital": {"gold_accuracy": 1.0, "n": 1}, "math": {"gold_accuracy": 0.0, "n": 1}}


def _runs(values: list[float], seeds: int = 1) -> list[list[float]]:
    return [list(values) for _ in range(seeds)]


def test_lower_nll_is_a_gain_and_identical_arms_are_no_difference() -> None:
    n = 40
    base = {"s": {"gold_accuracy": _runs([1.0 if i % 2 else 0.0 for i in range(n)], 2), "nll": _runs([3.0 + (i % 5) * 0.1 for i in range(n)], 2)}}
    better = {"s": {"gold_accuracy": _runs([1.0 if i % 2 else 0.0 for i in range(n)]), "nll": _runs([2.0 + (i % 5) * 0.1 for i in range(n)])}}
    same = {"s": {k: [list(v[0])] for k, v in base["s"].items()}}
    out = compare({"kd": base, "better": better, "same": same}, {"kd": None, "better": "kd", "same": "kd"})
    nll = out["better"]["s"]["vs_baseline"]["nll"]
    assert nll["mean"] < 0 and nll["ci_high"] < 0 and nll["verdict"] == stats.PAYS_OFF  # arm − baseline, lower is better
    assert abs(nll["mean"] + 1.0) < 1e-9
    for metric in ("gold_accuracy", "nll"):
        d = out["same"]["s"]["vs_baseline"][metric]
        assert d["mean"] == 0 and d["verdict"] == stats.NO_DIFFERENCE and d["detectable"] > 0
        assert d["p_holm"] >= d["p_value"]  # Holm over the two arms compared on this set and metric
    assert out["kd"]["s"]["vs_baseline"] == {} and out["kd"]["s"]["metrics"]["gold_accuracy"]["mean"] == 0.5


def test_a_baseline_at_zero_still_has_a_detectable_difference_above_zero() -> None:
    zeros = {"s": {"gold_accuracy": _runs([0.0] * 50)}}
    out = compare({"kd": zeros, "arm": zeros}, {"kd": None, "arm": "kd"})
    d = out["arm"]["s"]["vs_baseline"]["gold_accuracy"]
    assert d["verdict"] == stats.NO_DIFFERENCE and 0.05 < d["detectable"] < 0.5
    line = conclusions(arms(arm={"baseline": "kd", "sets": out["arm"]}), {"arm": "Arm", "kd": "KD"})
    assert line and "no detectable difference at this budget" in line[0] and "could detect" in line[0]


def test_teacher_hacking_is_proxy_up_while_gold_down() -> None:
    n = 60
    base = {"s": {"gold_accuracy": _runs([1.0] * 30 + [0.0] * 30), "rouge_l": _runs([20.0 + i % 3 for i in range(n)])}}
    arm = {"s": {"gold_accuracy": _runs([1.0] * 10 + [0.0] * 50), "rouge_l": _runs([60.0 + i % 3 for i in range(n)])}}
    out = compare({"kd": base, "hack": arm}, {"kd": None, "hack": "kd"})
    entry = out["hack"]["s"]
    assert entry["vs_baseline"]["rouge_l"]["verdict"] == stats.PAYS_OFF and entry["vs_baseline"]["gold_accuracy"]["mean"] < 0
    assert entry["teacher_hacking"] is True
    assert entry["vs_baseline"]["gold_accuracy"]["mcnemar"] == {"b": 20, "c": 0, "p_value": entry["vs_baseline"]["gold_accuracy"]["p_value"]}
    assert hacking({"rouge_l": {"verdict": stats.PAYS_OFF}, "gold_accuracy": {"mean": 0.01}}) is False
    lines = conclusions(arms(hack={"baseline": "kd", "sets": out["hack"]}), {"hack": "Hack", "kd": "KD"})
    assert any("worse than its baseline" in x for x in lines) and any("teacher hacking" in x for x in lines)


def test_a_one_seed_baseline_still_has_to_beat_the_training_noise() -> None:
    """The DPO group's baseline has one seed; the KD baseline's two seeds measure how far training noise alone moves
    the score, and a gain smaller than that is not called a pay-off, however small its interval."""
    n = 100
    kd = {"s": {"gold_accuracy": [[1.0] * 10 + [0.0] * 90, [1.0] * 30 + [0.0] * 70]}}  # seeds 20 points apart
    more = {"s": {"gold_accuracy": [[1.0] * 10 + [0.0] * 90]}}
    dpo = {"s": {"gold_accuracy": [[1.0] * 25 + [0.0] * 75]}}  # +15 points on 15 prompts flipped one way
    out = compare({"kd": kd, "more": more, "dpo": dpo}, {"kd": None, "more": None, "dpo": "more"})
    d = out["dpo"]["s"]["vs_baseline"]["gold_accuracy"]
    assert d["ci_low"] > 0 and d["p_holm"] < 0.05 and abs(d["seed_spread"] - 0.2) < 1e-9
    assert d["verdict"] == stats.NO_DIFFERENCE
    assert len(kd["s"]["gold_accuracy"][0]) == n
