"""Pure pair mining: from judged answers to DPO pairs (`PreferencePair` records), and the numbers reported about them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from synthkd.records import Messages, PreferencePair


def preference_pair(pid: str, instruction: str, chosen: str, rejected: str, margin: float, source: str,
                    prompt: Messages | None = None, iteration: int | None = None) -> PreferencePair:
    """A TRL conversational preference row (prompt/chosen/rejected) with its provenance.

    `prompt`: the messages the answers reply to (default: the instruction as the one user message).
    """
    return PreferencePair(
        id=pid, source=source, margin=margin, instruction=instruction,
        prompt=prompt if prompt is not None else [{"role": "user", "content": instruction}],
        chosen=[{"role": "assistant", "content": chosen}], rejected=[{"role": "assistant", "content": rejected}],
        iteration=iteration,
    )


class Scored(Protocol):
    """A teacher and a student answer to one instruction with the judge's score of each (both-order averages, as Lion's
    referee and DPO's judge produce them): Lion's `DiscriminationRow`, DPO's `ScoredAnswers`."""

    @property
    def id(self) -> str: ...
    @property
    def instruction(self) -> str: ...
    @property
    def teacher_answer(self) -> str: ...
    @property
    def student_answer(self) -> str: ...
    @property
    def teacher_score(self) -> float: ...
    @property
    def student_score(self) -> float: ...


@dataclass(frozen=True)
class ScoredAnswers:
    """The plain `Scored`: what a judge said of a teacher and a student answer."""

    id: str
    instruction: str
    teacher_answer: str
    student_answer: str
    teacher_score: float
    student_score: float


@dataclass
class SampleGroup:
    """One instruction's scored samples, as (answer, score) in sample order."""

    id: str
    instruction: str
    samples: list[tuple[str, float]] = field(default_factory=list)


def teacher_vs_student_pairs(rows: Sequence[Scored], margin: float) -> list[PreferencePair]:
    """Teacher answer chosen, student answer rejected, where the judge's gap (teacher - student) >= margin."""
    pairs = []
    for r in rows:
        gap = r.teacher_score - r.student_score
        if gap >= margin and r.teacher_answer != r.student_answer:
            pairs.append(preference_pair(f"{r.id}:tvs", r.instruction, r.teacher_answer, r.student_answer, gap, "teacher_vs_student"))
    return pairs


def ranked_pairs(groups: Sequence[SampleGroup], margin: float) -> list[PreferencePair]:
    """Best versus worst of each instruction's scored samples, where their scores differ by >= margin.

    Ties for best go to the earliest sample, ties for worst to the latest, so the choice is deterministic.
    """
    pairs = []
    for g in groups:
        samples = g.samples
        if len(samples) < 2:
            continue
        best = max(range(len(samples)), key=lambda i: (samples[i][1], -i))
        worst = min(range(len(samples)), key=lambda i: (samples[i][1], -i))
        gap = samples[best][1] - samples[worst][1]
        if gap >= margin and samples[best][0] != samples[worst][0]:
            pairs.append(preference_pair(f"{g.id}:rank", g.instruction, samples[best][0], samples[worst][0], gap, "ranked_student_samples"))
    return pairs


def margin_summary(margins: Sequence[float]) -> dict[str, float | int]:
    """Count, mean and quantiles of pair margins (what run.json reports)."""
    if not margins:
        return {"count": 0}
    ordered = sorted(margins)
    q = statistics.quantiles(ordered, n=4, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 3
    return {"count": len(ordered), "min": ordered[0], "p25": q[0], "median": q[1], "p75": q[2], "max": ordered[-1], "mean": statistics.fmean(ordered)}


def win_tie_loss(gaps: Sequence[float]) -> dict[str, float | int]:
    """Wins, ties and losses of a new model against a reference, from judge gaps (new - reference)."""
    wins = sum(1 for g in gaps if g > 0)
    ties = sum(1 for g in gaps if g == 0)
    losses = len(gaps) - wins - ties
    n = len(gaps)
    return {"n": n, "wins": wins, "ties": ties, "losses": losses, "win_rate": wins / n if n else 0.0, "win_or_tie_rate": (wins + ties) / n if n else 0.0}
