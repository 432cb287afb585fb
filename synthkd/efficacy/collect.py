"""Reading the efficacy runs back: each arm's answers and per-prompt scores, its teacher spend (from the request
cache: what was paid, once per reply, whatever crashes and resumes happened), optimizer steps, distinct training
examples and wall time (from run.json)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthkd.client.cache import RequestCache
from synthkd.efficacy import arms as A
from synthkd.efficacy.compare import nll_pairs, prompt_scores
from synthkd.efficacy.probes import Spend
from synthkd.efficacy.result import ArmResult, ArmSpend, GenerationYield, Reference, ReferenceSet, Training
from synthkd.items import Item
from synthkd.records import Interval
from synthkd.models.resolve import resolve_model
from synthkd.outputs import is_done_any, load_output
from synthkd.scoring.metrics import summary
from synthkd.settings import Settings


def _state(run: Path) -> dict[str, Any]:
    """run.json's stage blocks as written (read loosely: the stage types differ in what they record)."""
    path = run / "run.json"
    return dict(json.loads(path.read_text()).get("stages", {})) if path.is_file() else {}


def _weights(state: Mapping[str, Any], stage: str) -> str | None:
    """The student weights an eval stage served, from its run.json block."""
    return ((state.get(stage) or {}).get("eval") or {}).get("student_weights")


def teacher_spend(run: Path) -> Spend:
    """What the run paid the teacher (every reply in its cache was paid exactly once)."""
    path = run / "cache.sqlite"
    if not path.is_file():
        return Spend(0, 0, 0, 0.0)
    cache = RequestCache(path)
    try:
        return Spend(*cache.totals("teacher"))
    finally:
        cache.close()


@dataclass
class ArmRead:
    """What one arm's runs hold: its entry (seeds, spend, training) and, once every seed has been evaluated on every
    set, its per-prompt scores (`scores[set][metric]`: one list per seed) and the first seed's answers per set."""

    entry: ArmResult
    scores: dict[str, dict[str, list[list[float]]]] | None = None
    answers: dict[str, dict[str, str]] | None = None


