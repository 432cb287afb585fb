"""The SKD driver (West et al., NAACL 2022):

    heads   = teacher continues numbered lists of k seed events, n samples per prompt; cleaned
    tails   = for every (head, relation): relation prompt with few-shot examples, n samples; cleaned
    labels  = a label file, or the judge labels a sample of triples
    critic  = classifier fine-tuned on the labels (NLI framing), threshold chosen on validation
              for a target recall or precision; or the judge itself (kind: llm)
    corpus  = triples the critic accepts; the student is SFT'd on them
    check   = on held-out heads, acceptance of the student's generations beside the teacher's
              unfiltered corpus and the filtered corpus
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict

from synthkd.chat import sft_example, user
from synthkd.client.accounting import Meter
from synthkd.client.endpoint import Call, Result
from synthkd.skd.config import SKDStage
from synthkd.errors import SynthkdError
from synthkd.hashing import digest
from synthkd.records import FailedRow
from synthkd.runtime import Runtime
from synthkd.skd import critic as critic_lib
from synthkd.skd.generation import Completion, clean_heads, clean_tails, first_line, numbered_seeds
from synthkd.skd.labels import read_labels
from synthkd.skd.stage import Corpus, CriticSummary, HeadRow, PRCurve, Rate, ScoredTriple, SKDRow, SKDStats, SKDSummary, Threshold, Triple, relations_of
from synthkd.stages.training import train_checkpoint
from synthkd.stages.base import StageResult, checkpoint_dir, failed_row
from synthkd.stages.outlet import StageOutlet


class Verdict(BaseModel):
    """The judge's label of one triple."""

    model_config = ConfigDict(extra="forbid")
    verdict: Literal["accept", "reject"]


class _LabelledTriple(TypedDict):
    """What the critic reads of a labelled triple (a label file's row, or a triple with the judge's verdict, has more)."""

    head: str
    phrase: str
    tail: str
    label: bool


