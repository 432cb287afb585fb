"""`synthkd validate`: everything that can be checked without a network or a token spent."""

from __future__ import annotations

from dataclasses import dataclass, field

from synthkd.config.loader import LoadedPipeline
from synthkd.config.montessori import MontessoriStage
from synthkd.config.skd import SKDStage
from synthkd.config.stages import (
    DecontaminateStage, DPOStage, EvalStage, GenerateStage, LionStage, LoadStage, RationaleStage, SFTStage, Stage,
)
from synthkd.errors import ConfigError
from synthkd.prompts import PromptLibrary
from synthkd.models import check_model_spec
from synthkd.scoring.code_judge import CODE_JUDGES, code_judge_kind, is_code_judge
from synthkd.settings import Settings
from synthkd.stages.load import columns_of
from synthkd.train.dpo import check_dpo_args
from synthkd.train.sft import check_sft_args

LION_OUTPUT = {"id", "origin", "instruction", "messages"}
DPO_OUTPUT = {"id", "source", "margin", "instruction", "prompt", "chosen", "rejected", "iteration"}


@dataclass
class Plan:
    """What validation learned: the columns each stage produces, the endpoints used."""

    columns: dict[str, set[str]] = field(default_factory=dict)
    endpoints_used: set[str] = field(default_factory=set)


def _where(loaded: LoadedPipeline, index: int, key: str) -> str:
    return f"{loaded.path}: stages.{index}.{key}"


def validate_pipeline(loaded: LoadedPipeline, settings: Settings, check_keys: bool = True) -> Plan:
    """Raise ConfigError on the first problem; return the plan otherwise."""
    cfg = loaded.config
    prompts = PromptLibrary(loaded.prompts_dir)
    plan = Plan()
    for i, stage in enumerate(cfg.stages):
        plan.columns[stage.name] = _check_stage(loaded, prompts, plan, i, stage)
    _models(loaded, plan)
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


def _judge(loaded: LoadedPipeline, plan: Plan, name: str, where: str) -> None:
    """A judge is an endpoint or a judge that is code (`code:rouge_l`, `code:exact_match`)."""
    if is_code_judge(name):
        if code_judge_kind(name) not in CODE_JUDGES:
            raise ConfigError(f"unknown code judge {name!r}", where=where,
                              fix=f"use one of: {', '.join('code:' + k for k in CODE_JUDGES)}, or an endpoint name")
        return
    _endpoint(loaded, plan, name, where)


def _models(loaded: LoadedPipeline, plan: Plan) -> None:
    """Every model string a run will load parses, and its file or package is there (before any call)."""
    for name in sorted(plan.endpoints_used):
        serve = loaded.config.endpoints[name].serve
        if serve is not None and loaded.config.endpoints[name].served:
            check_model_spec(serve.model_path, f"{loaded.path}: endpoints.{name}.serve.model_path")
    for i, stage in enumerate(loaded.config.stages):
        for key in ("model", "student_model"):
            value = getattr(stage, key, None)
            if isinstance(value, str):
                check_model_spec(value, _where(loaded, i, key))


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


