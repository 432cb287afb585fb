"""On-policy DPO of the student, K iterations:

    weights = starting student (an SFT checkpoint)
    repeat K times:
        serve the student from `weights`
        mine pairs:  teacher_vs_student: teacher answer chosen, the student's own answer rejected,
                     where the judge (both orders) prefers the teacher by >= margin;
                     ranked_student_samples: k student samples, judged one by one, best vs worst
                     where their scores differ by >= margin
        DPO from `weights` on the pairs -> new checkpoint
        held-out: the judge compares the new checkpoint with `weights` (both orders) -> win rate
        weights = new checkpoint
"""

from __future__ import annotations

from typing import Any

from synthkd.client.accounting import Meter
from synthkd.dpo.config import DPOStage
from synthkd import pairs as mining
from synthkd.judging import Judgement, both_orders, pointwise_call
from synthkd.chat import answer_call
from synthkd.hashing import digest
from synthkd.runtime import Runtime
from synthkd.scoring.code_judge import code_judgement, is_code_judge
from synthkd.scoring.heldout import HeldoutEvaluator, brief
from synthkd.items import Item, read_items
from synthkd.client.endpoint import Result
from synthkd.dpo.stage import DPOIteration
from synthkd.records import FailedRow, PreferencePair, plain_rows
from synthkd.stages.training import train_checkpoint
from synthkd.stages.base import StageResult, failed_row
from synthkd.stages.outlet import StageOutlet


