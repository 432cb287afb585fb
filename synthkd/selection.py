"""Best-of-n selection: which of a row's n teacher answers to keep, decided by code.

Pure functions of the candidates' texts, the row's gold answer and the declared checks:

* :func:`check_answer` applies the format checks (non-empty, not truncated, one line, at most K words,
  one of a set of labels); only candidates passing them are chosen from.
* :func:`choose` keeps one: the first gold-matching candidate (sequence-level KD's Seq-Inter, Kim & Rush
  2016, keeps the beam closest to the reference), else the consensus candidate, the one with the highest
  mean ROUGE-L to the others (minimum Bayes risk; ties to the lowest index).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from synthkd.answers import normalize_answer
from synthkd.config.stages import SelectChecks
from synthkd.scoring.metrics import gold_match, rouge_l_f1

Rule = Literal["auto", "gold", "consensus"]

# Why a candidate fails a check (the `reason` of a candidate row).
NOT_NON_EMPTY, TRUNCATED, NOT_ONE_LINE, TOO_MANY_WORDS, NOT_A_LABEL = "empty", "truncated", "not_one_line", "too_many_words", "not_a_label"
CHECK_REASONS = frozenset({NOT_NON_EMPTY, TRUNCATED, NOT_ONE_LINE, TOO_MANY_WORDS, NOT_A_LABEL})
# The rule labels a `selection` column carries.
GOLD, CONSENSUS, NO_GOLD_MATCH, NO_GOLD = "gold", "consensus", "consensus (no gold match)", "consensus (no gold)"

_WORD_CHAR = re.compile(r"\w")


def check_answer(text: str, truncated: bool, checks: SelectChecks) -> str | None:
    """The reason code of the first check `text` fails (in the order the checks are declared), or None."""
    if checks.non_empty and not _WORD_CHAR.search(text):
        return NOT_NON_EMPTY
    if checks.not_truncated and truncated:
        return TRUNCATED
    if checks.one_line and "\n" in text.strip():
        return NOT_ONE_LINE
    if checks.max_words is not None and len(text.split()) > checks.max_words:
        return TOO_MANY_WORDS
    if checks.labels is not None and normalize_answer(text) not in {normalize_answer(label) for label in checks.labels}:
        return NOT_A_LABEL
    return None


def row_gold(row: dict[str, Any], column: str) -> str | None:
    """The row's gold answer as text, or None where the column is missing, null or blank."""
    value = row.get(column)
    if value is None or not str(value).strip():
        return None
    return str(value)


def agreements(texts: Sequence[str]) -> list[float | None]:
    """Each text's mean ROUGE-L F1 (x 100) to the other texts; None for a lone text (no others to agree with)."""
    n = len(texts)
    if n < 2:
        return [None] * n
    sums = [0.0] * n
    for i in range(n):
        for j in range(i + 1, n):  # F1 is symmetric: each pair is scored once
            score = rouge_l_f1(texts[i], texts[j])
            sums[i] += score
            sums[j] += score
    return [s / (n - 1) for s in sums]


def consensus_index(agreement: Sequence[float | None]) -> int:
    """The index of the highest agreement, ties to the lowest index (the medoid under ROUGE-L)."""
    best = 0
    for i, value in enumerate(agreement):
        if (value or 0.0) > (agreement[best] or 0.0):
            best = i
    return best


@dataclass(frozen=True)
class Choice:
    """The kept candidate (an index into the texts chosen from), the rule that kept it, and its agreement."""

    index: int
    rule: str  # GOLD, CONSENSUS, NO_GOLD_MATCH or NO_GOLD
    agreement: float | None  # mean ROUGE-L of the kept text to the others; None when it was alone
    matches: tuple[bool, ...] | None  # each text's gold match; None when gold was not read


def choose(texts: Sequence[str], gold: str | None, rule: Rule) -> Choice:
    """Keep one of `texts` (the answers that passed the checks, in sample order; at least one).

    gold and auto: the first text matching `gold` (`gold_match`); with no match, or no gold, consensus.
    consensus: the highest mean ROUGE-L to the others, gold never read.
    """
    if not texts:
        raise ValueError("choose needs at least one candidate")
    agree = agreements(texts)
    matches = tuple(gold_match(t, gold) for t in texts) if rule != "consensus" and gold is not None else None
    if matches is not None and any(matches):
        index = matches.index(True)
        return Choice(index, GOLD, agree[index], matches)
    label = NO_GOLD_MATCH if matches is not None else NO_GOLD if rule == "gold" else CONSENSUS
    index = consensus_index(agree)
    return Choice(index, label, agree[index], matches)
