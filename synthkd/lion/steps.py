"""Pure pieces of a Lion iteration: building calls, reading scores, choosing seeds, filtering."""

from __future__ import annotations

import math
import random
import re
import string
from typing import Iterable, Sequence, TypeVar

from pydantic import ConfigDict, computed_field, field_serializer

from synthkd.client.replies import Result
from synthkd.items import Item
from synthkd.judging import Judgement
from synthkd.records import Stats
from synthkd.rouge import RougeIndex, tokenize


T = TypeVar("T")


def is_hard(j: Judgement, tau: float) -> bool:
    """Lion's discrimination rule: hard when the teacher leads by at least tau."""
    return j.gap >= tau


def split_target(n: int, hard_fraction: float) -> tuple[int, int]:
    """(hard, easy) counts out of n at the configured ratio."""
    hard = int(round(n * hard_fraction))
    return hard, n - hard


def pick_seeds(pool: Sequence[T], count: int, rng: random.Random) -> list[T]:
    """`count` seed instructions drawn with replacement (one seed per generation call, as in the paper)."""
    if not pool:
        return []
    return [pool[rng.randrange(len(pool))] for _ in range(count)]


def calls_to_ask(missing: int, oversample: float) -> int:
    return math.ceil(missing * oversample) if missing > 0 else 0


class HeldoutFilter:
    """The held-out instructions a new instruction must not copy: the same after normalising case, punctuation and
    spacing, or ROUGE-L above the threshold against any of them (a near copy leaks the evaluation into training)."""

    def __init__(self, instructions: Iterable[str], threshold: float) -> None:
        texts = [t for t in instructions if t.strip()]
        self.exact = {normalized(t) for t in texts}
        self.index = RougeIndex(threshold, texts)

    def reason(self, text: str) -> str | None:
        """`heldout_copy`, `heldout_rouge_l`, or None when `text` is far enough from every held-out instruction."""
        if normalized(text) in self.exact:
            return "heldout_copy"
        return "heldout_rouge_l" if self.index.too_similar(text) else None


def normalized(text: str) -> str:
    """Lowercase alphanumeric tokens joined by one space: what an exact-copy check compares."""
    return " ".join(tokenize(text))


def reject_reason(result: Result, text: str | None, min_words: int, index: RougeIndex, *,
                  heldout: HeldoutFilter | None = None, max_words: int | None = None) -> str | None:
    """Why a generated instruction is dropped, or None to keep it: the paper's filters (failed call, empty, 3 words
    or fewer, a bad first character, control characters, ROUGE-L against the pools), then, where given, a word cap
    (`too_long`) and the held-out set."""
    if not result.ok:
        return result.error or "failed"
    if text is None or not text.strip():
        return "empty"
    text = text.strip()
    words = len(text.split())
    if words < min_words:
        return "too_short"
    if max_words is not None and words > max_words:
        return "too_long"
    if text[0] in string.punctuation or not text[0].isascii():
        return "bad_start"
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        return "control_chars"
    if heldout is not None and (leak := heldout.reason(text)) is not None:
        return leak
    if index.too_similar(text):
        return "rouge_l"
    return None


# A list item's marker before the item's first word: "3.", "3)", "(3)", "3:", "#3" (then a space, or a letter at once:
# "3.Name"; "2.5 kg" is no marker), or a bullet "-", "*", "+", "•", "–" and a space.
_MARKER = re.compile(r"^\s*(?:(?:\(?\d{1,4}[.):]\)?|#\d{1,4}[.:)]?)(?:\s+|(?=[A-Za-z]))|[-*+\u2022\u2013]\s+)")


def one_line(text: str) -> str:
    """`text` with its whitespace runs (newlines included) as single spaces: how a list shows an example."""
    return " ".join(text.split())


def list_item(text: str | None) -> tuple[str | None, bool]:
    """(the first line of a list continuation without its list marker, whether more text followed it).

    The call asks the server to stop at the newline; a server that ignores `stop` is cut here the same way."""
    if text is None:
        return None, False
    first, newline, rest = text.strip().partition("\n")
    return _MARKER.sub("", first, count=1).strip(), bool(newline and rest.strip())


def fewshot(seed: Item, pool: Sequence[Item], k: int, rng: random.Random) -> list[Item]:
    """`seed` and up to k-1 other items of `pool` of its family (any item of `pool` where the seed has no `family`),
    drawn without replacement, each text once, in a random order: the examples of one list-mode call."""
    family = seed.family
    texts = {one_line(seed.instruction)}
    others = []
    for row in pool:
        text = one_line(row.instruction)
        if text not in texts and (family is None or row.family == family):
            texts.add(text)
            others.append(row)
    chosen = [seed, *rng.sample(others, min(k - 1, len(others)))]
    rng.shuffle(chosen)
    return chosen


class GenerationYield(Stats):
    """What one iteration's generation calls gave: calls, usable instructions (every filter passed, kept or surplus)
    and rejections by reason; usable + sum(rejected) == calls. In run.json: {mode, calls, usable, rejected, yield}."""

    # `yield` is a keyword, so the share is an attribute under another name, written as "yield".
    model_config = ConfigDict(extra="ignore", serialize_by_alias=True)

    mode: str | None = None
    calls: int = 0
    usable: int = 0
    rejected: dict[str, int] = {}

    def count(self, reason: str | None) -> None:
        """One call's outcome: None for a usable instruction, else why it was rejected."""
        self.calls += 1
        if reason is None:
            self.usable += 1
        else:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1

    @computed_field(alias="yield")  # type: ignore[prop-decorator]
    @property
    def share(self) -> float | None:
        """usable / calls (None before any call)."""
        return self.usable / self.calls if self.calls else None

    @field_serializer("rejected")
    def _sorted(self, rejected: dict[str, int]) -> dict[str, int]:
        return dict(sorted(rejected.items()))


