"""Configuration of the `dedup` stage (exact-duplicate removal), 1:1 with its YAML block."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from synthkd.config.stages import StageBase

if TYPE_CHECKING:
    from synthkd.stages.base import StageImpl


class DedupStage(StageBase):
    """Drop records whose text repeats an earlier record's (after case and whitespace folding)."""

    type: Literal["dedup"]
    input: str = Field(..., description="Stage whose records are deduplicated.")
    column: str = Field("instruction", description="Column compared.")

    @classmethod
    def implementation_class(cls) -> "type[StageImpl[Any]]":
        from synthkd.stages.dedup import DedupImpl

        return DedupImpl
