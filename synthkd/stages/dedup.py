"""`dedup`: keep the first record of each distinct text; later repeats go to failed.jsonl."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synthkd.config.stages import StageBase
from synthkd.records import FailedRow, StageStats
from synthkd.stages.base import Reads, RunInputs, StageImpl, StageResult


class DedupStage(StageBase):
    """Drop records whose text repeats an earlier record's (after case and whitespace folding)."""

    type: Literal["dedup"]
    input: str = Field(..., description="Stage whose records are deduplicated.")
    column: str = Field("instruction", description="Column compared.")


class DedupStats(StageStats):
    """run.json entry of a dedup stage."""

    duplicates: int = 0

    def lines(self) -> list[str]:
        return [f"{self.duplicates} duplicates dropped"]


def fold(text: object) -> str:
    """The form two texts are compared in: lower case, runs of white space as one space."""
    return " ".join(str(text).lower().split())


class DedupImpl(StageImpl[DedupStage]):
    """Passes its input's rows through, less the repeats."""

    stats_type = DedupStats

    def reads(self) -> list[Reads]:
        return [Reads("input", self.cfg.input, frozenset({self.cfg.column}), "column")]

    async def run(self, inp: RunInputs) -> StageResult:
        seen: dict[str, str] = {}  # folded text -> id of the first record with it
        kept, dropped = [], []
        for row in inp.get("input"):
            key = fold(row.get(self.cfg.column, ""))
            if key in seen:
                dropped.append(FailedRow.of(row, "duplicate", detail=f"same {self.cfg.column} as {seen[key]}"))
            else:
                seen[key] = str(row.get("id"))
                kept.append(row)
        return StageResult(rows=kept, failed=dropped, stats=DedupStats(duplicates=len(dropped)))
