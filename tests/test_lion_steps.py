"""Lion's pure steps: score averaging over both orders, the hard rule, seeds and filters."""

import random

from synthkd.client.endpoint import Result
from synthkd.judging import judge
from synthkd.items import Item
from synthkd.lion import steps
from synthkd.lion.schemas import RefereeScores, new_instruction_model
from synthkd.rouge import RougeIndex


def test_both_orders_are_averaged() -> None:
    # Teacher shown first: teacher 8, student 4. Student shown first: student 6, teacher 7.
    j = judge(RefereeScores(score_assistant_1=8, score_assistant_2=4), RefereeScores(score_assistant_1=6, score_assistant_2=7))
    assert (j.a, j.b, j.gap) == (7.5, 5.0, 2.5)
    assert j.raw == (8, 4, 7, 6)
    assert steps.is_hard(j, 1.0) and not steps.is_hard(j, 3.0)


def test_hard_threshold_is_inclusive() -> None:
    j = judge(RefereeScores(score_assistant_1=6, score_assistant_2=5), RefereeScores(score_assistant_1=5, score_assistant_2=6))
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


def test_list_items_lose_their_marker_and_what_follows_the_line() -> None:
    for reply in ("5. Name three rivers in Spain.", "5) Name three rivers in Spain.\n6) Name a lake.", "(5) Name three rivers in Spain.",
                  "- Name three rivers in Spain.", "  * Name three rivers in Spain.\n", "#5 Name three rivers in Spain.",
                  "\n5. Name three rivers in Spain.", "5.Name three rivers in Spain."):
        assert steps.list_item(reply)[0] == "Name three rivers in Spain.", reply
    assert steps.list_item("5. Name a lake.\n6. Name a river.") == ("Name a lake.", True)
    assert steps.list_item("5. Name a lake.") == ("Name a lake.", False)
    # A number that is the task's own, not a marker, stays.
    assert steps.list_item("2.5 kg of flour: how many grams?")[0] == "2.5 kg of flour: how many grams?"
    assert steps.list_item("") == ("", False) and steps.list_item(None) == (None, False)


def test_heldout_filter_and_word_cap() -> None:
    heldout = steps.HeldoutFilter(["What is the capital of Peru? Answer with one word.", "  "], 0.7)
    index = RougeIndex(0.7, [])
    ok = Result(text="x")
    assert steps.reject_reason(ok, "what is the CAPITAL of peru -- answer with one word", 4, index, heldout=heldout) == "heldout_copy"
    assert steps.reject_reason(ok, "What is the capital of Peru? Answer in one word please.", 4, index, heldout=heldout) == "heldout_rouge_l"
    assert steps.reject_reason(ok, "What is the capital of Chile? Reply briefly.", 4, index, heldout=heldout) is None
    assert steps.reject_reason(ok, "Name five rivers of Europe, longest first.", 4, index, max_words=6) == "too_long"
    assert steps.reject_reason(ok, "Name five rivers of Europe.", 4, index, max_words=6) is None


def test_fewshot_examples_share_the_seed_family() -> None:
    pool = [Item(str(i), f"task {i}", family="ab"[i % 2]) for i in range(10)]
    pool.append(Item("dup", "task  0", family="a"))  # the seed's text again (spacing aside)
    chosen = steps.fewshot(pool[0], pool, 4, random.Random(1))
    assert len(chosen) == 4 and pool[0] in chosen and {x.family for x in chosen} == {"a"}
    assert len({steps.one_line(x.instruction) for x in chosen}) == 4
    assert len(steps.fewshot(pool[0], pool, 9, random.Random(1))) == 5  # as many as the family has
    bare = [Item(str(i), f"task {i}") for i in range(6)]
    assert len(steps.fewshot(bare[2], bare, 4, random.Random(1))) == 4  # no family: any of the kind


def test_generation_yield_adds_up() -> None:
    y = steps.GenerationYield(mode="list")
    for reason in (None, "too_long", None, "heldout_copy", "too_long"):
        y.count(reason)
    assert y.model_dump() == {"mode": "list", "calls": 5, "usable": 2, "rejected": {"heldout_copy": 1, "too_long": 2}, "yield": 0.4}
    assert steps.GenerationYield(mode="json").model_dump()["yield"] is None
