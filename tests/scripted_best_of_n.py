"""A teacher whose candidates are known, for best-of-n tests (`--reply-hook tests.scripted_best_of_n:reply`).

For each scripted question, choice i of a request (with `n`, choice i is sample i) is REPLIES[question][i]:
a text (finish reason `stop`) or a (text, finish reason) pair. Other prompts get the generated reply.
"""

from __future__ import annotations

from typing import Any

CAPITAL = "What is the capital of France?"
ANSWER = "What is six times seven?"
OPEN = "Describe a cat on a mat."
TRUNCATED = "Label the review: I loved it."
MULTI_LINE = "Label the review: great fun."
NO_LABEL = "Label the review: hmm."

REPLIES: dict[str, list[str | tuple[str, str]]] = {
    # gold Paris: samples 1 and 2 match, 1 is first; 0 and 3 are the rejected side of the pairs.
    CAPITAL: ["Lyon is the capital.", "The capital of France is Paris.", "Paris.", "Marseille."],
    # gold 42: none matches; the consensus is 0 (its twin is 3).
    ANSWER: ["It is 41.", "forty", "It is 43 or so.", "It is 41."],
    # no gold: 3 is the medoid of the four.
    OPEN: ["The cat sat on the mat.", "A cat sat on a mat.", "Dogs run fast.", "The cat sat on a mat."],
    # labels positive/negative/neutral, one line, not truncated:
    TRUNCATED: [("positive", "length"), "Negative.", "positive", "positive"],  # gold positive: 2 (0 was cut)
    MULTI_LINE: ["positive\nbecause it is fun", "The review is positive.", "negative", "negative"],  # 2 (0, 1 fail)
    NO_LABEL: ["", "I think so\nyes", ("positive", "length"), "maybe"],  # none passes
}


def reply(body: dict[str, Any], index: int) -> str | tuple[str, str] | None:
    """The reply hook: the scripted candidate `index` of the question in the last message, or None."""
    messages = body.get("messages") or []
    replies = REPLIES.get(str(messages[-1].get("content", "")).strip()) if messages else None
    return None if replies is None else replies[index]
