"""The `lion` stage type: what it reads, uses and writes, and its run (the loop is in `loop.py`)."""

from __future__ import annotations

import importlib.util

from synthkd.lion.config import LionStage
from synthkd.lion.steps import GenerationYield
from synthkd.selection import SelectionSummary, check_sampled
from synthkd.records import HeldoutFigures, Iteration, Messages, Record, Stats, StageStats, TrainMetrics
from synthkd.stages.base import CheckContext, ModelUse, Reads, RunInputs, StageImpl, StageResult, TemplateUse, Uses, split_blank
from synthkd.train.dpo import check_dpo_args
from synthkd.train.launch import check_accelerate_config
from synthkd.train.sft import check_sft_args


class LionRow(Record):
    """A training example of the student: an instruction (seed or generated) with the teacher's answer."""

    id: str
    origin: str  # "seed", or "iter<k>-hard" / "iter<k>-easy" for generated instructions
    instruction: str
    messages: Messages


class DiscriminationRow(Record):
    """The referee's verdict on teacher vs student for one cache-pool instruction."""

    id: str
    origin: str
    instruction: str
    teacher_answer: str
    student_answer: str
    scores_teacher_first: list[float]
    scores_student_first: list[float]
    teacher_score: float
    student_score: float
    gap: float
    hard: bool


class GeneratedRow(Record):
    """A new instruction written from a hard or easy seed (or drawn from the pool stage), with the teacher's answer."""

    id: str
    kind: str  # hard | easy, or pool: drawn as it is from the `pool` stage (new_from: pool), whose row seed_id names
    seed_id: str
    seed_instruction: str
    instruction: str
    origin: str
    teacher_answer: str
    messages: Messages
    family: str | None = None  # the seed's `family` where the input has one (list mode's examples share it)


class LionIteration(Iteration):
    """One adversarial iteration's figures."""

    train_pool: int = 0
    cache_pool: int = 0
    sft_examples: int | None = None
    sft: TrainMetrics | str | None = None
    checkpoint: str | None = None
    judged: int = 0
    hard: int = 0
    easy: int = 0
    hard_fraction: float | None = None  # None where the iteration judged nothing
    mean_teacher_score: float | None = None  # None where the iteration judged nothing
    mean_student_score: float | None = None  # None where the iteration judged nothing
    discrimination_failures: int = 0
    discrimination: str | None = None  # set where this iteration judged nothing (the last one, when nothing would use it)
    dpo_pairs: int | None = None
    dpo: TrainMetrics | str | None = None
    new_hard: int = 0
    seeds_hard: int = 0
    new_easy: int = 0
    seeds_easy: int = 0
    new_instructions: int = 0
    generation_rejected: dict[str, int] = {}  # why generated instructions did not join the pools (surplus: usable, not needed)
    # The generation calls' yield: {mode, calls, usable, rejected: {reason: n}, yield: usable / calls}; usable + rejected = calls.
    generation_yield: GenerationYield | None = None
    generation: str | None = None  # how the new instructions came, where not Lion's generation (skipped, or drawn from the pool)
    pool_drawn: int | None = None  # new_from: pool: instructions drawn this iteration
    pool_exhausted: bool | None = None  # new_from: pool: fewer than new_per_iteration were left to draw

    def line(self) -> str:
        judged = (f"hard {self.hard_fraction:.2f}  teacher {self.mean_teacher_score:.2f}  student {self.mean_student_score:.2f}"
                  if self.hard_fraction is not None and self.mean_teacher_score is not None and self.mean_student_score is not None
                  else "not judged")
        return (f"iter {self.iteration}: pools {self.train_pool}/{self.cache_pool}  {judged}  new {self.new_instructions}"
                + (f"  yield {y:.2f}" if self.generation_yield and (y := self.generation_yield.share) is not None else ""))


class FinalImitation(Stats):
    """final_imitation: the SFT step after the last iteration, on the final train pool."""

    train_pool: int = 0
    sft_examples: int | None = None
    sft: TrainMetrics | str | None = None
    checkpoint: str | None = None
    heldout: HeldoutFigures | None = None  # judge-free held-out figures of the final student


