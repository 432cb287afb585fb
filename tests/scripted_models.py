"""Models with known behaviour, for the test server's reply hook (`--reply-hook tests.scripted_models:reply`).

The Montessori signal tests need a judge and a student whose verdicts the test can predict:

* every candidate instruction has a *kind*, a fixed function of its text: helpful, harmful or neutral;
* the judge (model `judge`) scores an instruction `judge_score(instruction)`, 1-10;
* the student (model `student`) answers the arithmetic questions of `data/rationale`: with no
  demonstration it is right on the questions where `baseline_correct(question)` holds; with a
  helpful demonstration it is always right, with a harmful one always wrong, and a neutral one
  changes nothing.

The server and the test both import this module, so the test computes what run.json, the
candidates and the pairs must say without asking the server.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ARITHMETIC = REPO / "data" / "rationale" / "arithmetic_test.jsonl"
KINDS = ("helpful", "harmful", "neutral")


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.strip().encode()).digest()[:4], "big")


def kind(instruction: str) -> str:
    """The scripted kind of a candidate instruction."""
    return KINDS[_h(instruction) % 3]


def judge_score(instruction: str) -> int:
    """The scripted judge's 1-10 score of an instruction (its answer is not looked at)."""
    return 1 + (_h("judge:" + instruction) % 10)


def baseline_correct(question: str) -> bool:
    """Whether the student answers this question right with no demonstration."""
    return _h("base:" + question) % 2 == 0


@cache
def gold_answers() -> dict[str, str]:
    rows = [json.loads(line) for line in ARITHMETIC.read_text().splitlines() if line.strip()]
    return {r["question"]: r["answer"] for r in rows}


def student_correct(question: str, demonstration: str | None) -> bool:
    """Whether the scripted student answers `question` right with this demonstration instruction."""
    k = kind(demonstration) if demonstration is not None else "neutral"
    return baseline_correct(question) if k == "neutral" else k == "helpful"


def _judged_instruction(prompt: str) -> str | None:
    # prompts/dpo/score.jinja2 puts the instruction between these two markers.
    start, end = prompt.find("[Instruction]\n"), prompt.find("\n\n[Reply]")
    return prompt[start + len("[Instruction]\n"): end] if 0 <= start < end else None


def reply(body: dict[str, Any], index: int) -> str | None:
    """The reply hook: scripted content for `judge` and `student`, None (generated text) otherwise."""
    messages = body.get("messages") or []
    last = str(messages[-1].get("content", "")) if messages else ""
    if body.get("model") == "judge":
        instruction = _judged_instruction(last)
        return None if instruction is None else json.dumps({"score": judge_score(instruction)})
    if body.get("model") == "student":
        gold = gold_answers().get(last)
        if gold is None:
            return None
        demonstration = str(messages[0]["content"]) if len(messages) > 1 else None
        return f"The answer is {gold}." if student_correct(last, demonstration) else "I am not sure."
    return None
