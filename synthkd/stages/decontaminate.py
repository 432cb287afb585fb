"""`decontaminate`: drop records that share a long n-gram (default 13 tokens) with an evaluation set."""

from __future__ import annotations

from typing import Any, Iterator, Literal

from pydantic import Field

from synthkd.config.stages import StageBase
from synthkd.records import FailedRow, StageStats, Stats
from synthkd.rouge import tokenize
from synthkd.stages.base import Reads, RunInputs, StageImpl, StageResult


class DecontaminateStage(StageBase):
    """Drop records that share a long n-gram with an evaluation set."""

    type: Literal["decontaminate"]

    input: str = Field(..., description="Stage whose records are filtered.")
    column: str = Field("instruction", description="Column checked for overlap.")
    against: str = Field(..., description="Stage holding the evaluation set.")
    against_column: str = Field("instruction", description="Column of the evaluation set.")
    ngram: int = Field(13, ge=1, description="Drop a record sharing any n-gram of this many tokens (default 13).")


def ngrams(text: str, n: int) -> Iterator[tuple[str, ...]]:
    """Word n-grams of a text (lowercase alphanumeric tokens, as ROUGE tokenizes)."""
    tokens = tokenize(text)
    for i in range(len(tokens) - n + 1):
        yield tuple(tokens[i : i + n])


def decontaminate(cfg: DecontaminateStage, rows: list[dict[str, Any]], reference: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[FailedRow], dict[str, int]]:
    """(kept rows, dropped rows with the shared n-gram, counts)."""
    banned: set[tuple[str, ...]] = set()
    for ref in reference:
        banned.update(ngrams(str(ref.get(cfg.against_column, "")), cfg.ngram))
    kept, dropped = [], []
    for row in rows:
        hit = next((g for g in ngrams(str(row.get(cfg.column, "")), cfg.ngram) if g in banned), None)
        if hit is None:
            kept.append(row)
        else:
            dropped.append(FailedRow.of(row, "contaminated", detail=" ".join(hit)))
    return kept, dropped, {"dropped": len(dropped), "kept": len(kept), "ngram": cfg.ngram, "reference_size": len(reference)}


class DecontaminationCounts(Stats):
    """What a decontaminate stage dropped and kept."""

    dropped: int = 0
    kept: int = 0
    ngram: int = 0
    reference_size: int = 0


class DecontaminateStats(StageStats):
    """run.json entry of a decontaminate stage."""

    decontamination: DecontaminationCounts | None = None
    detail_blocks = ("decontamination",)


class DecontaminateImpl(StageImpl[DecontaminateStage]):
    """Passes its input's rows through, less the contaminated ones (which go to failed.jsonl)."""

    stats_type = DecontaminateStats

    def reads(self) -> list[Reads]:
        return [Reads("input", self.cfg.input, frozenset({self.cfg.column}), "column"),
                Reads("against", self.cfg.against, frozenset({self.cfg.against_column}), "against_column")]

    async def run(self, inp: RunInputs) -> StageResult:
        kept, dropped, counts = decontaminate(self.cfg, inp.get("input"), inp.get("against"))
        return StageResult(rows=kept, failed=dropped, stats=DecontaminateStats(decontamination=DecontaminationCounts(**counts)))