class DPORun:
    """One `dpo` stage execution."""

    def __init__(self, cfg: DPOStage, rt: Runtime, out: StageOutlet, rows: list[dict[str, Any]], heldout: list[dict[str, Any]]) -> None:
        self.cfg, self.rt, self.out = cfg, rt, out
        self.rows = read_items(rows)
        self.heldout = read_items(heldout)
        p = rt.prompts
        self.t_answer = p.get(cfg.templates.answer)
        self.t_pair = p.get(cfg.templates.pairwise)
        self.t_point = p.get(cfg.templates.pointwise)
        self.code_judge = is_code_judge(cfg.judge)
        # With a judge that is code, held-out progress is judge-free (ROUGE-L, NLL, gold) instead of an LLM win rate.
        self.evaluator = (HeldoutEvaluator(rt, self.heldout, teacher=cfg.teacher, student=cfg.student, template=self.t_answer,
                                           sampling=cfg.heldout_sampling) if self.code_judge and heldout else None)
        self.failed: list[FailedRow] = []  # rows whose calls failed, with the step and the reason

    def _fail(self, it: int, step: str, row: Item, res: Result | None, **extra: Any) -> None:
        """Keep a row whose call failed (failures are data: they reach failed.jsonl, never vanish)."""
        self.failed.append(failed_row(row, res, step, iteration=it, **extra))

    async def run(self) -> StageResult:
        meter = Meter()
        weights = self.cfg.model or self.rt.current_weights(self.cfg.student)
        assert weights is not None  # validate() requires a served student
        all_pairs: list[PreferencePair] = []
        for it in range(1, self.cfg.iterations + 1):
            stats = DPOIteration(iteration=it, student_weights=weights)
            it_meter = Meter()
            self.rt.serve_weights(self.cfg.student, weights)
            pairs: list[PreferencePair] = []
            if "teacher_vs_student" in self.cfg.sources:
                pairs += await self.teacher_vs_student(it, it_meter)
            if "ranked_student_samples" in self.cfg.sources:
                pairs += await self.ranked(it, it_meter)
            pairs = [p.model_copy(update={"iteration": it}) for p in pairs]
            stats.pairs_mined = len(pairs)
            stats.pairs_by_source = {s: sum(1 for p in pairs if p.source == s) for s in self.cfg.sources}
            stats.margins = mining.margin_summary([p.margin for p in pairs])
            stats.failed = sum(1 for f in self.failed if f.value("iteration") == it)
            fp = digest({"pairs": plain_rows(pairs), "weights": weights, "dpo": self.cfg.dpo, "lora": self.cfg.lora, "seed": self.rt.config.seed})
            self.out.dataset(f"iter{it}.pairs", pairs, [f for f in self.failed if f.value("iteration") == it], row_type=PreferencePair,
                             fingerprint=fp, fmt="preference (prompt/chosen/rejected)", counts={"iteration": it},
                             description=f"DPO iteration {it}: preference pairs mined from the student's own answers.")
            if self.evaluator is not None and it == 1:
                self.out.block("heldout_teacher", await self.evaluator.teacher_reference(it_meter))
                self.out.block("heldout_base", await self.evaluator.evaluate("held-out (before DPO)", it_meter))
            before = await self._student_answers(self.heldout, f"iter {it}: held-out answers (before)", it_meter) if self.evaluator is None else {}
            new = await self.train(it, pairs, weights, fp, stats)
            if self.evaluator is not None:
                self.rt.serve_weights(self.cfg.student, new)
                stats.heldout = await self.evaluator.evaluate(f"iter {it}: held-out", it_meter)
            elif self.heldout and new != weights:
                self.rt.serve_weights(self.cfg.student, new)
                after = await self._student_answers(self.heldout, f"iter {it}: held-out answers (after)", it_meter)
                stats.heldout_vs_previous = await self.win_rate(it, before, after, it_meter)
            stats.usage = it_meter.usage()
            meter.merge(it_meter)
            self.out.iteration(stats)
            self.rt.reporter.note(f"[{self.cfg.name}] iteration {it}: {len(pairs)} pairs, DPO {stats.dpo}, held-out {brief(stats.heldout) if stats.heldout is not None else stats.heldout_vs_previous}")
            all_pairs += pairs
            weights = new
        return StageResult(rows=all_pairs, failed=self.failed, meter=meter, moves={self.cfg.student: weights})

    async def _student_answers(self, items: list[Item], label: str, meter: Meter) -> dict[str, str]:
        calls = [answer_call(self.t_answer, x.instruction, self.cfg.answer_sampling) for x in items]
        results = await self.rt.call_all(self.cfg.student, label, calls, meter)
        return {x.id: r.text.strip() for x, r in zip(items, results) if r.ok and r.text}

    async def teacher_vs_student(self, it: int, meter: Meter) -> list[PreferencePair]:
        calls = [answer_call(self.t_answer, x.instruction, self.cfg.answer_sampling) for x in self.rows]
        teacher = await self.rt.call_all(self.cfg.teacher, f"iter {it}: teacher answers", calls, meter)
        student = await self.rt.call_all(self.cfg.student, f"iter {it}: student answers", calls, meter)
        items = []
        for x, t, s in zip(self.rows, teacher, student):
            if t.ok and s.ok and t.text and s.text:
                items.append((x, t.text.strip(), s.text.strip()))
            else:
                self._fail(it, "teacher_answer" if not (t.ok and t.text) else "student_answer", x, t if not (t.ok and t.text) else s)
        if self.code_judge:
            rows = []
            for x, t, s in items:
                j = code_judgement(self.cfg.judge, t, s, x.gold)
                rows.append(mining.ScoredAnswers(x.id, x.instruction, t, s, j.a, j.b))
            return mining.teacher_vs_student_pairs(rows, self.cfg.margin)
        judged = await both_orders(self.rt, self.cfg.judge, f"iter {it}: judge teacher vs student", self.t_pair,
                                   [(x.instruction, t, s) for x, t, s in items], self.cfg.judge_sampling, meter)
        rows = []
        for (x, t, s), j in zip(items, judged):
            if isinstance(j, Judgement):
                rows.append(mining.ScoredAnswers(x.id, x.instruction, t, s, j.a, j.b))
            else:
                self._fail(it, "judge", x, j, teacher_answer=t, student_answer=s)
        return mining.teacher_vs_student_pairs(rows, self.cfg.margin)

    async def ranked(self, it: int, meter: Meter) -> list[PreferencePair]:
        k = self.cfg.samples
        calls = []
        for x in self.rows:
            for i in range(k):
                call = answer_call(self.t_answer, x.instruction, self.cfg.sample_sampling)
                call.sample = i
                calls.append(call)
        samples = await self.rt.call_all(self.cfg.student, f"iter {it}: student samples (k={k})", calls, meter)
        texts = [r.text.strip() if r.ok and r.text else None for r in samples]
        for n, r in enumerate(samples):
            if texts[n] is None:
                self._fail(it, "student_sample", self.rows[n // k], r, sample=n % k)
        score_calls, where = [], []
        for n, x in enumerate(self.rows):
            for i in range(k):
                text = texts[n * k + i]
                if text:
                    score_calls.append(pointwise_call(self.t_point, x.instruction, text, self.cfg.judge_sampling))
                    where.append((n, text))
        scores = await self.rt.call_all(self.cfg.judge, f"iter {it}: judge student samples", score_calls, meter)
        groups = [mining.SampleGroup(x.id, x.instruction) for x in self.rows]
        for (n, text), res in zip(where, scores):
            if res.ok:
                groups[n].samples.append((text, res.parsed.score))
            else:
                self._fail(it, "judge_sample", self.rows[n], res, student_answer=text)
        return mining.ranked_pairs(groups, self.cfg.margin)

    async def train(self, it: int, pairs: list[PreferencePair], weights: str, fp: str, stats: DPOIteration) -> str:
        if not pairs:
            stats.dpo = "skipped: no pairs"
            return weights
        out, stats.dpo = await train_checkpoint(self.rt, self.cfg.name, self.cfg, f"iter{it}", kind="dpo", rows=pairs, base=weights,
                                                   trainer_args=self.cfg.dpo, lora=self.cfg.lora,
                                                   note=f"iteration {it}: DPO on {len(pairs)} pairs")
        return str(out)

    async def win_rate(self, it: int, before: dict[str, str], after: dict[str, str], meter: Meter) -> dict[str, float | int]:
        both = [x for x in self.heldout if x.id in before and x.id in after]
        judged = await both_orders(self.rt, self.cfg.judge, f"iter {it}: judge new vs previous (held-out)", self.t_pair,
                                   [(x.instruction, after[x.id], before[x.id]) for x in both], self.cfg.judge_sampling, meter)
        return mining.win_tie_loss([j.gap for j in judged if isinstance(j, Judgement)])
