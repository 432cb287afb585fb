"""Probes: minutes of calls that say, before the budget is spent, what each arm can expect from this teacher and student.

- answer cost: the teacher's greedy answers to a sample of pool prompts; their measured price per call sizes every arm.
- generator yield: of N generation calls (Lion's "harder task" prompt, its schema and its filters), how many give a
  usable new instruction, and what one costs. Too few, and Lion and its control are skipped, with the figure.
- student competence: the untrained student against the teacher on the same prompts (Lion's ROUGE-L referee): the
  fraction the referee would call hard. Near 1, discrimination has nothing to choose between.
- best-of-n headroom: on pool prompts with gold, the teacher's greedy pass@1 against pass@n of n sampled answers: the
  room a best-of-n method would have (such an arm does not exist yet; the figure tells whether it could pay).
- judge sanity: the arms use a code referee (ROUGE-L against the teacher), which needs no check.
Every call goes through the request cache of DIR/probes, so a rerun pays for nothing twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthkd.chat import answer_call, user
from synthkd.client.accounting import Meter
from synthkd.client.calls import Call
from synthkd.config.endpoints import Sampling
from synthkd.efficacy.arms import ARMS
from synthkd.efficacy.options import EfficacyOptions
from synthkd.efficacy.result import AnswerCost, BestOfNProbe, GeneratorProbe, Probe, Probes, StudentCompetence
from synthkd.items import Item
from synthkd.lion import steps
from synthkd.lion.schemas import new_instruction_model
from synthkd.rouge import RougeIndex
from synthkd.scoring.code_judge import code_judgement
from synthkd.scoring.metrics import gold_match

MIN_YIELD = 0.25  # below this share of usable new instructions, Lion would spend its budget on rejects
HARD_CEILING = 0.95  # above this hard fraction, the referee calls nearly everything hard


@dataclass
class Spend:
    """What a probe's replies cost."""

    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float

    @property
    def per_call(self) -> float:
        return self.cost_usd / self.calls if self.calls else 0.0


async def _priced(rt: Any, calls: list[Call]) -> Spend:
    """What the teacher's replies to `calls` cost, read from the cache: the same figure on a rerun, when every reply
    is a cache hit, as when they were paid for."""
    client = await rt.client("teacher")
    replies = [rt.cache.get(client.request_for(call, 0)[0]) for call in calls]
    paid = [r for r in replies if r is not None]
    return Spend(len(paid), sum(r.prompt_tokens for r in paid), sum(r.completion_tokens for r in paid), sum(r.cost for r in paid))


async def run_probes(rt: Any, opts: EfficacyOptions, pool: list[Item]) -> Probes:
    """Every probe's figures (each with a `status`, a one-line `summary` and its own figures)."""
    rng = random.Random(f"efficacy-probes-{rt.config.seed}")
    sample = rng.sample(pool, min(opts.probe_prompts, len(pool)))
    answer_t = rt.prompts.get("common/answer.jinja2")
    greedy = Sampling(temperature=0.0, max_tokens=opts.max_tokens)
    meter = Meter()
    out = Probes()

    calls = [answer_call(answer_t, x.instruction, greedy) for x in sample]
    teacher = await rt.call_all("teacher", "probe: teacher answers", calls, meter)
    spend = await _priced(rt, calls)
    answers = {x.id: (r.text or "").strip() for x, r in zip(sample, teacher) if r.ok}
    gold = [x for x in sample if x.gold is not None and x.id in answers]
    out.answer_cost = AnswerCost(
        status="ok" if answers else "failed", calls=len(sample), answered=len(answers),
        mean_cost_usd=spend.per_call, mean_input_tokens=spend.input_tokens / max(1, spend.calls),
        mean_output_tokens=spend.output_tokens / max(1, spend.calls),
        teacher_gold_accuracy=sum(gold_match(answers[x.id], x.gold) for x in gold if x.gold is not None) / len(gold) if gold else None,
        summary=f"the teacher answered {len(answers)}/{len(sample)} pool prompts at ${spend.per_call:.3g} per call "
                f"({spend.input_tokens / max(1, spend.calls):.0f} input, {spend.output_tokens / max(1, spend.calls):.0f} output tokens)",
    )

    student = await rt.call_all("student", "probe: untrained student answers", [answer_call(answer_t, x.instruction, greedy) for x in sample], meter)
    judged = [(answers[x.id], (r.text or "").strip()) for x, r in zip(sample, student) if r.ok and x.id in answers]
    hard = sum(1 for t, s in judged if steps.is_hard(code_judgement("code:rouge_l", t, s, None), opts.tau))
    frac = hard / len(judged) if judged else None
    out.student_competence = StudentCompetence(
        status="ok" if judged else "failed", judged=len(judged), hard_fraction=frac,
        summary=(f"the referee (ROUGE-L, tau {opts.tau:g}) calls {hard}/{len(judged)} prompts hard for the untrained student"
                 + ("; discrimination has almost nothing to choose between, so Lion is expected to behave like its control"
                    if frac is not None and frac >= HARD_CEILING else "")),
    )

    out.generator_yield = await _generator_yield(rt, opts, pool, sample, meter)
    out.best_of_n = await _best_of_n(rt, opts, gold, answers, answer_t, meter)
    out.judge_sanity = Probe(status="skipped", summary="not needed: the arms' referee is code (ROUGE-L against the teacher's answer), "
                                                       "deterministic and the same in both orders")
    return out


