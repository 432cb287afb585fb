"""Lion's pure steps: score averaging over both orders, the hard rule, seeds and filters."""

import random

from synthkd.client.endpoint import Result
from synthkd.lion import steps
from synthkd.lion.schemas import RefereeScores, new_instruction_model
from synthkd.rouge import RougeIndex


def test_both_orders_are_averaged() -> None:
    # Teacher shown first: teacher 8, student 4. Student shown first: student 6, teacher 7.
    j = steps.judge(RefereeScores(score_assistant_1=8, score_assistant_2=4), RefereeScores(score_assistant_1=6, score_assistant_2=7))
    assert (j.a, j.b, j.gap) == (7.5, 5.0, 2.5)
    assert j.raw == (8, 4, 7, 6)
    assert steps.is_hard(j, 1.0) and not steps.is_hard(j, 3.0)


def test_hard_threshold_is_inclusive() -> None:
    j = steps.judge(RefereeScores(score_assistant_1=6, score_assistant_2=5), RefereeScores(score_assistant_1=5, score_assistant_2=6))
    assert j.gap == 1.0 and steps.is_hard(j, 1.0)


def test_split_and_seed_picking_are_deterministic() -> None:
    assert steps.split_target(6000, 0.5) == (3000, 3000)
    assert steps.split_target(7, 0.5) == (4, 3)
    pool = [{"id": str(i)} for i in range(10)]
    a = steps.pick_seeds(pool, 20, random.Random("x"))
    b = steps.pick_seeds(pool, 20, random.Random("x"))
    assert a == b and len(a) == 20
    assert steps.pick_seeds([], 5, random.Random(0)) == []


def test_generation_filters() -> None:
    index = RougeIndex(0.7, ["Explain how vaccines train the immune system to recognise a pathogen."])
    ok = Result(text="{}")
    assert steps.reject_reason(ok, "Describe the causes of the French Revolution in detail.", 4, index) is None
    assert steps.reject_reason(ok, "Too short", 4, index) == "too_short"
    assert steps.reject_reason(ok, "- Describe the causes of the revolution.", 4, index) == "bad_start"
    assert steps.reject_reason(ok, "Explain how vaccines train the immune system to recognise pathogens.", 4, index) == "rouge_l"
    assert steps.reject_reason(Result(text="{", error="truncated"), None, 4, index) == "truncated"


def test_instruction_schema_bounds_length() -> None:
    model = new_instruction_model(50)
    schema = model.model_json_schema()
    assert schema["properties"]["instruction"]["maxLength"] == 50
    assert new_instruction_model(50) is model  # one class per bound: stable cache keys
