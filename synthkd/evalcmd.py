"""`synthkd eval`: cut a pipeline down to one eval stage and the load stages it reads."""

from __future__ import annotations

from dataclasses import replace

from synthkd.config.loader import LoadedPipeline
from synthkd.stages.evaluate import EvalStage
from synthkd.stages.load import LoadStage
from synthkd.errors import ConfigError


def eval_only(loaded: LoadedPipeline, stage: str | None) -> tuple[LoadedPipeline, str, str]:
    """(pipeline with just the eval stage and its inputs, that stage's name, its student endpoint)."""
    evals = [s for s in loaded.config.stages if isinstance(s, EvalStage)]
    if not evals:
        raise ConfigError(f"{loaded.path} has no eval stage", fix="add a stage with `type: eval`, or evaluate with a pipeline that has one")
    chosen = evals[-1] if stage is None else next((s for s in evals if s.name == stage), None)
    if chosen is None:
        raise ConfigError(f"no eval stage named {stage!r}", where=str(loaded.path), fix=f"use one of: {', '.join(s.name for s in evals)}")
    by_name = {s.name: s for s in loaded.config.stages}
    source = by_name[chosen.input]
    if not isinstance(source, LoadStage):
        raise ConfigError(
            f"eval stage {chosen.name!r} reads {chosen.input!r}, which is not a load stage",
            where=str(loaded.path), fix="give the eval stage a load stage as input to run it on its own, or run the whole pipeline",
        )
    config = loaded.config.model_copy(update={"stages": [source, chosen]})
    return replace(loaded, config=config), chosen.name, chosen.student
