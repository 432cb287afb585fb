"""Pure pieces of a Lion iteration: building calls, reading scores, choosing seeds, filtering."""

from __future__ import annotations

import math
import random
import string
from typing import Any, Sequence

from synthkd.client.calls import Call
from synthkd.client.replies import Result
from synthkd.config.endpoints import Sampling
from synthkd.judging import Judgement, judge, pairwise_calls  # noqa: F401  (judge: used as steps.judge)
from synthkd.prompts import Prompt
from synthkd.rouge import RougeIndex


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def answer_call(prompt: Prompt, instruction: str, sampling: Sampling) -> Call:
    return Call(messages=user(prompt.render(instruction=instruction)), sampling=sampling)


def referee_calls(prompt: Prompt, instruction: str, teacher: str, student: str, sampling: Sampling) -> tuple[Call, Call]:
    """Lion's referee: teacher and student answers judged in both orders."""
    return pairwise_calls(prompt, instruction, teacher, student, sampling)


def is_hard(j: Judgement, tau: float) -> bool:
    """Lion's discrimination rule: hard when the teacher leads by at least tau."""
    return j.gap >= tau


def split_target(n: int, hard_fraction: float) -> tuple[int, int]:
    """(hard, easy) counts out of n at the configured ratio."""
    hard = int(round(n * hard_fraction))
    return hard, n - hard


def pick_seeds(pool: Sequence[dict[str, Any]], count: int, rng: random.Random) -> list[dict[str, Any]]:
    """`count` seed instructions drawn with replacement (one seed per generation call, as in the paper)."""
    if not pool:
        return []
    return [pool[rng.randrange(len(pool))] for _ in range(count)]


def calls_to_ask(missing: int, oversample: float) -> int:
    return math.ceil(missing * oversample) if missing > 0 else 0


def reject_reason(result: Result, text: str | None, min_words: int, index: RougeIndex) -> str | None:
    """Why a generated instruction is dropped, or None to keep it (paper's filters)."""
    if not result.ok:
        return result.error or "failed"
    if text is None or not text.strip():
        return "empty"
    text = text.strip()
    if len(text.split()) < min_words:
        return "too_short"
    if text[0] in string.punctuation or not text[0].isascii():
        return "bad_start"
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        return "control_chars"
    if index.too_similar(text):
        return "rouge_l"
    return None


def sft_example(instruction: str, answer: str) -> list[dict[str, str]]:
    """A TRL `messages` example: user instruction, assistant answer."""
    return [{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}]
