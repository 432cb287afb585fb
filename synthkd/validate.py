"""`synthkd validate`: everything that can be checked without a network or a token spent.

It reads each stage's declarations (what it reads, which endpoints and templates it uses, which
models it loads, which columns it writes) and its own `check`; it keeps no list of stage types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from synthkd.config.loader import LoadedPipeline
from synthkd.errors import ConfigError
from synthkd.models import check_model_spec
from synthkd.pipeline import implementation
from synthkd.prompts import PromptLibrary
from synthkd.serve.process import check_command
from synthkd.scoring.code_judge import CODE_JUDGES, code_judge_kind, is_code_judge
from synthkd.settings import Settings
from synthkd.stages.base import CheckContext, StageImpl


@dataclass
class Plan:
    """What validation learned: the columns each stage produces, the endpoints used."""

    columns: dict[str, set[str]] = field(default_factory=dict)
    endpoints_used: set[str] = field(default_factory=set)


def validate_pipeline(loaded: LoadedPipeline, settings: Settings, check_keys: bool = True) -> Plan:
    """Raise ConfigError on the first problem; return the plan otherwise."""
    cfg = loaded.config
    prompts = PromptLibrary(loaded.prompts_dir)
    plan = Plan()
    accepted = settings.home / "validated" / "trainer-args.txt"
    for i, stage in enumerate(cfg.stages):
        ctx = CheckContext(loaded, i, accepted)
        _check_name(ctx, stage.name, [s.name for s in cfg.stages])
        plan.columns[stage.name] = _check_stage(ctx, prompts, plan, implementation(stage))
    _served_models(loaded, plan)
    if check_keys:
        for name in sorted(plan.endpoints_used):
            env = cfg.endpoints[name].api_key_env
            if env and not settings.get(env):
                raise ConfigError(
                    f"environment variable {env} (the API key of endpoint {name!r}) is not set",
                    where=f"{loaded.path}: endpoints.{name}.api_key_env",
                    fix=f"export {env}=... before running",
                )
    return plan


def _check_name(ctx: CheckContext, name: str, names: list[str]) -> None:
    """A stage writes its extra datasets as NAME.<suffix> (lion.iter1.pairs): a stage named like that
    would overwrite, or be overwritten by, another stage's output."""
    owner = next((o for o in names if o != name and name.startswith(o + ".")), None)
    if owner is not None:
        raise ConfigError(f"stage name {name!r} starts with {owner + '.'!r}, the prefix of stage {owner!r}'s own datasets",
                          where=ctx.where("name"), fix=f"rename it, e.g. {name.replace('.', '_')!r}")


def _check_stage(ctx: CheckContext, prompts: PromptLibrary, plan: Plan, impl: StageImpl[Any]) -> set[str]:
    """Check one stage against its declarations; returns the columns it writes."""
    inputs: dict[str, set[str]] = {}
    for read in impl.reads():
        if read.stage is None:
            continue
        columns = _input(plan, read.stage, ctx.where(read.key))
        _require(columns, set(read.columns), ctx.where(read.columns_key or read.key), read.stage)
        inputs[read.key] = columns
    for use in impl.uses():
        if use.endpoint is None:
            continue
        if use.judge and is_code_judge(use.endpoint):
            if code_judge_kind(use.endpoint) not in CODE_JUDGES:
                raise ConfigError(f"unknown code judge {use.endpoint!r}", where=ctx.where(use.key),
                                  fix=f"use one of: {', '.join('code:' + k for k in CODE_JUDGES)}, or an endpoint name")
            continue
        _endpoint(ctx.loaded, plan, use.endpoint, ctx.where(use.key))
        if use.served_because and not ctx.served(use.endpoint):
            raise ConfigError(
                f"endpoint {use.endpoint!r} ({use.key} of stage {impl.name!r}) is a hosted API whose weights synthkd cannot train, "
                f"but {use.served_because}",
                where=ctx.where(use.key), fix="point it at a local open model that synthkd serves: base_url: null and a serve: block",
            )
    for t in impl.templates():
        available = (set(t.provides) if t.provides is not None else inputs.get("input", set())) | t.also
        prompts.get(t.name, ctx.where(t.key)).check_context(available, ctx.where(t.key))
    for m in impl.models():
        check_model_spec(m.spec, ctx.where(m.key))
    impl.check(ctx)
    return impl.output_columns(inputs, ctx)


def _served_models(loaded: LoadedPipeline, plan: Plan) -> None:
    """Every model an endpoint serves parses, and its file or package is there (before any call)."""
    for name in sorted(plan.endpoints_used):
        serve = loaded.config.endpoints[name].serve
        if serve is not None and loaded.config.endpoints[name].served:
            check_model_spec(serve.model_path, f"{loaded.path}: endpoints.{name}.serve.model_path")
            if serve.command:
                check_command(serve.command, f"{loaded.path}: endpoints.{name}.serve.command")


def _endpoint(loaded: LoadedPipeline, plan: Plan, name: str, where: str) -> None:
    if name not in loaded.config.endpoints:
        raise ConfigError(
            f"unknown endpoint {name!r}", where=where, fix=f"use one of: {', '.join(sorted(loaded.config.endpoints))}"
        )
    plan.endpoints_used.add(name)


def _input(plan: Plan, name: str, where: str) -> set[str]:
    if name not in plan.columns:
        raise ConfigError(
            f"input stage {name!r} is not an earlier stage", where=where,
            fix=f"use one of: {', '.join(plan.columns) or '(no earlier stage)'}",
        )
    return plan.columns[name]


def _require(columns: set[str], needed: set[str], where: str, input_name: str) -> None:
    missing = sorted(needed - columns)
    if missing:
        raise ConfigError(
            f"input stage {input_name!r} has no column(s) {', '.join(missing)} (it has: {', '.join(sorted(columns))})",
            where=where, fix="add a `columns:` rename on the load stage, or change the input",
        )
