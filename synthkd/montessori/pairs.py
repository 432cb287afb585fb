"""Pure parts of Montessori-Instruct: candidate filters, utilities from signals, preference pairs."""

from __future__ import annotations

import re
from typing import Any, Sequence


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


def build_pairs(groups: Sequence[dict[str, Any]], max_per_prompt: int) -> list[dict[str, Any]]:
    """Preference pairs grouped by generation prompt.

    Each group: {"prompt_id", "prompt": messages, "candidates": [{"id", "text", "utility"}]}, where
    `text` is the teacher's own output for that prompt. Chosen: utility > 0 (most helpful first);
    rejected: utility < 0 (most harmful first); every chosen x rejected combination in that order,
    capped per prompt. Prompts without candidates on one side give no pairs.
    """
    pairs = []
    for g in groups:
        chosen = sorted((c for c in g["candidates"] if c["utility"] > 0), key=lambda c: (-c["utility"], c["id"]))
        rejected = sorted((c for c in g["candidates"] if c["utility"] < 0), key=lambda c: (c["utility"], c["id"]))
        combos = [(c, r) for c in chosen for r in rejected][:max_per_prompt]
        for c, r in combos:
            pairs.append({
                "id": f"{g['prompt_id']}:{c['id']}>{r['id']}", "prompt_id": g["prompt_id"],
                "prompt": g["prompt"],
                "chosen": [{"role": "assistant", "content": c["text"]}],
                "rejected": [{"role": "assistant", "content": r["text"]}],
                "utility_gap": c["utility"] - r["utility"],
            })
    return pairs


def distribution(values: Sequence[float]) -> dict[str, Any]:
    """Summary of a list of values for run.json (and the report's histogram)."""
    if not values:
        return {"count": 0, "values": []}
    ordered = sorted(values)
    n = len(ordered)
    return {
        "count": n, "min": ordered[0], "max": ordered[-1], "mean": sum(ordered) / n, "median": ordered[n // 2],
        "negative": sum(1 for v in ordered if v < 0), "positive": sum(1 for v in ordered if v > 0), "values": list(values),
    }
