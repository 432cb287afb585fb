"""The `skd` stage type: symbolic knowledge distillation (the loop is in `loop.py`)."""

from __future__ import annotations


from synthkd.skd.config import SKDStage
from synthkd.errors import ConfigError
from synthkd.records import Messages, Record, StageStats, Stats, TrainMetrics
from synthkd.skd.generation import DEFAULT_RELATIONS
from synthkd.stages.base import CheckContext, ModelUse, Reads, RunInputs, StageImpl, StageResult, TemplateUse, Uses
from synthkd.train.launch import check_accelerate_config
from synthkd.train.sft import check_sft_args


class HeadRow(Record):
    """A generated head (event)."""

    id: str
    head: str


class Triple(Record):
    """One edge of the knowledge graph: head, relation (and its English phrase), tail."""

    id: str
    head: str
    relation: str
    phrase: str
    tail: str


class ScoredTriple(Triple):
    """A triple with the critic's score (accepted when >= the chosen threshold)."""

    critic_score: float


class SKDRow(ScoredTriple):
    """A triple the critic accepts, as a student training example."""

    messages: Messages


class Corpus(Stats):
    """Triples the teacher wrote and those the critic kept."""

    raw: int = 0
    filtered: int = 0
    kept_fraction: float = 0.0


class Rate(Stats):
    """How many triples of a set the critic accepts, and their mean score."""

    n: int = 0
    accepted: float = 0.0
    mean_score: float = 0.0


class Threshold(Stats):
    """The critic's acceptance threshold as chosen on validation (`critic.choose_threshold`): the point of the
    precision-recall curve, whether it met the target, and the target."""

    threshold: float | None = None
    precision: float | None = None
    recall: float | None = None
    kept_fraction: float | None = None
    met: bool | None = None
    target: dict[str, float] = {}


class PRCurve(Stats):
    """The critic's precision-recall curve on validation, with the chosen point (the report's plot)."""

    precision: list[float] = []
    recall: list[float] = []
    threshold: float | None = None
    chosen: dict[str, float] = {}


class CriticSummary(Stats):
    """The critic: an LLM judge (`kind: llm`, fixed threshold, triples judged) or a trained classifier (labels,
    train/val split, training metrics, the chosen threshold and the curve it was chosen on)."""

    kind: str | None = None
    threshold: float | None = None
    judged: int | None = None  # llm
    labels: int | None = None  # classifier
    train: int | None = None
    val: int | None = None
    metrics: TrainMetrics | None = None
    chosen: Threshold | None = None
    pr_curve: PRCurve | None = None


class SKDSummary(Stats):
    """What the SKD stage measured: heads, corpus sizes, the critic, acceptance rates, the student."""

    heads: dict[str, int | str] | None = None  # generation.clean_heads: sampled, why dropped, kept
    corpus: Corpus | None = None
    critic: CriticSummary | None = None
    acceptance: dict[str, Rate] | None = None  # teacher_unfiltered, filtered_corpus, student_heldout
    student: TrainMetrics | str | None = None
    failed_calls: dict[str, int] | None = None
    note: str | None = None


class SKDStats(StageStats):
    """run.json entry of an skd stage."""

    skd: SKDSummary | None = None
    critic: CriticSummary | None = None  # the same as skd.critic, at the top for the report's PR curve

    def lines(self) -> list[str]:
        corpus = self.skd.corpus if self.skd else None
        acc = (self.skd.acceptance if self.skd else None) or {}
        parts = [f"corpus {corpus.raw if corpus else '-'} -> {corpus.filtered if corpus else '-'}"]
        parts += [f"{k} acceptance {v.accepted:.2f}" for k, v in acc.items()]
        return ["  ".join(parts)]


def relations_of(cfg: SKDStage) -> dict[str, tuple[str, str, list[dict[str, str]]]]:
    """relation -> (phrase, template, few-shot examples): the configured schema, or the default seven."""
    return {k: (v.phrase, v.template, v.examples) for k, v in (cfg.relations or {}).items()} or {
        k: (phrase, "skd/tail.jinja2", []) for k, phrase in DEFAULT_RELATIONS.items()
    }


class SKDImpl(StageImpl[SKDStage]):
    """Teacher writes heads and tails; a critic filters; the student learns the accepted triples."""

    row_type = SKDRow
    stats_type = SKDStats
    fmt = "sft (messages)"

    def reads(self) -> list[Reads]:
        need = frozenset({"head"})
        return [Reads("input", self.cfg.input, need), Reads("heldout", self.cfg.heldout, need)]

    def uses(self) -> list[Uses]:
        return [Uses("teacher", self.cfg.teacher), Uses("judge", self.cfg.judge), Uses("student", self.cfg.student)]

    def templates(self) -> list[TemplateUse]:
        cfg = self.cfg
        tails = [TemplateUse(f"relations.{rel}.template", template, frozenset({"head", "relation", "phrase", "examples"}))
                 for rel, (_, template, _) in relations_of(cfg).items()]
        return tails + [
            TemplateUse("heads.template", cfg.heads.template, frozenset({"seeds", "next_number", "prefix"})),
            TemplateUse("critic.judge_template", cfg.critic.judge_template, frozenset({"head", "relation", "phrase", "tail"})),
            TemplateUse("student_template", cfg.student_template, frozenset({"head", "relation", "phrase"})),
        ]

    def models(self) -> list[ModelUse]:
        return [ModelUse("student_model", self.cfg.student_model), ModelUse("critic.model", self.cfg.critic.model)]

    def moves(self) -> list[str]:
        return [self.cfg.student] if self.cfg.student else []

    def check(self, ctx: CheckContext) -> None:
        from synthkd.skd.labels import read_labels

        check_accelerate_config(self.cfg.accelerate_config, ctx)
        if self.cfg.critic.labels:
            where = ctx.where("critic.labels")
            relations = relations_of(self.cfg)
            unknown = sorted({r["relation"] for r in read_labels(ctx.loaded.resolve(self.cfg.critic.labels), where)} - set(relations))
            if unknown:
                raise ConfigError(f"labels use relation(s) {', '.join(unknown)} that the schema does not declare", where=where,
                                  fix=f"declare them under relations:, or use {', '.join(relations)}")
        check_sft_args(self.cfg.sft, ctx.where("sft"), ctx.accepted_args)

    async def run(self, inp: RunInputs) -> StageResult:
        from synthkd.skd.loop import SKDRun

        return await SKDRun(self.cfg, inp.rt, inp.out, inp.get("input"), inp.get("heldout")).run()