class LionStats(StageStats):
    """run.json entry of a lion stage."""

    iterations: list[LionIteration] = []  # type: ignore[assignment]
    final_imitation: FinalImitation | None = None
    answer_selection: SelectionSummary | None = None  # answer_select: what best-of-n made of the teacher's answers

    def lines(self) -> list[str]:
        lines = super().lines()
        if (s := self.answer_selection) is not None:
            rules = ", ".join(f"{rule} {count}" for rule, count in sorted(s.by_rule.items()))
            lines.append(f"teacher answers, best of n: {rules or 'none kept'}; {s.passed}/{s.candidates} candidates passed the checks")
        if (final := self.final_imitation) is not None:
            what = final.sft if isinstance(final.sft, str) else f"SFT on {final.sft_examples} examples"
            lines.append(f"final imitation: {what}")
        return lines


class LionImpl(StageImpl[LionStage]):
    """Lion (Jiang et al., EMNLP 2023): imitation, discrimination and generation, K times."""

    row_type = LionRow
    stats_type = LionStats
    fmt = "sft (messages)"

    def reads(self) -> list[Reads]:
        need = frozenset({"instruction"})
        return [Reads("input", self.cfg.input, need), Reads("heldout", self.cfg.heldout, need),
                Reads("pool", self.cfg.pool if self.cfg.new_from == "pool" else None, need)]

    def uses(self) -> list[Uses]:
        return [Uses("teacher", self.cfg.teacher), Uses("student", self.cfg.student), Uses("referee", self.cfg.referee, judge=True)]

    def templates(self) -> list[TemplateUse]:
        t = self.cfg.templates
        seed = frozenset({"seed_instruction"})
        return [TemplateUse("templates.answer", t.answer, frozenset({"instruction"})),
                TemplateUse("templates.referee", t.referee, frozenset({"instruction", "answer_1", "answer_2"})),
                TemplateUse("templates.generate_hard", t.generate_hard, seed),
                TemplateUse("templates.generate_easy", t.generate_easy, seed)] + (
            [TemplateUse("templates.generate_list", t.generate_list, frozenset({"examples", "kind", "family"}))]
            if self.cfg.generation_mode == "list" else [])

    def models(self) -> list[ModelUse]:
        return [ModelUse("student_model", self.cfg.student_model)] if self.cfg.student_model else []

    def moves(self) -> list[str]:
        return [self.cfg.student]

    def check(self, ctx: CheckContext) -> None:
        check_accelerate_config(self.cfg.accelerate_config, ctx)
        if (sel := self.cfg.answer_select) is not None:
            temperature = ctx.loaded.config.endpoints[self.cfg.teacher].sampling.merged(self.cfg.answer_sampling).temperature
            check_sampled("answer_select.n", sel.n, temperature, self.cfg.name, ctx.where("answer_select.n"),
                          "sample the candidates, e.g. answer_sampling: {temperature: 0.7}, or answer_select: null (one answer each)")
        # The student trains only where there are weights to train (student_model, or a served student);
        # a Lion that does not train checks its sft:/dpo: blocks where TRL is there, and needs no TRL otherwise.
        if self.cfg.student_model is None and not ctx.served(self.cfg.student) and importlib.util.find_spec("trl") is None:
            return
        check_sft_args(self.cfg.sft, ctx.where("sft"), ctx.accepted_args)
        if self.cfg.dpo is not None:
            check_dpo_args(self.cfg.dpo, ctx.where("dpo"), ctx.accepted_args)

    async def run(self, inp: RunInputs) -> StageResult:
        from synthkd.lion.loop import LionRun

        # A seed without an instruction is nothing to pay for: a failed row, never sent.
        seeds, empty = split_blank(inp.get("input"), "instruction")
        result = await LionRun(self.cfg, inp.rt, inp.out, seeds, inp.get("heldout"), inp.get("pool")).run()
        result.failed[:0] = empty
        return result