async def _generator_yield(rt: Any, opts: EfficacyOptions, pool: list[Item], sample: list[Item], meter: Meter) -> GeneratorProbe:
    """Lion's generation call on sampled seeds, through Lion's own schema and filters."""
    template = rt.prompts.get("lion/generate_hard.jinja2")
    seeds = [sample[i % len(sample)] for i in range(opts.probe_generations)] if sample else []
    sampling = Sampling(temperature=1.0, top_p=1.0, max_tokens=80)
    calls = [Call(messages=user(template.render(seed_instruction=s.instruction)), sampling=sampling,
                  schema=new_instruction_model(200), sample=i) for i, s in enumerate(seeds)]
    results = await rt.call_all("teacher", "probe: generator yield", calls, meter)
    spend = await _priced(rt, calls)
    index = RougeIndex(0.7, [x.instruction for x in pool])
    usable, reasons = 0, {}
    for res in results:
        text = res.parsed.instruction.strip() if res.ok and res.parsed is not None else None
        reason = steps.reject_reason(res, text, 4, index)
        if reason is None:
            usable += 1
            index.add(text or "")
        else:
            reasons[reason] = reasons.get(reason, 0) + 1
    share = usable / len(calls) if calls else 0.0
    low = share < MIN_YIELD
    return GeneratorProbe(
        status="ok", calls=len(calls), usable=usable, share=share, rejected=reasons,
        mean_cost_usd=spend.per_call if spend.calls else None, skips=[a.name for a in ARMS if a.kind == "lion"] if low else [],
        summary=f"{usable}/{len(calls)} generation calls gave a usable new instruction (rejected: "
                f"{', '.join(f'{k} {v}' for k, v in sorted(reasons.items())) or 'none'})"
                + (f"; below {MIN_YIELD:.0%}, so Lion and its control are skipped: Lion would spend its budget on rejected instructions" if low else ""),
    )


async def _best_of_n(rt: Any, opts: EfficacyOptions, gold: list[Item], greedy_answers: dict[str, str], answer_t: Any,
                     meter: Meter) -> BestOfNProbe:
    """pass@1 (greedy) against pass@n (n samples at the sampled temperature) on pool prompts with gold."""
    if not gold:
        return BestOfNProbe(status="skipped", summary="no pool prompt in the probe's sample has gold")
    n = opts.probe_samples
    sampling = Sampling(temperature=opts.sampled_temperature, max_tokens=opts.max_tokens)
    calls = [Call(messages=user(answer_t.render(instruction=x.instruction)), sampling=sampling, sample=k) for x in gold for k in range(n)]
    results = await rt.call_all("teacher", f"probe: best-of-{n} headroom", calls, meter)
    pass1 = sum(gold_match(greedy_answers[x.id], str(x.gold)) for x in gold) / len(gold)
    passn = sum(any(gold_match(results[i * n + k].text or "", str(x.gold)) for k in range(n) if results[i * n + k].ok)
                for i, x in enumerate(gold)) / len(gold)
    return BestOfNProbe(status="ok", prompts=len(gold), n=n, pass_at_1=pass1, pass_at_n=passn,
                        summary=f"teacher pass@1 {pass1:.2f} against pass@{n} {passn:.2f} on {len(gold)} gold prompts: "
                                + ("room for a best-of-n method (arm kd_best_of_n)" if passn > pass1 else "no room for a best-of-n method"))


def probe_path(out: Path) -> Path:
    return out / "probes" / "probes.json"
