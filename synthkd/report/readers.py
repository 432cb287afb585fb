"""run.json as the report reads it: typed, and tolerant of what older, partial or hand-edited files hold.

Each stage's entry is read with its stage type's stats model (`read_stage_stats`, the model the runner wrote it
with). The blocks here are the ones no stats model types: the run's own fields, and the mappings a stage keeps as
they are (a DPO iteration's judged comparison). In all of them a value
that is missing, null or of the wrong type reads as unknown, so one odd value never hides the rest of the report.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, ValidatorFunctionWrapHandler, field_validator

from synthkd.pipeline import read_stage_stats
from synthkd.records import StageStats, Stats, Usage


def _num(value: Any) -> float | None:
    """A finite number, else None (booleans and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# A figure as the report reads it: a finite number, or None for anything else (null, text, a boolean, NaN).
Num = Annotated[float | None, BeforeValidator(_num)]


def read_stage(entry: object) -> StageStats:
    """A run.json stage entry read with its stage type's stats model; one that cannot be read at all (a `type` that
    is not text) reads as an empty entry."""
    try:
        return read_stage_stats(entry)
    except ValidationError:
        return StageStats()


class Lenient(Stats):
    """A reader model: a field whose value has the wrong type reads as its default, and the other fields still read."""

    @field_validator("*", mode="wrap")
    @classmethod
    def _default_if_invalid(cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> object:
        try:
            return handler(value)
        except ValidationError:
            return cls.model_fields[info.field_name or ""].get_default(call_default_factory=True)


class RunJson(Lenient):
    """run.json's own fields (the runner's state) and its stages, each entry read with its stage type's model."""

    pipeline: str | None = None
    status: str | None = None
    invocations: int | None = None
    spent_usd_total: float | None = None
    started: str | None = None
    updated: str | None = None
    this_invocation: Usage | None = None  # what the latest `synthkd run` did (stages skipped as done count nothing)
    stages: dict[str, StageStats] = Field(default_factory=dict)

    @field_validator("stages", mode="before")
    @classmethod
    def _typed_stages(cls, value: object) -> dict[str, StageStats]:
        # An entry that is not an object is left out (a stage the runner never wrote).
        entries = value.items() if isinstance(value, dict) else ()
        return {str(name): read_stage(entry) for name, entry in entries if isinstance(entry, dict)}


class WinsTiesLosses(Lenient):
    """A DPO iteration's `heldout_vs_previous`: the LLM judge's verdicts, new checkpoint against the previous one."""

    n: Num = None
    wins: Num = None
    ties: Num = None
    losses: Num = None
    win_rate: Num = None

    def counts(self) -> tuple[float | None, float | None, float | None]:
        """(wins, ties, losses)."""
        return self.wins, self.ties, self.losses
