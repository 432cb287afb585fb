"""The Montessori-Instruct driver (Li, Yu and Xiong, ICLR 2025), K iterations of:

    synthesis:  the teacher sees k example instructions per prompt (seeds; later 6 seeds + 2
                generated) and writes n candidates; filters; the responder answers each
    signal:     each candidate's local data influence on the warmed-up student (restore, one
                step, reference loss: negative helps), or its first-order estimate; or a judge
                score, or the student's in-context accuracy with it as the demonstration (ARTE)
    pairs:      per prompt, helpful candidates chosen over harmful ones (the teacher's own outputs)
    teacher:    DPO (LoRA by default, merged) toward the helpful outputs, served by vLLM
    student:    the tuned teacher writes the final set; SFT of the student on it
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from synthkd.chat import answer_call, sft_example, user
from synthkd.client.accounting import Meter
from synthkd.client.endpoint import Call
from synthkd.montessori.config import MontessoriStage
from synthkd.judging import pointwise_call
from synthkd.lion.schemas import new_instruction_model
from synthkd.montessori import pairs as mp
from synthkd.rouge import RougeIndex
from synthkd.hashing import digest
from synthkd.runtime import Runtime
from synthkd.client.endpoint import Result
from synthkd.montessori.pairs import Candidate, CandidateRow, TeacherPair
from synthkd.montessori.stage import MontessoriIteration, MontessoriRow, Signal, Synthesis
from synthkd.stages.training import train_checkpoint
from synthkd.records import FailedRow
from synthkd.stages.base import StageResult, failed_row
from synthkd.stages.outlet import StageOutlet


class MontessoriRun:
    """One `montessori` stage execution."""

    def __init__(self, cfg: MontessoriStage, rt: Runtime, out: StageOutlet | None, seeds: list[dict[str, Any]],
                 reference: list[dict[str, Any]], probe: list[dict[str, Any]]) -> None:
        # `out` is None only where no stage runs (the influence tests call the signal alone).
        self.cfg, self.rt, self.out = cfg, rt, out
        self.seeds = [str(r["instruction"]) for r in seeds]
        self.reference = [{"messages": sft_example(str(r["instruction"]), str(r["response"]))} for r in reference]
        self.probe = [{"question": str(r["question"]), "answer": str(r["answer"])} for r in probe]
        self.generated: list[str] = []
        self.prompts: dict[str, list[dict[str, str]]] = {}
        self.failed: list[FailedRow] = []  # calls that failed, with their step and reason (failed.jsonl)

    @property
    def t_answer(self) -> Any:
        """The responder's prompt (looked up when used: the influence tests build a run without prompts)."""
        return self.rt.prompts.get(self.cfg.answer_template)

    def _fail(self, it: int, step: str, row: dict[str, Any], res: Result) -> None:
        self.failed.append(failed_row(row, res, step, iteration=it))

    async def run(self) -> StageResult:
        meter = Meter()
        teacher_weights = self.rt.current_weights(self.cfg.teacher)
        final_rows: list[MontessoriRow] = []
        student_checkpoint: str | None = None
        warmup = await self.warmup_set(meter)
        for it in range(1, self.cfg.iterations + 1):
            stats = MontessoriIteration(iteration=it, teacher_weights=teacher_weights)
            self.rt.serve_weights(self.cfg.teacher, teacher_weights)  # type: ignore[arg-type]
            candidates = await self.synthesize(it, "probe", self.cfg.synthesis.prompts, meter, stats)
            await self.signal(it, candidates, warmup, meter, stats)
            pairs = mp.build_pairs(self.groups(candidates), self.cfg.max_pairs_per_prompt)
            stats.pairs = len(pairs)
            assert self.out is not None
            self.out.dataset(f"iter{it}.candidates", [c.row() for c in candidates],
                             [f for f in self.failed if f.value("iteration") == it], row_type=CandidateRow,
                             fmt="sft (messages)", description=f"Montessori iteration {it}: candidates with their signal.")
            self.out.dataset(f"iter{it}.pairs", pairs, row_type=TeacherPair, fmt="preference (prompt/chosen/rejected)",
                             description=f"Montessori iteration {it}: the teacher's helpful outputs chosen over harmful ones, per prompt.")
            teacher_weights = await self.tune_teacher(it, pairs, teacher_weights, stats)  # type: ignore[arg-type]
            self.rt.serve_weights(self.cfg.teacher, teacher_weights)
            final = await self.synthesize(it, "final", self.cfg.final_prompts, meter, stats)
            stats.final_set = len(final)
            final_rows = [MontessoriRow(id=c.id, instruction=c.instruction, messages=c.messages, iteration=it) for c in final]
            self.out.dataset(f"iter{it}.final", final_rows, row_type=MontessoriRow, fmt="sft (messages)",
                             description=f"Montessori iteration {it}: the tuned teacher's training set for the student.")
            stats.student_sft, student_checkpoint = await self.train_student(it, final_rows)
            stats.failed = sum(1 for f in self.failed if f.value("iteration") == it)
            self.out.iteration(stats)
            self.rt.reporter.note(f"[{self.cfg.name}] iteration {it}: {len(candidates)} candidates, {len(pairs)} pairs, final set {len(final)}")
        # The teacher stays on its tuned weights; a served student endpoint moves onto the trained student.
        moves = {self.cfg.teacher: teacher_weights}
        if student_checkpoint and self.rt.config.endpoints[self.cfg.student].served:
            moves[self.cfg.student] = student_checkpoint
        return StageResult(rows=final_rows, failed=self.failed, meter=meter, moves=moves)

    async def warmup_set(self, meter: Meter) -> list[dict[str, Any]]:
        seeds = self.seeds[: self.cfg.warmup_size]
        results = await self.rt.call_all(self.cfg.responder, f"{self.cfg.name}: responder answers the warm-up set",
                                         [answer_call(self.t_answer, s, self.cfg.answer_sampling) for s in seeds], meter)
        for s, r in zip(seeds, results):
            if not (r.ok and r.text and r.text.strip()):
                self._fail(0, "warmup_answer", {"instruction": s}, r)
        return [{"messages": sft_example(s, r.text.strip())}
                for s, r in zip(seeds, results) if r.ok and r.text and r.text.strip()]

    async def synthesize(self, it: int, phase: str, n_prompts: int, meter: Meter, stats: MontessoriIteration) -> list[Candidate]:
        """Kept candidates with responder answers (the prompts are kept in self.prompts)."""
        s = self.cfg.synthesis
        template = self.rt.prompts.get(s.template)
        schema = new_instruction_model(s.max_instruction_chars)
        calls, owners, prompts = [], [], []
        for p in range(n_prompts):
            rng = random.Random(digest([self.rt.config.seed, self.cfg.name, it, phase, p]))
            n_gen = s.k_generated if len(self.generated) >= s.k_generated else 0
            examples = rng.sample(self.seeds, min(s.k - n_gen, len(self.seeds))) + (rng.sample(self.generated, n_gen) if n_gen else [])
            messages = user(template.render(examples=examples))
            prompts.append(messages)
            for j in range(s.n):
                calls.append(Call(messages=messages, sampling=s.sampling, schema=schema, sample=j))
                owners.append((p, j))
        results = await self.rt.call_all(self.cfg.teacher, f"{self.cfg.name}: iter {it} {phase} synthesis", calls, meter)
        index = RougeIndex(s.rouge_threshold, self.seeds + self.generated)
        reasons: dict[str, int] = {}
        kept: list[Candidate] = []
        for (p, j), res in zip(owners, results):
            text = res.parsed.instruction.strip() if res.ok and res.parsed is not None else None
            reason = (res.error if not res.ok else None) or mp.filter_reason(text, s.min_words, s.max_words, s.banned_words) or ("rouge_l" if index.too_similar(text or "") else None)
            if reason:
                reasons[reason] = reasons.get(reason, 0) + 1
                if not res.ok:
                    self._fail(it, f"{phase}_synthesis", {"prompt_id": f"it{it}-{phase}-p{p:04d}", "sample": j}, res)
                continue
            index.add(text or "")
            kept.append(Candidate(f"it{it}-{phase}-p{p:04d}-s{j}", f"it{it}-{phase}-p{p:04d}", text or "", res.text))
        answers = await self.rt.call_all(self.cfg.responder, f"{self.cfg.name}: iter {it} {phase} responder",
                                         [answer_call(self.t_answer, c.instruction, self.cfg.answer_sampling) for c in kept], meter)
        answered = []
        for c, a in zip(kept, answers):
            if not (a.ok and a.text and a.text.strip()):
                self._fail(it, f"{phase}_responder", {"id": c.id, "prompt_id": c.prompt_id, "instruction": c.instruction}, a)
            else:
                c.messages = sft_example(c.instruction, a.text.strip())
                answered.append(c)
        self.generated.extend(c.instruction for c in answered)
        setattr(stats, f"{phase}_synthesis", Synthesis(sampled=len(calls), kept=len(kept), answered=len(answered), rejected=reasons))
        self.prompts = {f"it{it}-{phase}-p{p:04d}": m for p, m in enumerate(prompts)}
        return answered

    def groups(self, candidates: list[Candidate]) -> list[mp.PromptGroup]:
        """Candidates grouped by the prompt that produced them."""
        by_prompt: dict[str, list[Candidate]] = {}
        for c in candidates:
            by_prompt.setdefault(c.prompt_id, []).append(c)
        return [mp.PromptGroup(pid, self.prompts[pid], cs) for pid, cs in by_prompt.items()]

    async def signal(self, it: int, candidates: list[Candidate], warmup: list[dict[str, Any]], meter: Meter, stats: MontessoriIteration) -> None:
        """Set `signal` and `utility` (higher = better for the student) on each candidate."""
        probe = candidates[: self.cfg.probe_size] if self.cfg.probe_size else candidates
        if self.cfg.signal == "influence":
            raw = await asyncio.to_thread(self._influence, [{"messages": c.messages} for c in probe], warmup)
            utilities = [mp.utility_from_influence(v) for v in raw]
        elif self.cfg.signal == "judge":
            calls = [pointwise_call(self.rt.prompts.get(self.cfg.judge_template), c.instruction, c.messages[1]["content"], self.cfg.answer_sampling) for c in probe]
            results = await self.rt.call_all(self.cfg.judge, f"{self.cfg.name}: iter {it} judge", calls, meter)
            for c, r in zip(probe, results):
                if not r.ok:
                    self._fail(it, "judge", {"id": c.id, "prompt_id": c.prompt_id, "instruction": c.instruction}, r)
            # A failed judge call leaves its candidate unmeasured (neither chosen nor rejected), not scored mid-scale.
            raw = [float(r.parsed.score) if r.ok else None for r in results]
            utilities = [mp.utility_from_judge(v) if v is not None else 0.0 for v in raw]
        else:
            raw = await self._icl_accuracy(it, probe, meter)
            baseline = raw.pop()
            utilities = [mp.utility_from_icl(v, baseline) for v in raw]
            stats.icl_baseline = baseline
        for c, v, u in zip(probe, raw, utilities):
            c.signal, c.utility = v, u
        for c in candidates[len(probe):]:
            c.signal, c.utility = None, 0.0  # not measured: neither chosen nor rejected
        summary = mp.distribution([v for v in raw if v is not None])
        stats.signal = Signal(**summary.model_dump(), kind=self.cfg.signal)
        if self.cfg.signal == "influence":
            stats.signal.method = self.cfg.influence
            if self.cfg.influence == "first_order":
                stats.signal.params, stats.signal.projection_dim = self.cfg.influence_params, self.cfg.influence_projection_dim

    def _influence(self, probe: list[dict[str, Any]], warmup: list[dict[str, Any]]) -> list[float]:
        from synthkd.montessori.influence import InfluenceModel

        base = self.rt.servers.resolve_model_path(self.cfg.student_model)
        model = InfluenceModel(base, learning_rate=self.cfg.influence_lr, optimizer=self.cfg.influence_optimizer, seed=self.rt.config.seed)
        if warmup:
            model.warmup(warmup, epochs=self.cfg.warmup_epochs, learning_rate=self.cfg.warmup_lr)
        if self.cfg.influence == "exact":
            return model.exact(probe, self.reference)
        return model.first_order(probe, self.reference, params=self.cfg.influence_params, projection_dim=self.cfg.influence_projection_dim)

    async def _icl_accuracy(self, it: int, probe: list[Candidate], meter: Meter) -> list[float]:
        """Accuracy on the probe questions with each candidate as the demonstration; last: none."""
        from synthkd.answers import answers_match, extract_final_answer

        demos: list[list[dict[str, str]]] = [c.messages for c in probe] + [[]]
        calls = [Call(messages=demo + user(q["question"]), sampling=self.cfg.answer_sampling) for demo in demos for q in self.probe]
        results = await self.rt.call_all(self.cfg.student, f"{self.cfg.name}: iter {it} in-context accuracy", calls, meter)
        n = len(self.probe)
        out = []
        for d in range(len(demos)):
            chunk = results[d * n : (d + 1) * n]
            out.append(sum(answers_match(extract_final_answer(r.text or ""), q["answer"]) for r, q in zip(chunk, self.probe)) / n if n else 0.0)
        return out

    async def tune_teacher(self, it: int, pairs: list[mp.TeacherPair], weights: str, stats: MontessoriIteration) -> str:
        if not pairs:
            stats.teacher_dpo = "skipped: no pairs"
            return weights
        out, stats.teacher_dpo = await train_checkpoint(
            self.rt, self.cfg.name, self.cfg, f"teacher-iter{it}", kind="dpo", rows=pairs, base=weights, trainer_args=self.cfg.dpo,
            lora=self.cfg.lora, evaluate_before=True, note=f"iteration {it}: teacher DPO on {len(pairs)} pairs")
        return str(out)

    async def train_student(self, it: int, rows: list[MontessoriRow]) -> tuple[Any, str | None]:
        """(metrics, checkpoint) of the student's SFT on the final set."""
        if not rows:
            return "skipped: empty final set", None
        # lora is the teacher's (its DPO); the student is fine-tuned in full.
        out, metrics = await train_checkpoint(self.rt, self.cfg.name, self.cfg, f"student-iter{it}", kind="sft", rows=rows,
                                              base=self.cfg.student_model, trainer_args=self.cfg.sft, lora=None,
                                              note=f"iteration {it}: SFT of the student on {len(rows)} examples")
        return metrics, str(out)

