"""The `dpo` stage type: on-policy preference distillation of the student (the loop is in `loop.py`)."""

from __future__ import annotations


from synthkd.dpo.config import DPOStage
from synthkd.errors import ConfigError
from synthkd.records import Iteration, PreferencePair, StageStats, TrainMetrics
from synthkd.scoring.code_judge import is_code_judge
from synthkd.scoring.heldout import brief
from synthkd.stages.base import CheckContext, ModelUse, Reads, RunInputs, StageImpl, StageResult, TemplateUse, Uses, split_blank
from synthkd.train.dpo import check_dpo_args
from synthkd.train.launch import check_accelerate_config


class DPOIteration(Iteration):
    """One on-policy iteration's figures."""

    student_weights: str | None = None
    pairs_mined: int = 0
    pairs_by_source: dict[str, int] = {}
    margins: dict[str, float | int] = {}  # pairs.margin_summary
    dpo: TrainMetrics | str | None = None
    heldout_vs_previous: dict[str, float | int] | None = None  # pairs.win_tie_loss: LLM judge,: new checkpoint vs the previous one
    failed: int = 0  # rows whose calls failed this iteration (in failed.jsonl)

    def line(self) -> str:
        dpo = self.dpo if isinstance(self.dpo, str) else f"reward margin {self.dpo.reward_margin if self.dpo.reward_margin is not None else float('nan'):.3f}" if self.dpo else "-"
        held = f"  held-out {brief(self.heldout)}" if self.heldout else (
            f"  vs previous: win rate {self.heldout_vs_previous.get('win_rate', 0):.2f}" if self.heldout_vs_previous else "")
        return f"iter {self.iteration}: pairs {self.pairs_mined}  dpo {dpo}  failed {self.failed}{held}"


class DPOStats(StageStats):
    """run.json entry of a dpo stage."""

    iterations: list[DPOIteration] = []  # type: ignore[assignment]


class DPOImpl(StageImpl[DPOStage]):
    """K iterations: mine pairs from the student's own answers, DPO, move the student onto the result."""

    row_type = PreferencePair
    stats_type = DPOStats
    fmt = "preference (prompt/chosen/rejected)"

    def reads(self) -> list[Reads]:
        need = frozenset({"instruction"})
        return [Reads("input", self.cfg.input, need), Reads("heldout", self.cfg.heldout, need)]

    def uses(self) -> list[Uses]:
        return [Uses("teacher", self.cfg.teacher), Uses("judge", self.cfg.judge, judge=True),
                Uses("student", self.cfg.student, served_because="on-policy DPO samples the student from each new checkpoint")]

    def templates(self) -> list[TemplateUse]:
        t = self.cfg.templates
        return [TemplateUse("templates.answer", t.answer, frozenset({"instruction"})),
                TemplateUse("templates.pairwise", t.pairwise, frozenset({"instruction", "answer_1", "answer_2"})),
                TemplateUse("templates.pointwise", t.pointwise, frozenset({"instruction", "answer"}))]

    def models(self) -> list[ModelUse]:
        return [ModelUse("model", self.cfg.model)] if self.cfg.model else []

    def moves(self) -> list[str]:
        return [self.cfg.student]

    def check(self, ctx: CheckContext) -> None:
        if is_code_judge(self.cfg.judge) and "ranked_student_samples" in self.cfg.sources:
            raise ConfigError("ranked_student_samples needs an LLM judge (it scores each sample alone; a code judge needs the teacher's answer)",
                              where=ctx.where("judge"), fix="use sources: [teacher_vs_student], or an endpoint as judge")
        check_dpo_args(self.cfg.dpo, ctx.where("dpo"), ctx.accepted_args)
        check_accelerate_config(self.cfg.accelerate_config, ctx)

    async def run(self, inp: RunInputs) -> StageResult:
        from synthkd.dpo.loop import DPORun

        # An instruction that is null or blank is nothing to pay for: a failed row, never sent.
        prompts, empty = split_blank(inp.get("input"), "instruction")
        result = await DPORun(self.cfg, inp.rt, inp.out, prompts, inp.get("heldout")).run()
        result.failed[:0] = empty
        return result
