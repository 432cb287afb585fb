"""Pure parts of Montessori-Instruct: candidates and their records, filters, utilities from signals, preference pairs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from synthkd.records import Messages, Record, Stats


class CandidateRow(Record):
    """A candidate instruction with the responder's answer and its measured signal."""

    id: str
    prompt_id: str
    instruction: str
    messages: Messages
    signal: float | None = None  # None: not measured (beyond probe_size, or its judge call failed)
    utility: float


class TeacherPair(Record):
    """A teacher DPO pair: for one generation prompt, a helpful output chosen over a harmful one."""

    id: str
    prompt_id: str
    prompt: Messages
    chosen: Messages
    rejected: Messages
    utility_gap: float


@dataclass
class Candidate:
    """One instruction the teacher wrote, with the responder's answer; `signal` and `utility` are set once measured
    (utility > 0 helps the student, < 0 harms it, 0 unmeasured)."""

    id: str
    prompt_id: str
    instruction: str
    raw: str | None  # the teacher's own output (what DPO trains it toward or away from)
    messages: Messages = field(default_factory=list)
    signal: float | None = None
    utility: float = 0.0

    def row(self) -> CandidateRow:
        """Its row of the iteration's candidates dataset."""
        return CandidateRow(id=self.id, prompt_id=self.prompt_id, instruction=self.instruction, messages=self.messages,
                            signal=self.signal, utility=self.utility)


@dataclass
class PromptGroup:
    """The candidates one generation prompt produced."""

    prompt_id: str
    prompt: Messages
    candidates: list[Candidate]


def filter_reason(text: str | None, min_words: int, max_words: int, banned: Sequence[str]) -> str | None:
    """Why a candidate instruction is dropped (None: keep). ROUGE-L is checked separately."""
    if not text or not text.strip():
        return "empty"
    words = text.split()
    if len(words) < min_words:
        return "too_short"
    if len(words) > max_words:
        return "too_long"
    lowered = text.lower()
    for word in banned:
        if re.search(rf"\b{re.escape(word.lower())}\b", lowered):
            return "banned_word"
    return None


def utility_from_influence(influence: float) -> float:
    """Influence = reference loss after - before: negative helps, so utility is its negation."""
    return -influence


def utility_from_judge(score: float, midpoint: float = 5.5) -> float:
    """A 1-10 judge score above the scale's midpoint counts as helpful."""
    return score - midpoint


def utility_from_icl(accuracy: float, baseline: float) -> float:
    """ARTE: in-context accuracy with the candidate as demonstration, against no demonstration."""
    return accuracy - baseline


def build_pairs(groups: Sequence[PromptGroup], max_per_prompt: int) -> list[TeacherPair]:
    """Preference pairs grouped by generation prompt, between the teacher's own outputs (`raw`) for that prompt.

    Chosen: utility > 0 (most helpful first); rejected: utility < 0 (most harmful first); every chosen x rejected
    combination in that order, capped per prompt. Prompts without candidates on one side give no pairs.
    """
    pairs = []
    for g in groups:
        chosen = sorted((c for c in g.candidates if c.utility > 0), key=lambda c: (-c.utility, c.id))
        rejected = sorted((c for c in g.candidates if c.utility < 0), key=lambda c: (c.utility, c.id))
        for c, r in [(c, r) for c in chosen for r in rejected][:max_per_prompt]:
            pairs.append(TeacherPair(id=f"{g.prompt_id}:{c.id}>{r.id}", prompt_id=g.prompt_id, prompt=g.prompt,
                                     chosen=[{"role": "assistant", "content": c.raw or ""}],
                                     rejected=[{"role": "assistant", "content": r.raw or ""}], utility_gap=c.utility - r.utility))
    return pairs


class Distribution(Stats):
    """Summary of a list of values for run.json, with every value (the report's histogram)."""

    count: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    median: float | None = None
    negative: int | None = None
    positive: int | None = None
    values: list[float] = []


def distribution(values: Sequence[float]) -> Distribution:
    """The summary of `values` (kept in their order)."""
    if not values:
        return Distribution(count=0, values=[])
    ordered = sorted(values)
    n = len(ordered)
    return Distribution(count=n, min=ordered[0], max=ordered[-1], mean=sum(ordered) / n, median=ordered[n // 2],
                        negative=sum(1 for v in ordered if v < 0), positive=sum(1 for v in ordered if v > 0), values=list(values))