def _check_stage(loaded: LoadedPipeline, prompts: PromptLibrary, plan: Plan, i: int, stage: Stage) -> set[str]:
    if isinstance(stage, LoadStage):
        return columns_of(stage, loaded.resolve(stage.path), _where(loaded, i, "path"))
    if isinstance(stage, GenerateStage):
        cols = _input(plan, stage.input, _where(loaded, i, "input"))
        _endpoint(loaded, plan, stage.endpoint, _where(loaded, i, "endpoint"))
        for key in ("template", "system_template"):
            name = getattr(stage, key)
            if name:
                prompts.get(name, _where(loaded, i, key)).check_context(cols, _where(loaded, i, key))
        extra = {stage.output_column, "truncated"} | ({"messages"} if stage.sft_format else set()) | ({"sample"} if stage.samples > 1 else set())
        return cols | extra
    if isinstance(stage, SFTStage):
        cols = _input(plan, stage.input, _where(loaded, i, "input"))
        _require(cols, {"messages"}, _where(loaded, i, "input"), stage.input)
        check_sft_args(stage.sft, _where(loaded, i, "sft"))
        if stage.serve_as:
            _endpoint(loaded, plan, stage.serve_as, _where(loaded, i, "serve_as"))
        return cols
    if isinstance(stage, LionStage):
        cols = _input(plan, stage.input, _where(loaded, i, "input"))
        _require(cols, {"instruction"}, _where(loaded, i, "input"), stage.input)
        for role in ("teacher", "student"):
            _endpoint(loaded, plan, getattr(stage, role), _where(loaded, i, role))
        _judge(loaded, plan, stage.referee, _where(loaded, i, "referee"))
        if stage.heldout:
            _require(_input(plan, stage.heldout, _where(loaded, i, "heldout")), {"instruction"}, _where(loaded, i, "heldout"), stage.heldout)
        fixed = {"answer": {"instruction"}, "referee": {"instruction", "answer_1", "answer_2"},
                 "generate_hard": {"seed_instruction"}, "generate_easy": {"seed_instruction"}}
        for key, available in fixed.items():
            where = _where(loaded, i, f"templates.{key}")
            prompts.get(getattr(stage.templates, key), where).check_context(available, where)
        check_sft_args(stage.sft, _where(loaded, i, "sft"))
        if stage.dpo is not None:
            check_dpo_args(stage.dpo, _where(loaded, i, "dpo"))
        return set(LION_OUTPUT)
    if isinstance(stage, DPOStage):
        cols = _input(plan, stage.input, _where(loaded, i, "input"))
        _require(cols, {"instruction"}, _where(loaded, i, "input"), stage.input)
        if stage.heldout:
            _require(_input(plan, stage.heldout, _where(loaded, i, "heldout")), {"instruction"}, _where(loaded, i, "heldout"), stage.heldout)
        for role in ("teacher", "student"):
            _endpoint(loaded, plan, getattr(stage, role), _where(loaded, i, role))
        _judge(loaded, plan, stage.judge, _where(loaded, i, "judge"))
        if is_code_judge(stage.judge) and "ranked_student_samples" in stage.sources:
            raise ConfigError("ranked_student_samples needs an LLM judge (it scores each sample alone; a code judge needs the teacher's answer)",
                              where=_where(loaded, i, "judge"), fix="use sources: [teacher_vs_student], or an endpoint as judge")
        if not loaded.config.endpoints[stage.student].served:
            raise ConfigError(
                f"the dpo stage's student endpoint {stage.student!r} is remote; on-policy DPO samples from each new checkpoint",
                where=_where(loaded, i, "student"), fix="give that endpoint a `serve:` block and base_url: null",
            )
        fixed = {"answer": {"instruction"}, "pairwise": {"instruction", "answer_1", "answer_2"}, "pointwise": {"instruction", "answer"}}
        for key, available in fixed.items():
            where = _where(loaded, i, f"templates.{key}")
            prompts.get(getattr(stage.templates, key), where).check_context(available, where)
        check_dpo_args(stage.dpo, _where(loaded, i, "dpo"))
        return DPO_OUTPUT
    if isinstance(stage, EvalStage):
        cols = _input(plan, stage.input, _where(loaded, i, "input"))
        _require(cols, {stage.question_column} | ({stage.gold_column} if stage.gold_column else set()), _where(loaded, i, "input"), stage.input)
        for role in ("student", "teacher"):
            if getattr(stage, role):
                _endpoint(loaded, plan, getattr(stage, role), _where(loaded, i, role))
        if stage.teacher:
            _judge(loaded, plan, stage.judge, _where(loaded, i, "judge"))
        _templates(prompts, loaded, i, {"answer": (stage.templates.answer, {"instruction"})}
                   | ({"pairwise": (stage.templates.pairwise, {"instruction", "answer_1", "answer_2"})} if stage.teacher else {}))
        return {"id", "instruction", "gold", "student_answer", "teacher_answer", "student_score", "teacher_score", "outcome"}
    if isinstance(stage, DecontaminateStage):
        cols = _input(plan, stage.input, _where(loaded, i, "input"))
        _require(cols, {stage.column}, _where(loaded, i, "column"), stage.input)
        _require(_input(plan, stage.against, _where(loaded, i, "against")), {stage.against_column}, _where(loaded, i, "against_column"), stage.against)
        return cols
    if isinstance(stage, RationaleStage):
        cols = _input(plan, stage.input, _where(loaded, i, "input"))
        _require(cols, {stage.question_column} | ({stage.gold_column} if stage.gold_column else set()), _where(loaded, i, "input"), stage.input)
        _endpoint(loaded, plan, stage.teacher, _where(loaded, i, "teacher"))
        _templates(prompts, loaded, i, {"template": (stage.template, {"question"}), "inline_template": (stage.inline_template, {"rationale", "answer"})})
        return {"id", "input_id", "task", "question", "gold", "rationale", "answer", "messages"}
    if isinstance(stage, SKDStage):
        return _check_skd(loaded, prompts, plan, i, stage)
    if isinstance(stage, MontessoriStage):
        return _check_montessori(loaded, prompts, plan, i, stage)
    raise ConfigError(f"unknown stage type {type(stage).__name__}")  # pragma: no cover


