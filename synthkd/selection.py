"""Best-of-n selection: which of a row's n teacher answers to keep, decided by code.

Pure functions of the candidates' texts, the row's gold answer and the declared checks:

* :func:`check_answer` applies the format checks (non-empty, not truncated, one line, at most K words,
  one of a set of labels); only candidates passing them are chosen from.
* :func:`pick` applies both to one row's n replies (what a generate stage with `select` and Lion's
  `answer_select` do per row).
* :func:`choose` keeps one: the first gold-matching candidate (sequence-level KD's Seq-Inter, Kim & Rush
  2016, keeps the beam closest to the reference), else the consensus candidate, the one with the highest
  mean ROUGE-L to the others (minimum Bayes risk; ties to the lowest index).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence, TypedDict

from pydantic import Field

from synthkd.answers import normalize_answer
from synthkd.client.accounting import Meter
from synthkd.client.replies import Result, empty_detail
from synthkd.config.stages import SelectChecks
from synthkd.errors import ConfigError
from synthkd.records import FailedRow, PreferencePair, Record, Stats
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


def check_sampled(knob: str, n: int, temperature: float | None, stage: str, where: str, fix: str) -> None:
    """ConfigError when n > 1 candidates (`knob`) would be sampled at temperature 0: n copies of one reply, paid n times."""
    if n > 1 and temperature == 0:
        raise ConfigError(f"{knob} is {n} but stage {stage!r} samples at temperature 0, so its candidates "
                          "would all be the same reply", where=where, fix=fix)


def unusable(res: Result, meter: Meter) -> tuple[str, str | None] | None:
    """(reason, detail) when a reply gives no text to keep (the call failed, or the reply is blank), else None."""
    if not res.ok or res.text is None:
        return str(res.error), res.detail
    if (empty := empty_detail(res)) is not None:  # paid and cached, but nothing to train on
        meter.failures["empty_reply"] += 1
        return "empty_reply", empty
    return None


class CandidateRow(Record):
    """One candidate answer of best-of-n selection (dataset <stage>.candidates)."""

    id: str
    sample: int
    text: str | None  # None: the call gave no reply
    truncated: bool
    passed: bool  # passed the format checks (a rule chose among these)
    reason: str | None  # why it could not be chosen: a check (empty, truncated, ...) or the call's failure
    detail: str | None = None
    chosen: bool
    gold_match: bool | None  # None: gold not read (no gold, or rule consensus)


class SelectionRecord(TypedDict):
    """The `selection` column of a kept row: n samples, the kept one, the rule that kept it, how many passed the
    checks, and its agreement with the others (mean ROUGE-L; None where the rule does not measure it)."""

    n: int
    chosen: int
    rule: str
    passed_checks: int
    agreement: float | None


@dataclass
class Picked:
    """One row's candidates (in sample order), the kept one (None: none passed) and why."""

    candidates: list[CandidateRow]
    winner: CandidateRow | None
    choice: Choice | None

    @property
    def passed(self) -> list[CandidateRow]:
        return [c for c in self.candidates if c.passed]

    def selection(self, n: int) -> SelectionRecord:
        """The `selection` record of the kept answer: n, the kept sample, the rule, how many passed, its agreement."""
        assert self.winner is not None and self.choice is not None
        agreement = self.choice.agreement
        return SelectionRecord(n=n, chosen=self.winner.sample, rule=self.choice.rule, passed_checks=len(self.passed),
                               agreement=None if agreement is None else round(agreement, 4))


def pick(row_id: str, replies: Sequence[Result], gold: str | None, rule: Rule, checks: SelectChecks, meter: Meter) -> Picked:
    """Check one row's replies (samples 0..n-1) and keep one by `rule` among those that pass."""
    cands = []
    for k, res in enumerate(replies):
        bad = unusable(res, meter)
        reason = bad[0] if bad else check_answer(str(res.text), res.truncated, checks)
        cands.append(CandidateRow(id=row_id, sample=k, text=res.text, truncated=res.truncated, passed=reason is None,
                                  reason=reason, detail=bad[1] if bad else None, chosen=False, gold_match=None))
    passed = [c for c in cands if c.passed]
    if not passed:
        return Picked(cands, None, None)
    choice = choose([str(c.text) for c in passed], gold, rule)
    winner = passed[choice.index]
    winner.chosen = True
    for c, match in zip(passed, choice.matches or ()):
        c.gold_match = match
    return Picked(cands, winner, choice)


def no_candidate(row: Mapping[str, Any], cands: list[CandidateRow], meter: Meter) -> FailedRow:
    """The failed row of an input row none of whose candidates can be kept, with its candidates.

    Where no candidate got a reply and all failed the same way (a dead endpoint), that is the row's reason, as
    without `select` (so a run whose endpoint answers nothing stops); otherwise `no_candidate_passed_checks`.
    """
    reasons = Counter(str(c.reason) for c in cands)
    if len(reasons) == 1 and cands[0].reason not in CHECK_REASONS:
        reason, detail = cands[0].reason, cands[0].detail
    else:
        reason = "no_candidate_passed_checks"
        meter.failures[reason] += 1
        detail = f"{len(cands)} candidates: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common())
    return FailedRow.of(row, reason or "empty", detail=detail, raw=None, candidates=[c.model_dump(exclude={"id"}) for c in cands])


class SelectionSummary(Stats):
    """What best-of-n selection did in one run of a stage (run.json)."""

    rows: int = 0
    failed_rows: int = 0  # rows no candidate passed the checks of
    candidates: int = 0
    passed: int = 0
    by_rule: dict[str, int] = Field(default_factory=dict)
    rejected: dict[str, int] = Field(default_factory=dict)  # candidates by reason
    pairs: int = 0
    mean_agreement: float | None = None


@dataclass
class Selected:
    """What best-of-n selection made of a stage's replies: kept rows (each with its `selection` record), failed
    rows, every candidate, and teacher-side preference pairs."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: list[FailedRow] = field(default_factory=list)
    candidates: list[CandidateRow] = field(default_factory=list)
    pairs: list[PreferencePair] = field(default_factory=list)

    def summary(self) -> SelectionSummary:
        """The figures run.json keeps about it."""
        agreement = [r["selection"]["agreement"] for r in self.rows if r["selection"]["agreement"] is not None]
        return SelectionSummary(
            rows=len(self.rows), failed_rows=len(self.failed), candidates=len(self.candidates),
            passed=sum(c.passed for c in self.candidates), pairs=len(self.pairs),
            by_rule=dict(Counter(r["selection"]["rule"] for r in self.rows)),
            rejected=dict(Counter(c.reason for c in self.candidates if c.reason)),
            mean_agreement=round(sum(agreement) / len(agreement), 4) if agreement else None)
