"""The pipeline file, 1:1 with its YAML, and the one list of stage types.

This module sits above every stage type: it gathers each type's config (declared beside its implementation)
into the `stages:` union and pairs it with that implementation. Nothing below imports it, so configs
never import implementations and the stage modules never import each other through the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union, get_args

from pydantic import Field, ValidationError, model_validator

from synthkd.config.endpoints import EndpointConfig, RayConfig, Strict
from synthkd.config.loader import LoadedPipeline, invalid_pipeline, read_pipeline
from synthkd.config.stages import StageBase
from synthkd.dpo.config import DPOStage
from synthkd.dpo.stage import DPOImpl
from synthkd.lion.config import LionStage
from synthkd.lion.stage import LionImpl
from synthkd.montessori.config import MontessoriStage
from synthkd.montessori.stage import MontessoriImpl
from synthkd.records import StageStats
from synthkd.settings import Settings
from synthkd.skd.config import SKDStage
from synthkd.skd.stage import SKDImpl
from synthkd.stages.base import StageImpl
from synthkd.stages.decontaminate import DecontaminateImpl, DecontaminateStage
from synthkd.stages.conversation import ConversationImpl, ConversationStage
from synthkd.stages.conversation_eval import ConversationEvalImpl, ConversationEvalStage
from synthkd.stages.dedup import DedupImpl, DedupStage
from synthkd.stages.evaluate import EvalImpl, EvalStage
from synthkd.stages.generate import GenerateImpl, GenerateStage
from synthkd.stages.load import LoadImpl, LoadStage
from synthkd.stages.rationale import RationaleImpl, RationaleStage
from synthkd.stages.sft import SFTImpl, SFTStage
from synthkd.stages.tool_use import ToolUseImpl, ToolUseStage

# Every stage type a pipeline may use: its config (discriminated by `type`) and its implementation. This is
# the one list of stage types: a new type adds its pair here, and everything else (validate, the runner,
# status, the report, error messages) finds it through `stage_types()` and `implementation()`.
_TYPES: dict[type[StageBase], type[StageImpl[Any]]] = {
    LoadStage: LoadImpl, GenerateStage: GenerateImpl, SFTStage: SFTImpl, LionStage: LionImpl, DPOStage: DPOImpl,
    EvalStage: EvalImpl, DecontaminateStage: DecontaminateImpl, RationaleStage: RationaleImpl, SKDStage: SKDImpl,
    MontessoriStage: MontessoriImpl, DedupStage: DedupImpl, ConversationStage: ConversationImpl,
    ToolUseStage: ToolUseImpl, ConversationEvalStage: ConversationEvalImpl,
}
AnyStage = Union[tuple(_TYPES)]  # type: ignore[valid-type]  # noqa: UP007 (the union of the configs above)


def stage_types() -> dict[str, type[StageBase]]:
    """`type` value -> config class, for every member of `AnyStage`."""
    return {get_args(cls.model_fields["type"].annotation)[0]: cls for cls in get_args(AnyStage)}


def implementation_class(config_class: type[StageBase]) -> type[StageImpl[Any]]:
    """The implementation of a stage type, by its config class."""
    return _TYPES[config_class]


def implementation(stage: StageBase) -> StageImpl[Any]:
    """A stage's implementation, bound to its config."""
    return _TYPES[type(stage)](stage)


def stats_type_of(stage_type: str | None) -> type[StageStats]:
    """The stats model of a stage type (from run.json's `type`); the common one for an unknown type."""
    cls = stage_types().get(stage_type or "")
    return _TYPES[cls].stats_type if cls is not None else StageStats


def read_stage_stats(entry: Any) -> StageStats:
    """A run.json stage entry as its typed model; a malformed entry reads as an empty one."""
    if not isinstance(entry, dict):
        return StageStats()
    model = stats_type_of(entry.get("type") if isinstance(entry.get("type"), str) else None)
    try:
        return model.model_validate(entry)
    except ValidationError:
        return StageStats.model_validate({k: v for k, v in entry.items() if k in ("status", "type")})


def load_pipeline(path: str | Path, overrides: list[str] | None = None, settings: Settings | None = None) -> LoadedPipeline:
    """Read, interpolate, override and validate a pipeline file. Raises ConfigError on bad input."""
    path = Path(path)
    text, data = read_pipeline(path, overrides, settings or Settings.from_environ())
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise invalid_pipeline(exc, text, data, path, list(stage_types())) from None
    return LoadedPipeline(config=config, path=path.resolve(), yaml_text=text)


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
