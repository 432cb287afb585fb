"""Reply schemas of the Lion steps that a program reads (structured outputs)."""

from __future__ import annotations

from functools import lru_cache
from pydantic import BaseModel, ConfigDict, Field, create_model

from synthkd.judging import RefereeScores, Score  # noqa: F401  (re-exported)


@lru_cache(maxsize=None)
def new_instruction_model(max_chars: int) -> type[BaseModel]:
    """{"instruction": str} with a length bound the structured-output engine enforces."""
    return create_model(
        "NewInstruction",
        __config__=ConfigDict(extra="forbid"),
        instruction=(str, Field(..., min_length=1, max_length=max_chars)),
    )
