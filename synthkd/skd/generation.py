"""Pure pieces of symbolic knowledge distillation's generation (West et al., NAACL 2022):
few-shot head prompts, and the cleaning of heads and tails the paper describes."""

from __future__ import annotations

import math
import random
import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

# The ATOMIC-style default relation set, each with a natural-language phrasing used in prompts and
# in the critic's hypothesis. A pipeline can declare any other schema in YAML instead.
DEFAULT_RELATIONS: dict[str, str] = {
    "xAttr": "PersonX is seen as",
    "xEffect": "As a result, PersonX",
    "xIntent": "Because PersonX wanted",
    "xNeed": "Before that, PersonX needed",
    "xReact": "As a result, PersonX feels",
    "xWant": "As a result, PersonX wants",
    "HinderedBy": "This would not happen if",
}


@dataclass(frozen=True)
class Completion:
    """One sampled completion: its text, whether it ended cleanly, and its token log-probabilities."""

    text: str
    finished: bool
    logprobs: Sequence[float] | None = None

    @property
    def logprob(self) -> float | None:
        return math.fsum(self.logprobs) if self.logprobs else None


def numbered_seeds(seeds: Sequence[str], k: int, rng: random.Random) -> list[str]:
    """k distinct seeds drawn at random (all of them when there are fewer)."""
    return rng.sample(list(seeds), min(k, len(seeds)))


def has_odd_characters(text: str) -> bool:
    """Control characters, unassigned or private-use code points, replacement characters."""
    return any(unicodedata.category(c) in ("Cc", "Cn", "Co", "Cs") or c == "\ufffd" for c in text if c not in "\t")


def first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def clean_heads(completions: Sequence[Completion], pattern: str, drop_fraction: float) -> tuple[list[str], dict[str, int | str]]:
    """Heads kept from sampled completions, and the counts of what each filter dropped.

    Keep completions that ended cleanly and match `pattern`; deduplicate (case-insensitively);
    drop odd characters; then drop the lowest `drop_fraction` by sequence log-probability when
    every kept completion has log-probabilities (else skip that filter and say so).
    """
    regex = re.compile(pattern)
    stats: dict[str, int | str] = {"sampled": len(completions), "unfinished": 0, "no_match": 0, "odd_characters": 0, "duplicate": 0, "low_logprob": 0}
    seen: set[str] = set()
    kept: list[Completion] = []
    for c in completions:
        text = first_line(c.text)
        if not c.finished:
            stats["unfinished"] += 1  # type: ignore[operator]
        elif not regex.search(text):
            stats["no_match"] += 1  # type: ignore[operator]
        elif has_odd_characters(text):
            stats["odd_characters"] += 1  # type: ignore[operator]
        elif text.lower() in seen:
            stats["duplicate"] += 1  # type: ignore[operator]
        else:
            seen.add(text.lower())
            kept.append(Completion(text, True, c.logprobs))
    if drop_fraction > 0 and kept:
        if all(c.logprob is not None for c in kept):
            n_drop = int(len(kept) * drop_fraction)
            ranked = sorted(range(len(kept)), key=lambda i: (kept[i].logprob, i))  # type: ignore[arg-type, return-value]
            dropped = set(ranked[:n_drop])
            kept = [c for i, c in enumerate(kept) if i not in dropped]
            stats["low_logprob"] = n_drop
        else:
            stats["low_logprob"] = "skipped: the endpoint returned no logprobs"
    stats["kept"] = len(kept)
    return [c.text for c in kept], stats


def clean_tails(texts: Sequence[str], min_chars: int = 3) -> list[str]:
    """Tails for one (head, relation): first line, stripped, deduplicated, longer than 2 characters."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in texts:
        tail = first_line(raw).rstrip(".").strip()
        key = tail.lower()
        if len(tail) < min_chars or key in seen or has_odd_characters(tail):
            continue
        seen.add(key)
        out.append(tail)
    return out
