"""Final-answer normalisation, extraction, matching and voting; the arithmetic word-problem data."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from synthkd.answers import answers_match, extract_final_answer, majority, normalize_answer
from tests.conftest import REPO

RATIONALE = REPO / "data" / "rationale"

# ----------------------------------------------------------------------------------------------
# normalize_answer
# ----------------------------------------------------------------------------------------------

NORMALIZE_CASES = [
    # plain numbers, decimals, signs
    ("42", "42"),
    ("  42  ", "42"),
    ("3.50", "3.5"),
    ("4.0", "4"),
    ("0.500", "0.5"),
    (".5", "0.5"),
    ("10.", "10"),
    ("-0", "0"),
    ("-0.00", "0"),
    ("-7", "-7"),
    ("+7", "7"),
    ("\u22123", "-3"),  # unicode minus sign
    ("1e3", "1000"),
    ("2.5E2", "250"),
    # thousands separators
    ("1,234", "1234"),
    ("1,234,567.890", "1234567.89"),
    ("-1,000", "-1000"),
    ("12,5", "12,5"),  # not a thousands separator: left as text
    # currency
    ("$12", "12"),
    ("$1,234.50", "1234.5"),
    ("\u20ac5", "5"),
    ("\u00a33.50", "3.5"),
    ("7.25\u20ac", "7.25"),
    ("-$5", "-5"),
    ("$-5", "-5"),
    ("$42$", "42"),  # LaTeX inline math
    # units and percentages
    ("12 apples", "12"),
    ("7 km", "7"),
    ("7km", "7"),
    ("100 km/h", "100"),
    ("60 miles per hour", "60"),
    ("45%", "45"),
    ("45 %", "45"),
    ("12.5 percent", "12.5"),
    ("$4.50 each", "4.5"),
    ("2x", "2x"),  # a variable, not a unit glued to a number
    ("3 and 4", "3 and 4"),
    # fractions and mixed numbers
    ("3/4", "0.75"),
    ("-3/4", "-0.75"),
    ("1 1/2", "1.5"),
    ("-2 1/4", "-2.25"),
    ("3/4 cup", "0.75"),
    ("1/3", "0.333333"),
    ("2/3", "0.666667"),
    ("1/0", "1/0"),
    ("\\frac{3}{4}", "0.75"),
    # at most 6 decimal places, round half even
    ("0.1234564", "0.123456"),
    ("0.0000005", "0"),
    ("0.0000015", "0.000002"),
    ("2.0000004", "2"),
    # multiple-choice letters
    ("(B)", "b"),
    ("B)", "b"),
    ("b.", "b"),
    ("B", "b"),
    ("[C]", "c"),
    ("option B", "b"),
    ("Option (D)", "d"),
    ("choice a", "a"),
    ("answer: (b)", "b"),
    ("The answer is (E).", "e"),
    ("(B) 14", "(b) 14"),  # a letter with more text is not a bare letter form
    # prefixes, wrappers, case and whitespace
    ("The answer is 42.", "42"),
    ("the answer is: 1,000", "1000"),
    ("Final answer: $7.50", "7.5"),
    ("FINAL ANSWER: 3 hours", "3"),
    ("So the answer is 12 apples.", "12"),
    ("Answer = 9", "9"),
    ("\\boxed{42}", "42"),
    ("**42**", "42"),
    ("(1)(2)", "(1)(2)"),
    ('"Paris"', "paris"),
    ("\u201cParis.\u201d", "paris"),
    ("Paris", "paris"),
    ("  New   York\tCity ", "new york city"),
    ("The answer is Mount Everest.", "mount everest"),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZE_CASES)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize("raw", ["1e20", "123456789012345678901234567890", "1/7", "-1e-9", "0.1"])
def test_numbers_are_rendered_without_exponents(raw: str) -> None:
    out = normalize_answer(raw)
    assert "e" not in out and (out == "0" or not out.startswith("-0"))
    assert len(out.partition(".")[2]) <= 6


def test_normalize_is_idempotent() -> None:
    for raw, _ in NORMALIZE_CASES:
        once = normalize_answer(raw)
        assert normalize_answer(once) == once, raw


# ----------------------------------------------------------------------------------------------
# answers_match
# ----------------------------------------------------------------------------------------------

MATCH_CASES = [
    ("12", "12.0", True),
    ("12", "120", False),
    ("(C)", "c", True),
    ("c", "d", False),
    ("$1,234.50", "1234.5", True),
    ("12 apples", "12", True),
    ("0.75", "3/4", True),
    ("1 1/2", "1.5", True),
    ("0.3333333", "1/3", True),
    ("0.333", "1/3", False),
    ("45%", "45", True),
    ("-5", "5", False),
    ("-0", "0", True),
    ("The answer is 7.", "7", True),
    ("Paris", "paris", True),
    ("Paris", "London", False),
    ("2.0000009", "2", True),  # rounds to 2.000001: within 1e-6
    ("2.000002", "2", False),
    (None, "12", False),
    ("", "", False),
    ("", "0", False),
]


@pytest.mark.parametrize(("predicted", "gold", "expected"), MATCH_CASES)
def test_answers_match(predicted: str | None, gold: str, expected: bool) -> None:
    assert answers_match(predicted, gold) is expected


# ----------------------------------------------------------------------------------------------
# extract_final_answer
# ----------------------------------------------------------------------------------------------

EXTRACT_CASES = [
    # "the answer is" wins over a later intermediate number (the last number here is 3, not the answer)
    (
        "Each pack has 4 pens and she buys 3 packs, so 3 * 4 = 12 pens. The answer is 12. "
        "To double-check: 12 / 4 = 3 packs.",
        "12",
    ),
    # last occurrence: a corrected answer replaces the first one, even on the same line
    ("The answer is 40. Wait, I forgot the last box: 40 + 2 = 42. So the answer is 42.", "42"),
    ("First guess.\nThe answer is 18\nRechecking the sum...\nFinal answer: 21\n6 + 7 + 8 = 21", "21"),
    # "Final answer:" with markdown and currency
    ("Total cost: 3 x $2.50 = $7.50.\n**Final Answer:** $7.50", "$7.50"),
    # the span stops at the sentence end, not at the decimal point
    ("So the trip takes 3.5 hours. The answer is 3.5 hours. That is 210 minutes.", "3.5 hours"),
    ("The answer is 1,234, which is larger than 999.", "1,234"),
    # the answer on the next line
    ("Let's add them up.\nAnswer:\n\n56", "56"),
    # multiple choice
    ("Option A gives 10 and option B gives 12, so B is larger. The answer is (B).", "(B)"),
    ("Therefore, the answer is C, since 14 > 12.", "C"),
    # a boxed answer inside the phrase, and one on its own
    ("Thus 6 * 7 = 42. The final answer is $\\boxed{42}$. I hope it is correct.", "42"),
    ("We simplify to get \\boxed{\\frac{3}{4}}, i.e. 0.75 of the pie, after 2 steps.", "\\frac{3}{4}"),
    # GSM-style "####", preferred over the last number
    ("The crate holds 9 rows of 8 jars: 9 * 8 = 72 jars.\n#### 72\nThat used 2 crates' worth of labels.", "72"),
    # "the answer is correct" is a remark, not an answer: fall back to the last number
    ("6 * 7 = 42. Let me verify the answer is correct: 42 / 7 = 6 and 6 * 7 = 42.", "42"),
    ("Let us see what the answer is. First 3 + 4 = 7. So we get 7.", "7"),
    # last number: sign, separators, currency, fractions; hyphens are not minus signs
    ("The temperature drops from 17 to -3 degrees.", "-3"),
    ("The loss is 20 - 23 = -3 dollars.", "-3"),
    ("Revenue was $1,250,000 last year.", "$1,250,000"),
    ("She ate 3/8 of the cake.", "3/8"),
    ("The meeting is on 2024-05-17 in room 12B at 10-5.", "5"),
    ("Pi is about 3.14159.", "3.14159"),
    ("I cannot determine this without more information.", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACT_CASES)
def test_extract_final_answer(text: str, expected: str | None) -> None:
    assert extract_final_answer(text) == expected


def test_extract_then_match_realistic_rationale() -> None:
    rationale = (
        "Maya buys 4 notebooks at $2.75 each: 4 × 2.75 = 11 dollars.\n"
        "She also buys a pen for $1.50, so she spends 11 + 1.50 = 12.50 dollars.\n"
        "She pays with $20, so her change is 20 - 12.50 = 7.50.\n"
        "The answer is $7.50.\n"
        "(Check: 12.50 + 7.50 = 20.)"
    )
    assert extract_final_answer(rationale) == "$7.50"
    assert answers_match(extract_final_answer(rationale), "7.5")
    assert not answers_match(extract_final_answer(rationale), "20")


# ----------------------------------------------------------------------------------------------
# majority
# ----------------------------------------------------------------------------------------------


def test_majority_counts_normalised_answers() -> None:
    assert majority(["12", "$12.00", "13", "12 apples", "13"]) == ("12", 3)
    assert majority(["(B)", "b", "C", "option b"]) == ("b", 3)


def test_majority_ties_go_to_first_occurrence() -> None:
    assert majority(["7", "8", "8", "7"]) == ("7", 2)
    assert majority(["8", "7", "7", "8"]) == ("8", 2)
    assert majority(["c", "(D)", "d", "C."]) == ("c", 2)
    assert majority(["x", "y", "z"]) == ("x", 1)


def test_majority_empty_and_missing() -> None:
    assert majority([]) == (None, 0)
    assert majority([None, "", "  "]) == (None, 0)
    assert majority([None, "5", None]) == ("5", 1)


# ----------------------------------------------------------------------------------------------
# data/rationale arithmetic problems
# ----------------------------------------------------------------------------------------------


def _load(name: str) -> list[dict[str, object]]:
    lines = (RATIONALE / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_arithmetic_data() -> None:
    train, test = _load("arithmetic_train.jsonl"), _load("arithmetic_test.jsonl")
    assert len(train) == 160 and len(test) == 40
    ids = [r["id"] for r in train + test]
    assert len(set(ids)) == len(ids)
    assert [r["id"] for r in train] == [f"arith-train-{i:04d}" for i in range(1, 161)]
    assert [r["id"] for r in test] == [f"arith-test-{i:04d}" for i in range(1, 41)]
    train_q, test_q = [r["question"] for r in train], [r["question"] for r in test]
    assert len(set(train_q)) == len(train_q) and len(set(test_q)) == len(test_q)
    assert not set(train_q) & set(test_q)
    kinds = {r["kind"] for r in train}
    assert len(kinds) == 10 and {r["kind"] for r in test} == kinds
    for r in train + test:
        assert list(r) == ["id", "question", "answer", "steps", "kind"], r["id"]
        answer, steps = r["answer"], r["steps"]
        assert isinstance(answer, str) and isinstance(steps, list)
        Decimal(answer)  # parses as a number
        assert normalize_answer(answer) == answer, r["id"]  # already canonical
        assert 2 <= len(steps) <= 4, r["id"]
        assert answers_match(extract_final_answer(" ".join(steps)), answer), r["id"]


def test_arithmetic_data_is_reproducible(tmp_path: Path) -> None:
    """Rerunning the generator (on a copy of it) reproduces both files byte for byte."""
    script = tmp_path / "make_arithmetic.py"
    script.write_text((RATIONALE / "make_arithmetic.py").read_text(encoding="utf-8"), encoding="utf-8")
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True, timeout=120)
    for name in ("arithmetic_train.jsonl", "arithmetic_test.jsonl"):
        assert (tmp_path / name).read_bytes() == (RATIONALE / name).read_bytes(), name