class SKDRun:
    """One `skd` stage execution."""

    def __init__(self, cfg: SKDStage, rt: Runtime, out: StageOutlet, seeds: list[dict[str, Any]], heldout: list[dict[str, Any]]) -> None:
        self.cfg, self.rt, self.out = cfg, rt, out
        self.seeds = [str(r["head"]) for r in seeds]
        self.heldout = [str(r["head"]) for r in heldout]
        self.relations = relations_of(cfg)
        self.summary = SKDSummary()
        self.failed: list[FailedRow] = []  # calls that failed, with their step and reason (failed.jsonl)

    def _fail(self, step: str, row: Triple | dict[str, str | int], res: Result | None) -> None:
        """Keep what a failed call was for, with the reason (never scored as if the judge had said no)."""
        self.failed.append(failed_row(row.model_dump() if isinstance(row, Triple) else row, res, step))

    def _result(self, rows: list[SKDRow], meter: Meter, checkpoint: str | None = None) -> StageResult:
        steps = [str(f.step) for f in self.failed]
        if steps:
            self.summary.failed_calls = {s: steps.count(s) for s in sorted(set(steps))}
        summary = self.summary
        moves = {self.cfg.student: checkpoint} if checkpoint and self.cfg.student and self.rt.config.endpoints[self.cfg.student].served else {}
        return StageResult(rows=rows, failed=self.failed, meter=meter, stats=SKDStats(skd=summary, critic=summary.critic), moves=moves)

    async def run(self) -> StageResult:
        meter = Meter()
        heads = await self.generate_heads(meter)
        raw = await self.generate_tails(heads, meter, self.cfg.teacher, self.cfg.tails.n, self.cfg.tails.sampling, "teacher tails")
        self.out.dataset("raw", raw, row_type=Triple, description="SKD: the teacher's raw knowledge graph (head, relation, tail).")
        if not raw:
            self.summary.corpus = Corpus(raw=0, filtered=0, kept_fraction=0.0)
            self.summary.note = "no triples: every head or tail was filtered out (see skd.heads in run.json)"
            return self._result([], meter)
        scored, threshold = await self.critique(raw, meter)
        self.out.dataset("scored", scored, row_type=ScoredTriple, description="SKD: every triple with the critic's score.")
        kept = [t for t in scored if t.critic_score >= threshold]
        self.out.dataset("filtered", kept, row_type=ScoredTriple, description="SKD: triples the critic accepts, with their score.")
        sft_rows = [self._sft_row(t) for t in kept]
        checkpoint = await self.train_student(sft_rows)
        self.summary.corpus = Corpus(raw=len(raw), filtered=len(kept), kept_fraction=len(kept) / len(raw) if raw else 0.0)
        self.summary.acceptance = {
            "teacher_unfiltered": _rate(scored, threshold),
            "filtered_corpus": _rate(kept, threshold),
        }
        if checkpoint and self.heldout and self.cfg.student:
            if self.rt.config.endpoints[self.cfg.student].served:
                self.rt.serve_weights(self.cfg.student, checkpoint)
            student = await self.generate_tails(self.heldout, meter, self.cfg.student, 1, self.cfg.eval_sampling, "student tails (held-out heads)", student_format=True)
            student_scored = await self._score(student, threshold_meter=meter)
            self.out.dataset("student_eval", student_scored, row_type=ScoredTriple, description="SKD: the student's tails on held-out heads, with critic scores.")
            self.summary.acceptance["student_heldout"] = _rate(student_scored, threshold)
        return self._result(sft_rows, meter, checkpoint)

    # ---- generation -----------------------------------------------------------------
    async def generate_heads(self, meter: Meter) -> list[str]:
        h = self.cfg.heads
        template = self.rt.prompts.get(h.template)
        calls, shown = [], []
        for p in range(h.prompts):
            seeds = numbered_seeds(self.seeds, h.k, random.Random(digest([self.rt.config.seed, self.cfg.name, "heads", p])))
            messages = user(template.render(seeds=seeds, next_number=len(seeds) + 1, prefix=h.prefix))
            for j in range(h.n):
                calls.append(Call(messages=messages, sampling=h.sampling, sample=j, logprobs=True))
                shown.append(p)
        results = await self.rt.call_all(self.cfg.teacher, f"{self.cfg.name}: heads ({h.prompts} prompts x {h.n})", calls, meter)
        for p, r in zip(shown, results):
            if not r.ok:
                self._fail("head", {"prompt": p}, r)
        completions = [Completion(_join(h.prefix, r.text or ""), r.ok and r.finish_reason == "stop", r.logprobs) for r in results]
        heads, stats = clean_heads(completions, h.pattern, h.drop_lowest_logprob)
        seeds_lower = {s.lower() for s in self.seeds}
        heads = [x for x in heads if x.lower() not in seeds_lower]
        if h.max_heads:
            heads = heads[: h.max_heads]
        self.summary.heads = {**stats, "kept_after_seed_overlap": len(heads)}
        self.out.dataset("heads", [HeadRow(id=f"head-{i:05d}", head=x) for i, x in enumerate(heads)], row_type=HeadRow, description="SKD: generated heads (events).")
        return heads

    async def generate_tails(self, heads: list[str], meter: Meter, endpoint: str, n: int, sampling: Any, label: str,
                             student_format: bool = False) -> list[Triple]:
        calls, keys = [], []
        student_prompt = self.rt.prompts.get(self.cfg.student_template)
        for head in heads:
            for rel, (phrase, template_name, examples) in self.relations.items():
                if student_format:
                    messages = user(student_prompt.render(head=head, relation=rel, phrase=phrase))
                else:
                    messages = user(self.rt.prompts.get(template_name).render(head=head, relation=rel, phrase=phrase, examples=examples))
                for j in range(n):
                    calls.append(Call(messages=messages, sampling=sampling, sample=j))
                    keys.append((head, rel))
        results = await self.rt.call_all(endpoint, f"{self.cfg.name}: {label}", calls, meter)
        grouped: dict[tuple[str, str], list[str]] = {}
        for key, res in zip(keys, results):
            grouped.setdefault(key, [])
            if res.ok and res.text:
                grouped[key].append(res.text)
            elif not res.ok:
                self._fail("student_tail" if student_format else "tail", {"head": key[0], "relation": key[1]}, res)
        triples: list[Triple] = []
        for (head, rel), texts in grouped.items():
            # The student is judged on what it says, one reply per (head, relation), even if empty;
            # the teacher's samples are cleaned as the paper does.
            tails = [first_line(texts[0]) if texts else ""] if student_format else clean_tails(texts, self.cfg.tails.min_chars)
            for tail in tails:
                triples.append(Triple(id=f"t{len(triples):06d}", head=head, relation=rel, phrase=self.relations[rel][0], tail=tail))
        return triples

    # ---- the critic -----------------------------------------------------------------
    async def labels(self, triples: list[Triple], meter: Meter) -> list[dict[str, Any]]:
        """Labelled triples (rows of the label file, or the judge's verdicts on a sample) as the critic trains on them."""
        c = self.cfg.critic
        if c.labels:
            return read_labels(self.rt.pipeline.resolve(c.labels), f"stages.{self.cfg.name}.critic.labels", {k: v[0] for k, v in self.relations.items()})
        sample = random.Random(digest([self.rt.config.seed, self.cfg.name, "labels"])).sample(triples, min(c.label_sample, len(triples)))
        verdicts = await self._judge(sample, meter, "judge labels a sample", "label")
        return [{**t.model_dump(), "label": v} for t, v in zip(sample, verdicts) if v is not None]

    async def _judge(self, triples: list[Triple], meter: Meter, label: str, step: str) -> list[bool | None]:
        """The judge's accept/reject per triple; None (and a failed row) where its call failed."""
        prompt = self.rt.prompts.get(self.cfg.critic.judge_template)
        calls = [Call(messages=user(prompt.render(head=t.head, relation=t.relation, phrase=t.phrase, tail=t.tail)),
                      sampling=self.rt.config.endpoints[self.cfg.judge].sampling, schema=Verdict) for t in triples]
        results = await self.rt.call_all(self.cfg.judge, f"{self.cfg.name}: {label}", calls, meter)
        for t, r in zip(triples, results):
            if not r.ok:
                self._fail(step, t, r)
        return [(r.parsed.verdict == "accept") if r.ok else None for r in results]

    async def critique(self, raw: list[Triple], meter: Meter) -> tuple[list[ScoredTriple], float]:
        """Scored triples and the acceptance threshold; fills the critic part of the summary."""
        c = self.cfg.critic
        if c.kind == "llm":
            verdicts = await self._judge(raw, meter, "judge scores every triple", "critic")
            self.summary.critic = CriticSummary(kind="llm", threshold=0.5, judged=sum(v is not None for v in verdicts))
            # A triple whose judge call failed is not scored (it is in failed.jsonl), rather than read as a rejection.
            return [_scored(t, 1.0 if v else 0.0) for t, v in zip(raw, verdicts) if v is not None], 0.5
        labelled = await self.labels(raw, meter)
        items = [{**t, "label": bool(t["label"])} for t in labelled]
        positives = sum(t["label"] for t in items)
        if positives == 0 or positives == len(items):
            raise SynthkdError(
                f"the critic needs both accepted and rejected labels; got {positives} accept and {len(items) - positives} reject",
                where=f"stages.{self.cfg.name}.critic",
                fix="give a label file with both kinds, raise critic.label_sample, or use critic.kind: llm (paid replies are cached)",
            )
        train, val = critic_lib.train_val_split(items, c.val_fraction, self.rt.config.seed)
        val_pairs = _as_pairs(val)
        # Trained like every checkpoint: a launcher job (the stage's processes and accelerate config, its log at
        # RUN_DIR/logs/train-<stage>-critic.log), reused where one with the job's fingerprint is in place.
        out, metrics = await train_checkpoint(
            self.rt, self.cfg.name, self.cfg, "critic", kind="classifier", rows=_as_pairs(train), base=c.model, trainer_args={}, lora=None,
            classifier=critic_lib.ClassifierArgs(epochs=c.epochs, learning_rate=c.learning_rate, val=val_pairs),
            note=f"training the critic on {len(train)} labelled triples")
        val_scores = await asyncio.to_thread(critic_lib.score_texts, out, [(x["premise"], x["hypothesis"]) for x in val_pairs])
        chosen = critic_lib.choose_threshold(val_scores, [r["label"] for r in val], target_recall=c.target_recall, target_precision=c.target_precision)
        curve = critic_lib.pr_curve(val_scores, [r["label"] for r in val])
        self.summary.critic = CriticSummary(
            kind="classifier", labels=len(items), train=len(train), val=len(val), metrics=metrics,
            threshold=chosen["threshold"], chosen=Threshold.model_validate(chosen),
            pr_curve=PRCurve(precision=[p["precision"] for p in curve], recall=[p["recall"] for p in curve],
                             threshold=chosen["threshold"], chosen={"precision": chosen["precision"], "recall": chosen["recall"]}),
        )
        return await self._score(raw, threshold_meter=meter), float(chosen["threshold"])

    async def _score(self, triples: list[Triple], threshold_meter: Meter) -> list[ScoredTriple]:
        if self.cfg.critic.kind == "llm":
            verdicts = await self._judge(triples, threshold_meter, "judge scores triples", "critic_student")
            return [_scored(t, 1.0 if v else 0.0) for t, v in zip(triples, verdicts) if v is not None]
        out = checkpoint_dir(self.rt, self.cfg.name, "critic")
        present = [t for t in triples if t.tail]
        pairs = [critic_lib.nli_text(t.head, t.phrase, t.tail) for t in present]
        scores = iter(await asyncio.to_thread(critic_lib.score_texts, out, pairs) if pairs else [])
        return [_scored(t, float(next(scores)) if t.tail else 0.0) for t in triples]  # an empty tail is rejected

    # ---- the student ----------------------------------------------------------------
    def _sft_row(self, t: ScoredTriple) -> SKDRow:
        prompt = self.rt.prompts.get(self.cfg.student_template).render(head=t.head, relation=t.relation, phrase=t.phrase)
        return SKDRow(**t.model_dump(), messages=sft_example(prompt, t.tail))

    async def train_student(self, rows: list[SKDRow]) -> str | None:
        if not rows:
            self.summary.student = "skipped: the critic kept no triples"
            return None
        out, self.summary.student = await train_checkpoint(
            self.rt, self.cfg.name, self.cfg, "student", kind="sft", rows=rows, base=self.cfg.student_model, trainer_args=self.cfg.sft,
            lora=self.cfg.lora, note=f"SFT of the student on {len(rows)} filtered triples")
        return str(out)


