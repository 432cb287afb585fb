"""The `montessori` stage type: Montessori-Instruct (the loop is in `loop.py`)."""

from __future__ import annotations


from synthkd.montessori.config import MontessoriStage
from synthkd.montessori.pairs import Distribution
from synthkd.errors import ConfigError
from synthkd.records import Iteration, Messages, Record, Stats, StageStats, TrainMetrics
from synthkd.stages.base import CheckContext, ModelUse, Reads, RunInputs, StageImpl, StageResult, TemplateUse, Uses
from synthkd.train.dpo import check_dpo_args
from synthkd.train.launch import check_accelerate_config
from synthkd.train.sft import check_sft_args


class MontessoriRow(Record):
    """A training example of the student, written by the tuned teacher and answered by the responder."""

    id: str
    instruction: str
    messages: Messages
    iteration: int


class Synthesis(Stats):
    """One synthesis phase (probe or final): teacher samples asked for, kept by the filters, answered by the
    responder, and how many were dropped for each reason."""

    sampled: int = 0
    kept: int = 0
    answered: int = 0
    rejected: dict[str, int] = {}


class Signal(Distribution):
    """The per-candidate signal of one iteration: what was measured and how (`kind`: influence, judge or icl_accuracy;
    `method`: the influence estimate; first-order `params` and `projection_dim`), with its distribution."""

    kind: str | None = None
    method: str | None = None
    params: str | None = None
    projection_dim: int | None = None


class MontessoriIteration(Iteration):
    """One iteration's figures."""

    teacher_weights: str | None = None
    probe_synthesis: Synthesis | None = None
    final_synthesis: Synthesis | None = None
    signal: Signal | None = None
    icl_baseline: float | None = None
    pairs: int = 0
    teacher_dpo: TrainMetrics | str | None = None
    final_set: int = 0
    student_sft: TrainMetrics | str | None = None
    failed: int = 0

    def line(self) -> str:
        kind = (self.signal.kind if self.signal else None) or "signal"
        return f"iter {self.iteration}: {kind}, {self.pairs} teacher pairs, final set {self.final_set}, failed {self.failed}"


class MontessoriStats(StageStats):
    """run.json entry of a montessori stage."""

    iterations: list[MontessoriIteration] = []  # type: ignore[assignment]


class MontessoriImpl(StageImpl[MontessoriStage]):
    """Tune the teacher toward what helps the student; the tuned teacher writes the student's set."""

    row_type = MontessoriRow
    stats_type = MontessoriStats
    fmt = "sft (messages)"

    def reads(self) -> list[Reads]:
        cfg = self.cfg
        return [Reads("input", cfg.input, frozenset({"instruction"})),
                Reads("reference", cfg.reference, frozenset({"instruction", "response"})),
                Reads("icl_probe", cfg.icl_probe if cfg.signal == "icl_accuracy" else None, frozenset({"question", "answer"}))]

    def uses(self) -> list[Uses]:
        cfg = self.cfg
        return [Uses("teacher", cfg.teacher, served_because="Montessori trains the teacher with DPO"),
                Uses("responder", cfg.responder),
                Uses("judge", cfg.judge if cfg.signal == "judge" else None),
                Uses("student", cfg.student if cfg.signal == "icl_accuracy" else None)]

    def templates(self) -> list[TemplateUse]:
        cfg = self.cfg
        return [TemplateUse("synthesis.template", cfg.synthesis.template, frozenset({"examples"})),
                TemplateUse("answer_template", cfg.answer_template, frozenset({"instruction"}))] + (
            [TemplateUse("judge_template", cfg.judge_template, frozenset({"instruction", "answer"}))] if cfg.signal == "judge" else [])

    def models(self) -> list[ModelUse]:
        return [ModelUse("student_model", self.cfg.student_model)]

    def moves(self) -> list[str]:
        return [self.cfg.teacher, self.cfg.student]

    def check(self, ctx: CheckContext) -> None:
        cfg = self.cfg
        check_accelerate_config(cfg.accelerate_config, ctx)
        if cfg.signal == "influence" and cfg.influence == "exact":
            for key in ("influence_params", "influence_projection_dim"):
                if key in cfg.model_fields_set:
                    raise ConfigError(f"{key} only applies to influence: first_order, but influence is exact",
                                      where=ctx.where(key), fix=f"set influence: first_order, or remove {key}")
        if cfg.signal == "icl_accuracy" and not cfg.icl_probe:
            raise ConfigError("signal icl_accuracy needs a probe set", where=ctx.where("icl_probe"), fix="name a stage with question and answer columns")
        check_dpo_args(cfg.dpo, ctx.where("dpo"), ctx.accepted_args)
        check_sft_args(cfg.sft, ctx.where("sft"), ctx.accepted_args)

    async def run(self, inp: RunInputs) -> StageResult:
        from synthkd.montessori.loop import MontessoriRun

        return await MontessoriRun(self.cfg, inp.rt, inp.out, inp.get("input"), inp.get("reference"), inp.get("icl_probe")).run()
