"""The chat vocabulary every stage shares: a user turn, an instruction/answer training example, and the call that asks
an endpoint to answer an instruction (teacher answers, student answers, held-out answers alike)."""

from __future__ import annotations

from synthkd.client.calls import Call
from synthkd.config.endpoints import Sampling
from synthkd.prompts import Prompt

__all__ = ["user", "sft_example", "answer_call"]


def user(text: str) -> list[dict[str, str]]:
    """A conversation of one user turn."""
    return [{"role": "user", "content": text}]


def sft_example(instruction: str, answer: str) -> list[dict[str, str]]:
    """A TRL `messages` example: user instruction, assistant answer."""
    return [{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}]


def answer_call(prompt: Prompt, instruction: str, sampling: Sampling, sample: int = 0) -> Call:
    """The call asking an endpoint to answer `instruction` (sample k of a best-of-n: its own cached request)."""
    return Call(messages=user(prompt.render(instruction=instruction)), sampling=sampling, sample=sample)