def _check_montessori(loaded: LoadedPipeline, prompts: PromptLibrary, plan: Plan, i: int, stage: MontessoriStage) -> set[str]:
    _require(_input(plan, stage.input, _where(loaded, i, "input")), {"instruction"}, _where(loaded, i, "input"), stage.input)
    _require(_input(plan, stage.reference, _where(loaded, i, "reference")), {"instruction", "response"}, _where(loaded, i, "reference"), stage.reference)
    roles = ["teacher", "responder"] + {"judge": ["judge"], "icl_accuracy": ["student"]}.get(stage.signal, [])
    for role in roles:
        _endpoint(loaded, plan, getattr(stage, role), _where(loaded, i, role))
    if not loaded.config.endpoints[stage.teacher].served:
        raise ConfigError(
            f"Montessori trains the teacher with DPO, but endpoint {stage.teacher!r} is a hosted API whose weights synthkd cannot train",
            where=_where(loaded, i, "teacher"), fix="point the teacher at a local open model: base_url: null and a serve: block",
        )
    if stage.signal == "influence" and stage.influence == "exact":
        for key in ("influence_params", "influence_projection_dim"):
            if key in stage.model_fields_set:
                raise ConfigError(f"{key} only applies to influence: first_order, but influence is exact",
                                  where=_where(loaded, i, key), fix=f"set influence: first_order, or remove {key}")
    if stage.signal == "icl_accuracy":
        if not stage.icl_probe:
            raise ConfigError("signal icl_accuracy needs a probe set", where=_where(loaded, i, "icl_probe"), fix="name a stage with question and answer columns")
        _require(_input(plan, stage.icl_probe, _where(loaded, i, "icl_probe")), {"question", "answer"}, _where(loaded, i, "icl_probe"), stage.icl_probe)
    _templates(prompts, loaded, i, {"synthesis.template": (stage.synthesis.template, {"examples"})})
    check_dpo_args(stage.dpo, _where(loaded, i, "dpo"))
    check_sft_args(stage.sft, _where(loaded, i, "sft"))
    return {"id", "instruction", "messages", "iteration"}


def _check_skd(loaded: LoadedPipeline, prompts: PromptLibrary, plan: Plan, i: int, stage: SKDStage) -> set[str]:
    from synthkd.skd.generation import DEFAULT_RELATIONS
    from synthkd.skd.labels import read_labels

    _require(_input(plan, stage.input, _where(loaded, i, "input")), {"head"}, _where(loaded, i, "input"), stage.input)
    if stage.heldout:
        _require(_input(plan, stage.heldout, _where(loaded, i, "heldout")), {"head"}, _where(loaded, i, "heldout"), stage.heldout)
    for role in ("teacher", "judge", "student"):
        if getattr(stage, role):
            _endpoint(loaded, plan, getattr(stage, role), _where(loaded, i, role))
    relations = {k: (v.template, v.phrase) for k, v in (stage.relations or {}).items()} or {k: ("skd/tail.jinja2", p) for k, p in DEFAULT_RELATIONS.items()}
    for rel, (template, _) in relations.items():
        where = _where(loaded, i, f"relations.{rel}.template")
        prompts.get(template, where).check_context({"head", "relation", "phrase", "examples"}, where)
    _templates(prompts, loaded, i, {"heads.template": (stage.heads.template, {"seeds", "next_number", "prefix"}),
                                    "critic.judge_template": (stage.critic.judge_template, {"head", "relation", "phrase", "tail"}),
                                    "student_template": (stage.student_template, {"head", "relation", "phrase"})})
    if stage.critic.labels:
        where = _where(loaded, i, "critic.labels")
        unknown = sorted({r["relation"] for r in read_labels(loaded.resolve(stage.critic.labels), where)} - set(relations))
        if unknown:
            raise ConfigError(f"labels use relation(s) {', '.join(unknown)} that the schema does not declare", where=where,
                              fix=f"declare them under relations:, or use {', '.join(relations)}")
    check_sft_args(stage.sft, _where(loaded, i, "sft"))
    return {"id", "head", "relation", "phrase", "tail", "critic_score", "messages"}


def _templates(prompts: PromptLibrary, loaded: LoadedPipeline, i: int, specs: dict[str, tuple[str, set[str]]]) -> None:
    """Each template exists and reads only the variables its stage provides."""
    for key, (name, available) in specs.items():
        where = _where(loaded, i, key if "." in key or key.endswith("template") else f"templates.{key}")  # noqa: E501
        prompts.get(name, where).check_context(available, where)
