"""Reply schemas of the Lion steps that a program reads (structured outputs)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

Score = Literal[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # an enum, so even a weak model can only emit 1..10


class RefereeScores(BaseModel):
    """The referee's two scores, for the answers in the order shown."""

    model_config = ConfigDict(extra="forbid")
    score_assistant_1: Score
    score_assistant_2: Score


@lru_cache(maxsize=None)
def new_instruction_model(max_chars: int) -> type[BaseModel]:
    """{"instruction": str} with a length bound the structured-output engine enforces."""
    return create_model(
        "NewInstruction",
        __config__=ConfigDict(extra="forbid"),
        instruction=(str, Field(..., min_length=1, max_length=max_chars)),
    )
