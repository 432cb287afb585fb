"""The best-of-n rules as pure functions: format checks, the gold rule, consensus (minimum Bayes risk), ties."""

from __future__ import annotations

import pytest

from synthkd.config.stages import SelectChecks
from synthkd.selection import (CONSENSUS, GOLD, NO_GOLD, NO_GOLD_MATCH, NOT_A_LABEL, NOT_NON_EMPTY, NOT_ONE_LINE, TOO_MANY_WORDS,
                               TRUNCATED, agreements, check_answer, choose, row_gold)
from synthkd.scoring.metrics import rouge_l_f1


@pytest.mark.parametrize(("text", "truncated", "checks", "reason"), [
    ("Paris.", False, {}, None),
    ("...", False, {}, NOT_NON_EMPTY),
    ("...", False, {"non_empty": False}, None),
    ("Paris is", True, {}, TRUNCATED),
    ("Paris is", True, {"not_truncated": False}, None),
    ("positive\nbecause", False, {"one_line": True}, NOT_ONE_LINE),
    ("  positive\n", False, {"one_line": True}, None),  # surrounding whitespace is not a second line
    ("one two three", False, {"max_words": 2}, TOO_MANY_WORDS),
    ("one two", False, {"max_words": 2}, None),
    ('"Positive."', False, {"labels": ["positive", "negative"]}, None),  # normalized: case, quotes, final period
    ("The review is positive.", False, {"labels": ["positive", "negative"]}, NOT_A_LABEL),
    ("x\ny", True, {"one_line": True}, TRUNCATED),  # the first failing check, in declaration order
])
def test_checks(text: str, truncated: bool, checks: dict, reason: str | None) -> None:
    assert check_answer(text, truncated, SelectChecks(**checks)) == reason


def test_gold_rule_takes_the_first_matching_candidate() -> None:
    texts = ["Lyon is the capital.", "The capital of France is Paris.", "Paris.", "Marseille."]
    for rule in ("gold", "auto"):
        choice = choose(texts, "Paris", rule)
        assert (choice.index, choice.rule, choice.matches) == (1, GOLD, (False, True, True, False))
    assert choice.agreement == pytest.approx(sum(rouge_l_f1(texts[1], t) for i, t in enumerate(texts) if i != 1) / 3)


def test_no_gold_match_falls_back_to_consensus_and_says_so() -> None:
    choice = choose(["It is 41.", "forty", "It is 43 or so.", "It is 41."], "42", "gold")
    assert (choice.index, choice.rule, choice.matches) == (0, NO_GOLD_MATCH, (False, False, False, False))


def test_consensus_is_the_medoid_and_ignores_gold() -> None:
    texts = ["The cat sat on the mat.", "A cat sat on a mat.", "Dogs run fast.", "The cat sat on a mat."]
    agree = agreements(texts)
    # By hand (LCS of 6-word texts): 3 shares 5 words with 0 and with 1, 0 and 1 share 4, 2 shares nothing.
    assert agree == pytest.approx([(400 / 6 + 500 / 6) / 3, (400 / 6 + 500 / 6) / 3, 0.0, (500 / 6 + 500 / 6) / 3])
    assert choose(texts, None, "auto") == choose(texts, None, "consensus")
    choice = choose(texts, "Dogs run fast.", "consensus")  # gold is never read under consensus
    assert (choice.index, choice.rule, choice.matches, choice.agreement) == (3, CONSENSUS, None, agree[3])
    assert choose(texts, None, "gold").rule == NO_GOLD


def test_consensus_ties_go_to_the_lowest_sample_and_a_lone_candidate_has_no_agreement() -> None:
    assert choose(["alpha beta", "gamma delta"], None, "consensus").index == 0
    assert choose(["gamma", "alpha", "alpha", "gamma"], None, "consensus").index == 0
    lone = choose(["Paris."], None, "auto")
    assert (lone.index, lone.agreement) == (0, None)
    with pytest.raises(ValueError):
        choose([], None, "auto")


def test_row_gold() -> None:
    assert row_gold({"gold": 42}, "gold") == "42"
    assert row_gold({"gold": " "}, "gold") is None and row_gold({"gold": None}, "gold") is None and row_gold({}, "gold") is None