def _join(prefix: str, completion: str) -> str:
    """Put the prompt's prefix back in front of a completion that continues it."""
    text = completion.lstrip()
    if not prefix or text.startswith(prefix):
        return text
    return f"{prefix} {text}"


def _as_pairs(rows: list[_LabelledTriple]) -> list[critic_lib.LabelledPair]:
    """Labelled triples as the critic trains on them: NLI-framed (premise: the head; hypothesis: phrase + tail)."""
    return [{"premise": premise, "hypothesis": hypothesis, "label": r["label"]}
            for r in rows for premise, hypothesis in [critic_lib.nli_text(r["head"], r["phrase"], r["tail"])]]


def _scored(t: Triple, score: float) -> ScoredTriple:
    """A triple with the critic's score."""
    return ScoredTriple(id=t.id, head=t.head, relation=t.relation, phrase=t.phrase, tail=t.tail, critic_score=score)


def _rate(rows: list[ScoredTriple], threshold: float) -> Rate:
    """Share of triples the critic accepts, and their mean critic score."""
    if not rows:
        return Rate(n=0, accepted=0.0, mean_score=0.0)
    return Rate(n=len(rows), accepted=sum(r.critic_score >= threshold for r in rows) / len(rows),
                mean_score=sum(r.critic_score for r in rows) / len(rows))
