"""The one shape an input row takes inside a stage.

A stage's input is whatever an earlier stage (or a `load` stage) wrote: rows with an id, the text to
answer, and, where the data has them, a gold answer and a family. `read_items` turns those rows into
`Item`s at the edge, once, so the loops inside read attributes instead of re-projecting dicts by hand
(and a missing id or question is found here, not three calls deep).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence


@dataclass(frozen=True, slots=True)
class Item:
    """One instruction a stage works on.

    `origin` says where it came from ("seed", "iter2-hard", ...); `gold` is the reference answer where the data
    has one (code critics and gold accuracy use it); `family` groups items of one task (list-mode generation
    draws its examples from it, gold scoring its closed label sets)."""

    id: str
    instruction: str
    gold: str | None = None
    family: str | None = None
    origin: str = ""

    def as_row(self) -> dict[str, str]:
        """The item as a dataset row would carry it: id and instruction, and origin, gold and family where set."""
        row = {"id": self.id, "instruction": self.instruction}
        row.update({k: v for k, v in (("origin", self.origin), ("gold", self.gold), ("family", self.family)) if v})
        return row


def _text(value: Any) -> str | None:
    """A cell as text; None where it is missing or blank (an empty gold is no gold)."""
    return None if value is None or (isinstance(value, str) and not value.strip()) else str(value)


def read_items(rows: Sequence[Mapping[str, Any]], question_column: str = "instruction", gold_column: str | None = "gold",
               origin: str | None = None) -> list[Item]:
    """Input rows -> items: the id (the row's position where it has none), the question column, and gold and family where
    present and non-empty. `origin`: what every item's origin is (None: the row's own `origin` column, if any)."""
    return [Item(id=str(r.get("id", i)), instruction=str(r[question_column]),
                 gold=_text(r.get(gold_column)) if gold_column else None, family=_text(r.get("family")),
                 origin=origin if origin is not None else str(r.get("origin") or ""))
            for i, r in enumerate(rows)]
