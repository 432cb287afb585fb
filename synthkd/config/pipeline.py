"""The whole pipeline file, 1:1 with its YAML."""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import Field, model_validator

from synthkd.config.endpoints import EndpointConfig, RayConfig, Strict
from synthkd.config.dedup import DedupStage
from synthkd.config.montessori import MontessoriStage
from synthkd.config.skd import SKDStage
from synthkd.config.stages import (
    DecontaminateStage, DPOStage, EvalStage, GenerateStage, LionStage, LoadStage, RationaleStage, SFTStage,
)

# Every stage type a pipeline may use, discriminated by `type`. This union is the one list of stage
# types: a new type adds its config class here, and everything else (validate, the runner, status,
# the report, error messages) finds it through `stage_types()` and the config's implementation.
AnyStage = (LoadStage | GenerateStage | SFTStage | LionStage | DPOStage | EvalStage | DecontaminateStage | RationaleStage
            | SKDStage | MontessoriStage | DedupStage)


def stage_types() -> dict[str, Any]:
    """`type` value -> config class, for every member of `AnyStage`."""
    return {get_args(cls.model_fields["type"].annotation)[0]: cls for cls in get_args(AnyStage)}


class PipelineConfig(Strict):
    """A pipeline: named endpoints and an ordered list of stages."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Pipeline name; default run directory runs/<name>/.")
    description: str = Field("", description="Free text, copied to dataset cards.")
    seed: int = Field(0, description="Seed for every random choice synthkd makes (sampling seeds, shuffles, training).")
    budget_usd: float | None = Field(
        None, gt=0, description="Stop cleanly before the run's total spend (all invocations) would exceed this."
    )
    prompts_dir: str = Field("../prompts", description="Directory of jinja2 templates, relative to the pipeline file.")
    endpoints: dict[str, EndpointConfig] = Field(..., description="Named endpoints that stages refer to.")
    ray: RayConfig | None = Field(
        None, description="Run served replicas on a Ray cluster (also when RAY_ADDRESS is set); null: on this machine.")
    stages: list[Annotated[AnyStage, Field(discriminator="type")]] = Field(..., min_length=1, description="Stages, run in order.")

    @model_validator(mode="after")
    def _unique_stage_names(self) -> "PipelineConfig":
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"two stages are named {stage.name!r}; stage names must be unique")
            seen.add(stage.name)
        return self
