"""LLM-as-judge building blocks shared by methods: pairwise judging in both orders, pointwise scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

from pydantic import BaseModel, ConfigDict

from synthkd.chat import user
from synthkd.client.accounting import Meter
from synthkd.client.calls import Call
from synthkd.client.replies import Result
from synthkd.config.endpoints import Sampling
from synthkd.prompts import Prompt

if TYPE_CHECKING:
    from synthkd.runtime import Runtime

Score = Literal[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # an enum, so even a weak model can only emit 1..10


class RefereeScores(BaseModel):
    """A pairwise judge's two scores, for the answers in the order shown."""

    model_config = ConfigDict(extra="forbid")
    score_assistant_1: Score
    score_assistant_2: Score


class PointScore(BaseModel):
    """A pointwise judge's score of one answer."""

    model_config = ConfigDict(extra="forbid")
    score: Score


def pairwise_calls(prompt: Prompt, instruction: str, a: str, b: str, sampling: Sampling) -> tuple[Call, Call]:
    """The same judgement asked twice, `a` first and `b` first (position bias cancels)."""
    first = prompt.render(instruction=instruction, answer_1=a, answer_2=b)
    swapped = prompt.render(instruction=instruction, answer_1=b, answer_2=a)
    return (
        Call(messages=user(first), sampling=sampling, schema=RefereeScores),
        Call(messages=user(swapped), sampling=sampling, schema=RefereeScores),
    )


def pointwise_call(prompt: Prompt, instruction: str, answer: str, sampling: Sampling) -> Call:
    return Call(messages=user(prompt.render(instruction=instruction, answer=answer)), sampling=sampling, schema=PointScore)


@dataclass(frozen=True)
class Judgement:
    """Averaged scores of two answers a and b judged in both orders (a is the one passed first to `judge`)."""

    a: float
    b: float
    raw: tuple[int, int, int, int]  # (a, b) with a shown first, then (a, b) with b shown first

    @property
    def gap(self) -> float:
        """a's score minus b's: positive when a is preferred."""
        return self.a - self.b


def judge(a_first: RefereeScores, b_first: RefereeScores) -> Judgement:
    """Average the two orders: a = (s1 of call 1 + s2 of call 2) / 2, b likewise."""
    a1, b1 = a_first.score_assistant_1, a_first.score_assistant_2
    b2, a2 = b_first.score_assistant_1, b_first.score_assistant_2
    return Judgement(a=(a1 + a2) / 2, b=(b1 + b2) / 2, raw=(a1, b1, a2, b2))


async def both_orders(rt: "Runtime", endpoint: str, label: str, prompt: Prompt, items: Sequence[tuple[str, str, str]],
                      sampling: Sampling, meter: Meter) -> list[Judgement | Result]:
    """Judge each (instruction, a, b) item in both orders on `endpoint`: per item, in order, its `Judgement` (a is the
    answer passed first), or the failed reply (the first of its two that failed) for the caller's failed row."""
    calls = [call for instruction, a, b in items for call in pairwise_calls(prompt, instruction, a, b, sampling)]
    replies = await rt.call_all(endpoint, label, calls, meter)
    out: list[Judgement | Result] = []
    for a_first, b_first in zip(replies[0::2], replies[1::2]):
        if a_first.ok and b_first.ok:
            out.append(judge(a_first.parsed, b_first.parsed))
        else:
            out.append(a_first if not a_first.ok else b_first)
    return out
