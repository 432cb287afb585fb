"""SKD generation filters: heads (clean end, pattern, dedup, odd characters, log-prob cut) and tails."""

import random

from synthkd.skd.generation import DEFAULT_RELATIONS, Completion, clean_heads, clean_tails, numbered_seeds


def test_head_filters_in_order() -> None:
    completions = [
        Completion("PersonX bakes a cake\nmore", True, [-1.0, -1.0]),       # kept (first line only), lp -2
        Completion("PersonX bakes a cake", True, [-0.5]),                  # duplicate
        Completion("PersonX runs a marathon", False, [-0.1]),              # did not end cleanly
        Completion("The cat sleeps", True, [-0.1]),                        # does not match the pattern
        Completion("PersonX pays \x07 the bill", True, [-0.1]),            # odd character
        Completion("PersonX calls a friend", True, [-5.0]),                # kept, lowest lp -5
        Completion("PersonX plants tomatoes", True, [-0.2, -0.3]),         # kept, lp -0.5
        Completion("PersonX paints the fence", True, [-3.0]),              # kept, lp -3
        Completion("PersonX fixes the sink", True, [-0.4]),                # kept, lp -0.4
    ]
    heads, stats = clean_heads(completions, r"^PersonX\b", drop_fraction=0.2)
    # 5 kept before the cut; 20% of 5 = 1 dropped: the lowest log-probability ("calls a friend").
    assert heads == ["PersonX bakes a cake", "PersonX plants tomatoes", "PersonX paints the fence", "PersonX fixes the sink"]
    assert stats == {"sampled": 9, "unfinished": 1, "no_match": 1, "odd_characters": 1, "duplicate": 1, "low_logprob": 1, "kept": 4}


def test_logprob_cut_skipped_without_logprobs() -> None:
    heads, stats = clean_heads([Completion("PersonX sings", True), Completion("PersonX dances", True)], r"^PersonX", 0.5)
    assert heads == ["PersonX sings", "PersonX dances"]
    assert stats["low_logprob"] == "skipped: the endpoint returned no logprobs"


def test_tails() -> None:
    assert clean_tails(["  to rest.\nextra", "To rest", "ok", "to eat dinner", "", "x\x01y z"]) == ["to rest", "to eat dinner"]


def test_seeds_and_relations() -> None:
    seeds = [f"PersonX event {i}" for i in range(30)]
    a = numbered_seeds(seeds, 10, random.Random(1))
    assert a == numbered_seeds(seeds, 10, random.Random(1)) and len(set(a)) == 10
    assert len(numbered_seeds(seeds[:3], 10, random.Random(1))) == 3
    assert set(DEFAULT_RELATIONS) == {"xAttr", "xEffect", "xIntent", "xNeed", "xReact", "xWant", "HinderedBy"}