class ArmReader:
    """Reads DIR/runs for the arms of one comparison."""

    def __init__(self, runs: Path, cx: A.Context, settings: Settings, corpus_root: Path) -> None:
        self.runs, self.cx, self.settings, self.corpus_root = runs, cx, settings, corpus_root

    def run_dir(self, arm: A.Arm, seed: int) -> Path:
        return self.runs / (arm.run if arm.run == "kd" else f"{arm.run}.s{seed}") / "run"

    def seeds(self, arm: A.Arm) -> list[int]:
        o = self.cx.opts
        assert o.baseline_seeds is not None and o.arm_seeds is not None
        if arm.name == "kd":
            return list(range(o.baseline_seeds))
        if arm.name in A.DPO_GROUP:
            return list(range(min(o.arm_seeds, o.baseline_seeds)))
        return list(range(o.arm_seeds))

    def nll(self, weights: str | None, pairs: list[tuple[str, str]]) -> list[float] | None:
        """Per-prompt NLL of the teacher's answers under `weights` (remembered on disk by weights and pairs)."""
        if not weights or not pairs:
            return None
        from synthkd.scoring.nll import cached_answer_nll

        path = resolve_model(weights, self.settings.home, self.corpus_root)
        return cached_answer_nll(path, pairs, self.settings.home / "nll")

    # ---- reference -------------------------------------------------------------------------
    def reference(self, run: Path, sets: dict[str, list[Item]]) -> tuple[dict[str, dict[str, str]], Reference]:
        """The teacher's answers per set (the reference for ROUGE-L and NLL), and the floor and ceiling figures."""
        state = _state(run)
        teacher: dict[str, dict[str, str]] = {}
        out = Reference(cost_usd=teacher_spend(run).cost_usd)
        for name, items in sets.items():
            stage = f"reference.{name}"
            if not is_done_any(run, stage):
                continue
            rows = {str(r["id"]): r for r in load_output(run, stage)}
            teacher[name] = {i: str(r.get("teacher_answer") or "") for i, r in rows.items()}
            floor = {i: str(r.get("student_answer") or "") for i, r in rows.items()}
            t_scores = prompt_scores(items, teacher[name], teacher[name])
            f_scores = prompt_scores(items, floor, teacher[name])
            entry = ReferenceSet(n=len(items), gold_n=sum(1 for x in items if x.gold is not None))
            for metric in ("gold_accuracy", "rouge_l"):
                if t_scores[metric]:
                    entry.teacher[metric] = Interval.model_validate(summary(t_scores[metric]))
                    entry.floor[metric] = Interval.model_validate(summary(f_scores[metric]))
            values = self.nll(_weights(state, stage), nll_pairs(items, teacher[name]))
            if values:
                entry.floor["nll"] = Interval.model_validate(summary(values))
            out.sets[name] = entry
        return teacher, out

    # ---- an arm ------------------------------------------------------------------------------
    def arm(self, arm: A.Arm, sets: dict[str, list[Item]], teacher: dict[str, dict[str, str]], with_nll: bool) -> ArmRead | None:
        """The arm's entry with its scores and answers once every seed has been evaluated on every set; the entry
        alone while some are missing; None before any of its runs exists."""
        seeds = self.seeds(arm)
        scores: dict[str, dict[str, list[list[float]]]] = {s: {} for s in sets}
        answers: dict[str, dict[str, str]] = {}
        complete = True
        for seed in seeds:
            run = self.run_dir(arm, seed)
            state = _state(run)
            for name, items in sets.items():
                stage = A.eval_name(arm.name, seed, name)
                if not is_done_any(run, stage) or name not in teacher:
                    complete = False
                    continue
                got = {str(r["id"]): str(r.get("student_answer") or "") for r in load_output(run, stage)}
                if seed == seeds[0]:
                    answers[name] = got
                for metric, values in prompt_scores(items, got, teacher[name]).items():
                    scores[name].setdefault(metric, []).append(values)
                if with_nll:
                    values = self.nll(_weights(state, stage), nll_pairs(items, teacher[name]))
                    if values:
                        scores[name].setdefault("nll", []).append(values)
        entry = ArmResult(seeds=seeds, spend=self.spend(arm, seeds), training=self.training(arm, seeds))
        if not complete:
            return None if not any(self.run_dir(arm, s).is_dir() for s in seeds) else ArmRead(entry)
        for metrics in scores.values():  # NLL only where every seed has it (the paired statistics need aligned runs)
            if "nll" in metrics and len(metrics["nll"]) != len(seeds):
                del metrics["nll"]
        return ArmRead(entry, scores, answers)

    def spend(self, arm: A.Arm, seeds: list[int]) -> ArmSpend:
        """Teacher spend per seed's run (mean over seeds), against the cap, with the paid calls never trained on."""
        out = ArmSpend(cap_usd=self.cx.budget_usd, max_cost_usd=0.0)
        if not seeds:
            return out
        rows = []
        for seed in seeds:
            run = self.run_dir(arm, seed)
            paid = teacher_spend(run)
            untrained = max(0, paid.calls - self._trained_calls(arm, run, seed))
            rows.append((paid, untrained, paid.cost_usd * untrained / paid.calls if paid.calls else 0.0))
        n = len(rows)
        out.calls = sum(p.calls for p, _, _ in rows) / n
        out.input_tokens = sum(p.input_tokens for p, _, _ in rows) / n
        out.output_tokens = sum(p.output_tokens for p, _, _ in rows) / n
        out.cost_usd = sum(p.cost_usd for p, _, _ in rows) / n
        out.untrained_calls = sum(u for _, u, _ in rows) / n
        out.untrained_usd = sum(u for _, _, u in rows) / n
        out.max_cost_usd = max(p.cost_usd for p, _, _ in rows)
        return out

    def _trained_calls(self, arm: A.Arm, run: Path, seed: int) -> int:
        """Teacher replies that reached a training example: an answer trained on, and the generation call that wrote a
        kept instruction (Lion's rejected candidates and any answer that failed are paid and untrained)."""
        if arm.kind == "lion":
            if not is_done_any(run, arm.name):
                return 0
            rows = load_output(run, arm.name)
            generated = sum(1 for r in rows if r.get("origin") != "seed") if arm.generates else 0
            return len(rows) + generated
        stage = f"{arm.run}.answers"
        return len(load_output(run, stage)) if is_done_any(run, stage) else 0

    def training(self, arm: A.Arm, seeds: list[int]) -> Training:
        """Optimizer steps, distinct training examples and the wall time of the arm's own stages (mean over seeds)."""
        steps, examples, wall, gen_calls, gen_usable = [], [], [], [], []
        for seed in seeds:
            st = _state(self.run_dir(arm, seed))
            evals = [A.eval_name(arm.name, seed, s.name) for s in self.cx.heldout]
            if arm.kind == "kd":
                sft = st.get(f"{arm.name}.s{seed}.sft") or {}
                own = [f"{arm.name}.answers", f"{arm.name}.s{seed}.sft"]
                steps.append(int(sft.get("steps") or 0))
                examples.append(int(sft.get("examples") or 0))
            elif arm.kind == "dpo":
                base = st.get(f"kd.s{seed}.sft") or {}
                stage = f"{arm.name}.s{seed}.sft" if arm.name == "kd_more_sft" else f"{arm.name}.s{seed}.dpo"
                entry = st.get(stage) or {}
                its = [i for i in entry.get("iterations") or [] if isinstance(i, dict)]
                extra = int(entry.get("steps") or 0) if arm.name == "kd_more_sft" else sum(
                    int((i.get("dpo") or {}).get("steps") or 0) for i in its if isinstance(i.get("dpo"), dict))
                pairs = sum(int(i.get("pairs_mined") or 0) for i in its)
                own = [stage]
                steps.append(int(base.get("steps") or 0) + extra)
                examples.append(int(base.get("examples") or 0) + pairs)
            else:
                entry = st.get(arm.name) or {}
                its = [i for i in entry.get("iterations") or [] if isinstance(i, dict)]
                own = [arm.name]
                steps.append(sum(int((i.get("sft") or {}).get("steps") or 0) for i in its if isinstance(i.get("sft"), dict)))
                examples.append(int(entry.get("records_out") or 0))
                yields = [i["generation_yield"] for i in its if isinstance(i.get("generation_yield"), dict)]
                if yields:  # Lion's generation calls and how many gave a usable instruction (the mode's yield)
                    gen_calls.append(sum(int(y.get("calls") or 0) for y in yields))
                    gen_usable.append(sum(int(y.get("usable") or 0) for y in yields))
            wall.append(sum(float((st.get(s) or {}).get("elapsed_s") or 0.0) for s in own + evals))
        n = max(1, len(seeds))
        out = Training(steps=round(sum(steps) / n), steps_per_seed=steps, examples=round(sum(examples) / n), wall_s=round(sum(wall) / n, 1))
        if gen_calls:
            out.generation = GenerationYield(calls=sum(gen_calls), usable=sum(gen_usable),
                                             share=round(sum(gen_usable) / sum(gen_calls), 4) if sum(gen_calls) else None)
        return out
