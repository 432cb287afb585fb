"""The Lion driver. Reads like the paper's algorithm box:

    train pool = cache pool = seed instructions; teacher answers them
    repeat K times:
        imitation:      SFT the student on (train pool, teacher answers)
        discrimination: student and teacher answer the cache pool; the referee scores both, in
                        both orders; hard if teacher - student >= tau, else easy
        generation:     the teacher writes N new instructions, half from hard seeds (same domain and
                        task type, similar length and difficulty), half from easy seeds (same domain,
                        rarer); filter; teacher answers them; they join both pools
                        (generation_mode: list, for small teachers: each call continues a list of
                        same-family seeds of the kind in plain text, one instruction per call;
                        new_from: pool, a control arm: N drawn uniformly from the pool stage instead;
                        final_generation: false, as the paper's loop: none after the last imitation, and
                        no judging there either unless DPO or final_discrimination uses it)
    final_imitation: one more imitation on the final train pool, so the last generation is trained on

Every call goes through the request cache, every checkpoint carries a fingerprint, and every
random choice is seeded by (pipeline seed, iteration, step), so a rerun after a crash redoes only
what is missing and ends with the same datasets.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from synthkd.client.accounting import Meter
from synthkd.client.endpoint import Call, Result
from synthkd.config.endpoints import Sampling
from synthkd.lion.config import LionStage
from synthkd.lion import steps
from synthkd.lion.schemas import new_instruction_model
from synthkd.rouge import RougeIndex
from synthkd.hashing import digest
from synthkd.prompts import Prompt
from synthkd.runtime import Runtime
from synthkd.pairs import teacher_vs_student_pairs
from synthkd.chat import answer_call, sft_example, user
from synthkd.judging import Judgement, both_orders
from synthkd.scoring.code_judge import code_judgement, is_code_judge
from synthkd.scoring.heldout import HeldoutEvaluator, brief
from synthkd.items import Item, read_items
from synthkd.records import FailedRow, HeldoutFigures, HeldoutRow, PreferencePair, plain_rows
from synthkd.lion.stage import DiscriminationRow, FinalImitation, GeneratedRow, LionIteration, LionRow
from synthkd.selection import CandidateRow, Selected, no_candidate, pick
from synthkd.stages.training import train_checkpoint
from synthkd.stages.base import ExtraDataset, StageResult, failed_row
from synthkd.stages.outlet import StageOutlet


# Generation calls of one kind in one iteration number fewer than this (rounds x oversample x N stays far below).
ITERATION_SAMPLES = 10_000_000


@dataclass
class Pools:
    """The train pool and the cache pool, and the teacher's answer to each item (by id)."""

    train: list[Item]
    cache: list[Item]
    answers: dict[str, str] = field(default_factory=dict)
    answer_failures: dict[str, FailedRow] = field(default_factory=dict)


@dataclass(frozen=True)
class NewInstruction:
    """An instruction generated (or drawn from the pool stage) this iteration, and the seed it came from."""

    item: Item
    kind: str  # hard | easy | pool
    seed: Item

    def row(self, answer: str) -> GeneratedRow:
        """Its row of the iteration's `generated` dataset, once the teacher has answered it."""
        return GeneratedRow(id=self.item.id, kind=self.kind, seed_id=self.seed.id, seed_instruction=self.seed.instruction,
                            instruction=self.item.instruction, origin=self.item.origin, teacher_answer=answer,
                            messages=sft_example(self.item.instruction, answer), family=self.item.family)


@dataclass
class _Kind:
    """One kind of generation (hard or easy) within an iteration: its seeds, target and progress."""

    kind: str
    seeds: list[Item]
    target: int
    template: Prompt
    got: int = 0
    slot: int = 0  # calls asked so far: the next call's sample offset


class LionRun:
    """One Lion stage execution."""

    def __init__(self, cfg: LionStage, rt: Runtime, out: StageOutlet, seeds: list[dict[str, Any]], heldout: list[dict[str, Any]] | None = None,
                 pool: list[dict[str, Any]] | None = None) -> None:
        self.cfg, self.rt, self.out = cfg, rt, out
        # `gold` rides along where a seed has it, for the code:exact_match referee; `family` for list-mode generation.
        self.seeds = read_items(seeds, gold_column=cfg.answer_select.gold_column if cfg.answer_select else "gold", origin="seed")
        p = rt.prompts
        self.t_answer = p.get(cfg.templates.answer)
        self.t_referee = p.get(cfg.templates.referee)
        self.t_hard = p.get(cfg.templates.generate_hard)
        self.t_easy = p.get(cfg.templates.generate_easy)
        self.t_list = p.get(cfg.templates.generate_list) if cfg.generation_mode == "list" else None
        # list mode: the teacher continues a list, so its reply ends at the newline (unless generation_sampling says otherwise).
        self.list_sampling = Sampling(stop=["\n"]).merged(cfg.generation_sampling)
        student_cfg = rt.config.endpoints[cfg.student]
        self.base_student = cfg.student_model or (student_cfg.serve.model_path if student_cfg.serve else None)
        # new_from: pool: the pool stage's instructions not drawn yet, each text once, in its order (draws are seeded, so a
        # rerun draws the same).
        self.undrawn: list[Item] = []
        seen: set[str] = set()
        for i, row in enumerate(pool or []):
            text = str(row.get("instruction") or "")
            if text.strip() and text not in seen:
                seen.add(text)
                self.undrawn.append(Item(str(row.get("id", i)), text))
        self.stats: list[LionIteration] = []
        self.selected = Selected()  # answer_select: every teacher answer's candidates and the kept one's record
        self.total = Meter()
        self.eval_meter = Meter()
        self.heldout_filter = (steps.HeldoutFilter([str(x.get("instruction") or "") for x in heldout], cfg.rouge_threshold)
                               if heldout else None)
        self.heldout = (HeldoutEvaluator(rt, read_items(heldout), teacher=cfg.teacher, student=cfg.student, template=self.t_answer,
                                         sampling=cfg.heldout_sampling) if heldout else None)

    # ---- helpers --------------------------------------------------------------------
    def _rng(self, *parts: Any) -> random.Random:
        return random.Random(digest([self.rt.config.seed, self.cfg.name, *parts]))

    async def _calls(self, endpoint: str, label: str, calls: list[Call], meter: Meter) -> list[Result]:
        return await self.rt.call_all(endpoint, label, calls, meter)

    async def evaluate_heldout(self, it: int, final: bool = False) -> HeldoutFigures | None:
        """Judge-free held-out figures of what the student serves now (iteration 0: the base student; final: after the
        final imitation).

        Its calls are counted apart (`heldout_usage` in run.json), so the stage's own counts are what
        the method spent on making training data: the number a per-teacher-call comparison needs.
        """
        if self.heldout is None or not self.rt.config.endpoints[self.cfg.student].served:
            return None
        meter = self.eval_meter
        if not self.heldout.reference:
            self.teacher_heldout = await self.heldout.teacher_reference(meter)
            self.out.block("heldout_teacher", self.teacher_heldout)
        who = "base student" if it == 0 else "student after the final imitation" if final else f"student after iteration {it}"
        figures = await self.heldout.evaluate(f"{'final' if final else f'iter {it}'}: held-out", meter)
        rows = self.heldout.last_rows
        self.out.dataset(f"heldout.{'final' if final else f'iter{it}'}", rows, row_type=HeldoutRow, counts={"iteration": it},
                         description=f"Lion: held-out answers of the {who} beside the teacher's (reference), with ROUGE-L and "
                         "gold match per prompt.")
        after = "after the final imitation" if final else f"after iteration {it}{' (base student)' if it == 0 else ''}"
        self.rt.reporter.note(f"[lion] held-out {after}: {brief(figures)}  | teacher: {brief(self.teacher_heldout)}")
        self.out.block("heldout_usage", meter.usage())
        return figures

    # ---- the loop ---------------------------------------------------------------------
    async def run(self) -> StageResult:
        pools = Pools(train=list(self.seeds), cache=list(self.seeds))
        meter = Meter()
        await self.teacher_answers(pools, pools.train, meter, "start: teacher answers the seeds")
        previous = self.base_student
        if self.heldout is not None and self.base_student is not None:
            if self.rt.config.endpoints[self.cfg.student].served:
                self.rt.serve_weights(self.cfg.student, self.base_student)
            base = await self.evaluate_heldout(0)
            if base is not None:
                self.out.block("heldout_base", base)
        final_weights: str | None = None
        for it in range(1, self.cfg.iterations + 1):
            stats = LionIteration(iteration=it, train_pool=len(pools.train), cache_pool=len(pools.cache))
            it_meter = Meter()
            checkpoint = await self.imitation(it, pools, previous, stats)
            last = it == self.cfg.iterations
            if last and not (self.cfg.final_generation or self.cfg.dpo is not None or self.cfg.final_discrimination):
                # Nothing trains on this judgement: the student's answers and the referee's calls would be spent for a figure.
                judged, stats.discrimination = [], "skipped: nothing uses the last iteration's judgement (final_discrimination: false)"
            else:
                judged = await self.discrimination(it, pools, checkpoint, stats, it_meter)
            checkpoint = await self.dpo_phase(it, judged, checkpoint, stats)
            if last and not self.cfg.final_generation:
                self.skip_generation(it, stats)
            elif self.cfg.new_from == "pool":
                await self.draw_from_pool(it, pools, stats, it_meter)
            else:
                await self.generation(it, pools, judged, stats, it_meter)
            if self.heldout is not None and checkpoint is not None and (last or self.cfg.heldout_after == "each"):
                if self.rt.config.endpoints[self.cfg.student].served:
                    self.rt.serve_weights(self.cfg.student, checkpoint)  # the DPO checkpoint when there is one
                stats.heldout = await self.evaluate_heldout(it)
            stats.usage = it_meter.usage()
            meter.merge(it_meter)
            self.out.iteration(stats)
            self.rt.reporter.note(f"[lion] {stats.line()}")
            self.stats.append(stats)
            previous = checkpoint if not self.cfg.retrain_from_base else self.base_student
            final_weights = checkpoint
        if self.cfg.final_imitation:
            final_weights = await self.final_imitation(pools, previous, final_weights)
        final = self._training_rows(pools, pools.train)
        self.total = meter
        # The student endpoint stays on the last checkpoint, so a later stage (eval) sees the trained student.
        moves = {self.cfg.student: final_weights} if final_weights and self.rt.config.endpoints[self.cfg.student].served else {}
        result = StageResult(rows=final, failed=list(pools.answer_failures.values()), meter=meter, moves=moves)
        if self.cfg.answer_select is not None:
            self.out.block("answer_selection", self.selected.summary())
            result.datasets.append(ExtraDataset(
                "answer_candidates", self.selected.candidates, CandidateRow, f"Lion stage {self.cfg.name}: every candidate "
                f"teacher answer (answer_select.n = {self.cfg.answer_select.n} per instruction), whether it passed the checks, "
                "and which one was kept."))
        return result

    async def teacher_answers(self, pools: Pools, items: list[Item], meter: Meter, label: str) -> None:
        """Teacher answers for every item without one (cached calls cost nothing on a rerun); with answer_select, the
        one of n samples that code keeps."""
        todo = [x for x in items if x.id not in pools.answers]
        sampling, sel = self.cfg.answer_sampling, self.cfg.answer_select
        n = sel.n if sel else 1
        calls = [answer_call(self.t_answer, x.instruction, sampling, sample=k) for x in todo for k in range(n)]
        results = await self._calls(self.cfg.teacher, label, calls, meter)
        for i, item in enumerate(todo):
            replies = results[i * n:(i + 1) * n]
            if sel is None:
                res = replies[0]
                text = res.text.strip() if res.ok and res.text and res.text.strip() else None
                failure = None if text else failed_row(item, res, "teacher_answer")
            else:
                picked = pick(item.id, replies, item.gold, sel.rule, sel.checks, meter)
                self.selected.candidates += picked.candidates
                text = str(picked.winner.text).strip() if picked.winner else None
                failure = None if text else no_candidate(item.as_row(), picked.candidates, meter).model_copy(update={"step": "teacher_answer"})
                if text:
                    self.selected.rows.append({"id": item.id, "selection": picked.selection(n)})
                else:
                    self.selected.failed.append(failure)
            if text:
                pools.answers[item.id] = text
                pools.answer_failures.pop(item.id, None)
            else:
                pools.answer_failures[item.id] = failure

    def _training_rows(self, pools: Pools, items: list[Item]) -> list[LionRow]:
        return [LionRow(id=x.id, origin=x.origin, instruction=x.instruction, messages=sft_example(x.instruction, pools.answers[x.id]))
                for x in items if x.id in pools.answers]

    async def final_imitation(self, pools: Pools, previous: str | None, last: str | None) -> str | None:
        """final_imitation: one more SFT on the final train pool (with the last iteration's new instructions), so no
        generated instruction goes untrained; recorded as the stage's `final_imitation`, with held-out figures.
        Returns the weights the student ends on (`last` where nothing trains)."""
        stats = FinalImitation(train_pool=len(pools.train))
        if not self.stats[-1].new_instructions:
            # The last imitation saw this very pool: another pass would be extra steps, not new data.
            stats.sft = "skipped: the last generation added no instruction to the train pool"
            checkpoint = None
        else:
            checkpoint = await self.imitation(self.cfg.iterations + 1, pools, previous, stats, tag="final")
        if self.heldout is not None and checkpoint is not None:
            stats.heldout = await self.evaluate_heldout(self.cfg.iterations + 1, final=True)
        self.out.block("final_imitation", stats)
        return checkpoint or last

    async def imitation(self, it: int, pools: Pools, previous: str | None, stats: LionIteration | FinalImitation, tag: str | None = None) -> str | None:
        """SFT the student on the train pool; returns the checkpoint directory. `tag` names the step's dataset and
        checkpoint (default iter<it>; `final` for the final imitation)."""
        tag = tag or f"iter{it}"
        what = f"iteration {it}" if tag == f"iter{it}" else f"{tag} imitation"
        rows = self._training_rows(pools, pools.train)
        self.out.dataset(f"{tag}.train_pool", rows, row_type=LionRow, counts={"iteration": it}, fmt="sft (messages)",
                         description=f"Lion {what}: the train pool with teacher answers.")
        stats.sft_examples = len(rows)
        if self.base_student is None:
            stats.sft = "skipped: no student weights (student endpoint is remote and student_model is unset)"
            return None
        out, stats.sft = await train_checkpoint(self.rt, self.cfg.name, self.cfg, tag, kind="sft", rows=rows,
                                                   base=previous or self.base_student, trainer_args=self.cfg.sft, lora=self.cfg.lora,
                                                   freeze_embeddings=self.cfg.freeze_embeddings, freeze_layers=self.cfg.freeze_layers,
                                                   note=f"{what}: imitation, SFT on {len(rows)} examples")
        stats.checkpoint = str(out)
        if self.rt.config.endpoints[self.cfg.student].served:
            self.rt.serve_weights(self.cfg.student, str(out))
        return str(out)

    async def discrimination(self, it: int, pools: Pools, checkpoint: str | None, stats: LionIteration, meter: Meter) -> list[DiscriminationRow]:
        """Score teacher vs student on the cache pool; returns rows with `hard` set."""
        items = [x for x in pools.cache if x.id in pools.answers]
        s_results = await self._calls(self.cfg.student, f"iter {it}: student answers the cache pool",
                                      [answer_call(self.t_answer, x.instruction, self.cfg.answer_sampling) for x in items], meter)
        judged_items: list[tuple[Item, str]] = []
        failed: list[FailedRow] = []
        for item, res in zip(items, s_results):
            if res.ok and res.text is not None:
                judged_items.append((item, res.text.strip()))
            else:
                failed.append(failed_row(item, res, "student_answer"))
        judgements = await self.referee(it, pools, judged_items, failed, meter)
        rows = [DiscriminationRow(
            id=item.id, origin=item.origin, instruction=item.instruction, teacher_answer=pools.answers[item.id],
            student_answer=student_answer, scores_teacher_first=[j.raw[0], j.raw[1]], scores_student_first=[j.raw[3], j.raw[2]],
            teacher_score=j.a, student_score=j.b, gap=j.gap, hard=steps.is_hard(j, self.cfg.tau),
        ) for (item, student_answer), j in zip(judged_items, judgements) if j is not None]
        hard = [r for r in rows if r.hard]
        stats.judged, stats.hard, stats.easy = len(rows), len(hard), len(rows) - len(hard)
        stats.hard_fraction = len(hard) / len(rows) if rows else 0.0
        stats.mean_teacher_score = statistics.fmean(r.teacher_score for r in rows) if rows else 0.0
        stats.mean_student_score = statistics.fmean(r.student_score for r in rows) if rows else 0.0
        stats.discrimination_failures = len(failed)
        fp = digest({"rows": plain_rows(rows), "failed": [f.to_json() for f in failed]})
        self.out.dataset(f"iter{it}.discrimination", rows, failed, row_type=DiscriminationRow, fingerprint=fp,
                         counts={"iteration": it, "hard": len(hard)},
                         description=f"Lion iteration {it}: referee scores of teacher and student on the cache pool.")
        prefs = teacher_vs_student_pairs(rows, self.cfg.tau)
        self.out.dataset(f"iter{it}.preference", prefs, row_type=PreferencePair, fingerprint=fp, counts={"iteration": it},
                         fmt="preference (prompt/chosen/rejected)",
                         description=f"Lion iteration {it}: teacher answer chosen over the student's where the referee's gap >= tau (DPO-ready).")
        return rows

    async def referee(self, it: int, pools: Pools, judged_items: list[tuple[Item, str]], failed: list[FailedRow],
                      meter: Meter) -> list[Judgement | None]:
        """One judgement per (item, student answer): the code judge, or the referee endpoint in both orders."""
        if is_code_judge(self.cfg.referee):
            return [code_judgement(self.cfg.referee, pools.answers[item.id], answer, item.gold) for item, answer in judged_items]
        # the teacher's answer is a, the student's b
        judged = await both_orders(self.rt, self.cfg.referee, f"iter {it}: referee, both orders", self.t_referee,
                                   [(item.instruction, pools.answers[item.id], answer) for item, answer in judged_items],
                                   self.cfg.referee_sampling, meter)
        out: list[Judgement | None] = []
        for (item, _), j in zip(judged_items, judged):
            if not isinstance(j, Judgement):
                failed.append(failed_row(item, j, "referee"))
            out.append(j if isinstance(j, Judgement) else None)
        return out

    async def dpo_phase(self, it: int, judged: list[DiscriminationRow], checkpoint: str | None, stats: LionIteration) -> str | None:
        """Optional: DPO on this iteration's teacher-over-student pairs (no extra teacher calls)."""
        if self.cfg.dpo is None or checkpoint is None:
            return checkpoint
        pairs = teacher_vs_student_pairs(judged, self.cfg.tau)
        stats.dpo_pairs = len(pairs)
        if not pairs:
            stats.dpo = "skipped: no pairs"
            return checkpoint
        out, stats.dpo = await train_checkpoint(self.rt, self.cfg.name, self.cfg, f"iter{it}-dpo", kind="dpo", rows=pairs, base=checkpoint,
                                                   trainer_args=self.cfg.dpo, lora=self.cfg.lora,
                                                   note=f"iteration {it}: DPO on {len(pairs)} teacher-over-student pairs")
        return str(out)

    async def generation(self, it: int, pools: Pools, judged: list[DiscriminationRow], stats: LionIteration, meter: Meter) -> None:
        """Write N new instructions (hard:easy at the configured ratio), filter, answer, add to pools."""
        index = RougeIndex(self.cfg.rouge_threshold, [x.instruction for x in pools.cache])
        by_id = {x.id: x for x in pools.cache}
        hard_seeds = [by_id[r.id] for r in judged if r.hard]
        easy_seeds = [by_id[r.id] for r in judged if not r.hard]
        n_hard, n_easy = steps.split_target(self.cfg.new_per_iteration, self.cfg.hard_fraction)
        kept: list[NewInstruction] = []
        rejected: list[FailedRow] = []
        reasons: dict[str, int] = {}
        tally = steps.GenerationYield(mode=self.cfg.generation_mode)
        kinds = [_Kind("hard", hard_seeds, n_hard, self.t_hard), _Kind("easy", easy_seeds, n_easy, self.t_easy)]
        for rnd in range(self.cfg.generation_rounds):
            # One batch of calls a round for both kinds: a round's latency is paid once, and the served teacher batches
            # more requests. Replies are read in a fixed order (hard, then easy), so what is kept does not depend on
            # which reply came first.
            asks: list[tuple[_Kind, Item, Call, int | None, int]] = []
            for k in kinds:
                ask = steps.calls_to_ask(k.target - k.got, self.cfg.generation_oversample)
                if ask == 0 or not k.seeds:
                    continue
                rng = self._rng(it, k.kind, rnd)
                chosen = steps.pick_seeds(k.seeds, ask, rng)
                # The sample index counts on across iterations: a seed drawn again at the same slot in a later iteration
                # is a new sample, not the cached reply of an earlier one (whose instruction is in the pools already).
                first = (it - 1) * ITERATION_SAMPLES + k.slot
                for i, seed in enumerate(chosen):
                    call, max_words = self._generation_call(k.kind, k.template, seed, k.seeds, rng, first + i)
                    asks.append((k, seed, call, max_words, k.slot + i))
                k.slot += ask
            if not asks:
                break
            what = " and ".join(dict.fromkeys(k.kind for k, *_ in asks))
            results = await self._calls(self.cfg.teacher, f"iter {it}: generate {what} (round {rnd + 1})", [a[2] for a in asks], meter)
            for (k, seed, _, max_words, slot), res in zip(asks, results):
                text, reason = self._read_generated(res, max_words, index)
                tally.count(reason)
                new_id = f"{self.cfg.name}-it{it}-{k.kind}-{slot:05d}"
                if reason is None and k.got >= k.target:
                    reason = "surplus"  # usable, but the kind's target is met
                if reason is None:
                    index.add(text or "")
                    kept.append(NewInstruction(Item(new_id, text or "", family=seed.family, origin=f"iter{it}-{k.kind}"), k.kind, seed))
                    k.got += 1
                else:
                    reasons[reason] = reasons.get(reason, 0) + 1
                    rejected.append(FailedRow.of({"id": new_id, "kind": k.kind, "seed_id": seed.id, "seed_instruction": seed.instruction,
                                                  "family": seed.family}, reason, detail=res.detail, raw=res.text))
        for k in kinds:
            setattr(stats, f"new_{k.kind}", k.got)
            setattr(stats, f"seeds_{k.kind}", len(k.seeds))
        stats.generation_rejected = reasons
        stats.generation_yield = tally
        await self.add_new(it, pools, kept, rejected, reasons, stats, meter, "new instructions (hard and easy)")

    def _generation_call(self, kind: str, template: Prompt, seed: Item, seeds: list[Item], rng: random.Random,
                         sample: int) -> tuple[Call, int | None]:
        """One generation call from `seed`, and the word cap its reply must keep (list mode), or None.

        json: the seed alone in the kind's template, a JSON reply under the schema. list: the seed among
        fewshot_examples instructions of its family and kind, as a list the teacher continues in plain text."""
        if self.t_list is None:
            prompt = template.render(seed_instruction=seed.instruction)
            return Call(messages=user(prompt), sampling=self.cfg.generation_sampling,
                        schema=new_instruction_model(self.cfg.max_instruction_chars), sample=sample), None
        examples = [steps.one_line(x.instruction) for x in steps.fewshot(seed, seeds, self.cfg.fewshot_examples, rng)]
        prompt = self.t_list.render(examples=examples, kind=kind, family=seed.family)
        cap = int(self.cfg.fewshot_length_ratio * max(len(x.split()) for x in examples))
        return Call(messages=user(prompt), sampling=self.list_sampling, sample=sample), cap

    def _read_generated(self, res: Result, max_words: int | None, index: RougeIndex) -> tuple[str | None, str | None]:
        """(the new instruction in a generation reply, why it is rejected or None); max_words: list mode's cap."""
        if max_words is None:
            text = res.parsed.instruction.strip() if res.ok and res.parsed is not None else None
            return text, steps.reject_reason(res, text, self.cfg.min_words, index, heldout=self.heldout_filter)
        text, more = steps.list_item(res.text if res.ok else None)
        if res.ok and res.truncated and not more:
            return text, "truncated"  # cut by max_tokens before the line ended
        if text is not None and len(text) > self.cfg.max_instruction_chars:
            return text, "too_long"
        return text, steps.reject_reason(res, text, self.cfg.min_words, index, heldout=self.heldout_filter, max_words=max_words)

    async def add_new(self, it: int, pools: Pools, kept: list[NewInstruction], rejected: list[FailedRow], reasons: dict[str, int],
                      stats: LionIteration, meter: Meter, what: str) -> None:
        """The teacher answers the iteration's new instructions; those answered join both pools and the `generated` dataset."""
        await self.teacher_answers(pools, [x.item for x in kept], meter, f"iter {it}: teacher answers new instructions")
        answered = [x for x in kept if x.item.id in pools.answers]
        pools.train.extend(x.item for x in answered)
        pools.cache.extend(x.item for x in answered)
        stats.new_instructions = len(answered)
        out_rows = [x.row(pools.answers[x.item.id]) for x in answered]
        self.out.dataset(f"iter{it}.generated", out_rows, rejected, row_type=GeneratedRow,
                         counts={"iteration": it, **{f"rejected_{k}": v for k, v in reasons.items()}},
                         fmt="sft (messages)", description=f"Lion iteration {it}: {what} with teacher answers.")

    async def draw_from_pool(self, it: int, pools: Pools, stats: LionIteration, meter: Meter) -> None:
        """new_from: pool: N instructions drawn uniformly at random from the pool stage, none already drawn or in the pools."""
        known = {x.instruction for x in pools.cache}
        candidates = [x for x in self.undrawn if x.instruction not in known]
        target = self.cfg.new_per_iteration
        drawn = self._rng(it, "pool").sample(candidates, min(target, len(candidates)))
        taken = {x.id for x in drawn}
        self.undrawn = [x for x in self.undrawn if x.id not in taken]
        kept = [NewInstruction(Item(f"{self.cfg.name}-it{it}-pool-{i:05d}", x.instruction, origin=f"iter{it}-pool"), "pool", x)
                for i, x in enumerate(drawn)]
        stats.generation = f"drawn uniformly from stage {self.cfg.pool!r} (new_from: pool)"
        stats.pool_drawn, stats.pool_exhausted = len(drawn), len(drawn) < target
        if len(drawn) < target:
            self.rt.reporter.note(f"[lion] iteration {it}: the pool stage {self.cfg.pool!r} had {len(drawn)} instruction(s) left to draw, "
                                  f"not {target}")
        await self.add_new(it, pools, kept, [], {}, stats, meter, f"instructions drawn from stage {self.cfg.pool!r}")

    def skip_generation(self, it: int, stats: LionIteration) -> None:
        """final_generation: false: no new instructions after the last imitation (nothing would train on them)."""
        stats.generation, stats.new_instructions = "skipped: final_generation is false", 0
        # Written empty, so no `generated` dataset of an earlier run with final_generation: true stays beside this one.
        self.out.dataset(f"iter{it}.generated", [], row_type=GeneratedRow, counts={"iteration": it}, fmt="sft (messages)",
                         description=f"Lion iteration {it}: no new instructions (final_generation: false).")

