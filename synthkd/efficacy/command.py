"""`synthkd efficacy`: run every arm on the user's teacher, student, prompt pool and held-out sets, and compare them.

Steps, each a synthkd run under DIR (so each resumes from its request cache and finished stages):
  DIR/data      the pipeline's load stages and the --heldout files, read once and normalized (gold kept for scoring
                only; pool prompts that also appear in a held-out set are dropped from the pool)
  DIR/probes    the probes (answer cost, generator yield, student competence, best-of-n headroom)
  DIR/runs/reference   the teacher's and the untrained student's held-out answers (measurement, not charged to arms)
  DIR/runs/<run>       the arms' runs, each capped at the arm budget by `budget_usd`
then DIR/efficacy.json, DIR/efficacy.md and DIR/efficacy.html.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from synthkd import yamlio
from synthkd.pipeline import load_pipeline
from synthkd.efficacy import arms as A
from synthkd.efficacy.compare import compare, conclusions, per_family
from synthkd.items import Item, read_items
from synthkd.efficacy.options import EfficacyOptions
from synthkd.efficacy.probes import probe_path, run_probes
from synthkd.efficacy.report import markdown, pick_examples, write_html
from synthkd.efficacy.result import ArmResult, EfficacyResult, GeneratorProbe, Probes, StudentInfo, TeacherInfo
from synthkd.hashing import file_digest
from synthkd.errors import BudgetExceeded, ConfigError, SynthkdError
from synthkd.jsonl import write_jsonl
from synthkd.outputs import load_output
from synthkd.progress import Reporter
from synthkd.prompts import resolve
from synthkd.runlock import run_lock
from synthkd.settings import Settings
from synthkd.stages.load import LoadStage

PLAN_SHARE = 0.9  # arms are sized to spend this share of their cap: the cap is hard, and a stage stopped by it stops the arm


class Efficacy:
    """One `synthkd efficacy` invocation."""

    def __init__(self, opts: EfficacyOptions, settings: Settings, reporter: Reporter) -> None:
        self.opts = opts.with_tier_defaults()
        self.settings, self.reporter = settings, reporter
        self.out = opts.out
        self.loaded = load_pipeline(opts.pipeline, [], settings)
        self.raw = yamlio.load(opts.pipeline.read_text(encoding="utf-8"))
        self._check_inputs()
        self.started = time.monotonic()

    # ---- inputs -------------------------------------------------------------------
    def _check_inputs(self) -> None:
        o, cfg, where = self.opts, self.loaded.config, str(self.opts.pipeline)
        for role, name in (("teacher", o.teacher), ("student", o.student)):
            if name not in cfg.endpoints:
                raise ConfigError(f"the pipeline has no endpoint {name!r} for the {role}", where=f"{where}: endpoints",
                                  fix=f"name the {role} endpoint with --{role} NAME (endpoints: {', '.join(cfg.endpoints)})")
        if not cfg.endpoints[o.student].served:
            raise ConfigError(f"the student endpoint {o.student!r} is not served by synthkd, so its weights cannot be trained",
                              where=f"{where}: endpoints.{o.student}", fix="give it base_url: null and a serve: block with the student's model_path")
        loads = {s.name: s for s in cfg.stages if s.type == "load"}
        if o.pool not in loads:
            raise ConfigError(f"the pipeline has no load stage {o.pool!r} with the prompt pool", where=f"{where}: stages",
                              fix=f"add a load stage named {o.pool!r}, or name yours with --pool (load stages: {', '.join(loads) or 'none'})")
        unknown = sorted(set(o.arms) - set(A.ARM_NAMES))
        if unknown:
            raise ConfigError(f"unknown arm(s) {', '.join(unknown)}", where="--arms", fix=f"choose from {', '.join(A.ARM_NAMES)}")
        for path in o.heldout_files:
            if not path.is_file():
                raise ConfigError("held-out file not found", where=str(path), fix="give a JSONL file with id, instruction and optionally gold per row")

    def note(self, text: str) -> None:
        self.reporter.note(f"efficacy: {text}")

    async def _run(self, name: str, pipeline: A.PipelineFile) -> Path:
        """Write a generated pipeline to DIR/runs/NAME/pipeline.yaml and run it (resuming whatever ran before)."""
        return await self._run_file(name, pipeline.to_yaml())

    async def _run_file(self, name: str, text: str) -> Path:
        """Write a pipeline file's text to DIR/runs/NAME/pipeline.yaml and run it (resuming whatever ran before)."""
        from synthkd.runner import run_pipeline

        base = self.out / "runs" / name
        base.mkdir(parents=True, exist_ok=True)
        path = base / "pipeline.yaml"
        path.write_text(text)
        await run_pipeline(load_pipeline(path, [], self.settings), base / "run", self.settings, self.reporter)
        return base / "run"

    # ---- data -----------------------------------------------------------------------
    async def read_data(self) -> tuple[list[Item], dict[str, list[Item]]]:
        """(pool items with gold, held-out items per set), through load stages so every file format and error is the
        load stage's."""
        pipeline_dir = self.opts.pipeline.resolve().parent
        # The pipeline's load stages as the user wrote them (paths made absolute; any key a load stage takes, kept
        # as written), then one per --heldout file.
        stages: list[dict[str, Any]] = []
        names: dict[str, str] = {}  # set name -> stage name
        for raw in self.raw.get("stages") or []:
            if isinstance(raw, dict) and raw.get("type") == "load":
                stage = copy.deepcopy(raw)
                stage["path"] = str((pipeline_dir / str(stage["path"])).resolve())
                stages.append(stage)
                if stage["name"] != self.opts.pool:
                    names[stage["name"]] = stage["name"]
        for path in self.opts.heldout_files:
            name = _unique(re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_") or "heldout", names)
            names[name] = f"file.{name}"
            stages.append({"name": f"file.{name}", "type": "load", "path": str(path.resolve()), "id_column": "id"})
        if not names:
            raise ConfigError("no held-out set: the pipeline has no load stage besides the pool and no --heldout file was given",
                              where=str(self.opts.pipeline), fix="add --heldout FILE (JSONL rows with id, instruction and optionally gold)")
        pipeline = {"name": "efficacy_data", "prompts_dir": str(self.loaded.prompts_dir), "endpoints": {}, "stages": stages}
        run = await self._run_file("data", yaml.safe_dump(pipeline, sort_keys=False))
        pool = [_row(r, f"stage {self.opts.pool}") for r in load_output(run, self.opts.pool)]
        sets: dict[str, list[Item]] = {}
        for name, stage in names.items():
            rows = [_row(r, f"held-out set {name}") for r in load_output(run, stage)]
            sets[name] = rows[:self.opts.heldout_limit or None]
        seen = {_norm(x.instruction) for items in sets.values() for x in items}
        kept = [x for x in pool if _norm(x.instruction) not in seen]
        if len(kept) < len(pool):
            self.note(f"{len(pool) - len(kept)} pool prompt(s) also appear in a held-out set: left out of the pool")
        if not kept:
            raise ConfigError("the prompt pool is empty (after leaving out prompts that are in a held-out set)", where=f"stage {self.opts.pool}",
                              fix="give a pool of instructions distinct from the held-out sets")
        return kept, sets

    # ---- probes and sizes -----------------------------------------------------------------
    def endpoints(self) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """(teacher, student) endpoint mappings as the user wrote them (keys stay `${env:...}` references), the
        teacher priced at the nominal price when it has none; and whether it was."""
        raw = self.raw.get("endpoints") or {}
        teacher, student = copy.deepcopy(raw[self.opts.teacher]), copy.deepcopy(raw[self.opts.student])
        prices = self.loaded.config.endpoints[self.opts.teacher].prices
        nominal = prices.input_per_million == 0 and prices.output_per_million == 0
        if nominal:
            teacher["prices"] = {"input_per_million": self.opts.nominal_input_per_million, "output_per_million": self.opts.nominal_output_per_million}
        return teacher, student, nominal

    async def probes(self, pool: list[Item], teacher: dict[str, Any], student: dict[str, Any]) -> Probes:
        from synthkd.runner import probe_runtime

        path = probe_path(self.out)
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("key") == self._probe_key():
                return Probes.model_validate(saved["probes"])
        pipeline = A.PipelineFile(name="efficacy_probes", prompts_dir=str(self.loaded.prompts_dir), endpoints={"teacher": teacher, "student": student},
                                  stages=[LoadStage(name="none", type="load", path=str(self.out / "data" / "pool.jsonl"))])
        (self.out / "probes").mkdir(parents=True, exist_ok=True)
        spec = self.out / "probes" / "pipeline.yaml"
        spec.write_text(pipeline.to_yaml())
        async with probe_runtime(load_pipeline(spec, [], self.settings), self.out / "probes" / "run", self.settings, self.reporter) as rt:
            found = await run_probes(rt, self.opts, pool)
        path.write_text(json.dumps({"key": self._probe_key(), "probes": found.model_dump(mode="json", by_alias=True)}, indent=2))
        return found

    def _probe_key(self) -> list[Any]:
        o = self.opts
        # The prompts' content too: a changed generation prompt must be probed again, not read from the last probe.
        # The files the probes read (a moved template under either name, as PromptLibrary finds it): their bytes, not
        # their names, so the probes of a run made before prompts/common/ existed are read back, not paid for again.
        root = self.loaded.prompts_dir
        prompts = [file_digest(resolve(root, name) or root / name) for name in ("common/answer.jinja2", "lion/generate_hard.jinja2")]
        return [o.probe_prompts, o.probe_generations, o.probe_samples, o.max_tokens, o.tau, o.sampled_temperature, *prompts]

    def sizes(self, probes: Probes, pool_size: int) -> tuple[float, A.Sizes, str]:
        """(the cap per arm, the data sizes that fill it, how the cap was chosen)."""
        o = self.opts
        c_ans = float((probes.answer_cost.mean_cost_usd if probes.answer_cost else None) or 0.0)
        if c_ans <= 0:
            raise ConfigError("the probe measured no cost per teacher answer (every answer failed, or the teacher is free and "
                              "no nominal price applies)", where="DIR/probes", fix="check the teacher endpoint; see DIR/probes/run/failed/")
        if o.budget_usd is not None:
            budget, why = o.budget_usd, "--budget-usd"
        else:
            budget = o.defaults().answer_calls * c_ans / PLAN_SHARE
            why = f"the {o.tier} tier's default: about {o.defaults().answer_calls} teacher answers at the measured ${c_ans:.3g} each"
        plan = PLAN_SHARE * budget
        kd = min(pool_size, _count(plan, c_ans))
        k = o.iterations
        gen = probes.generator_yield or GeneratorProbe()
        c_gen = float(gen.mean_cost_usd or c_ans)
        share = max(float(gen.share or 0.0), 0.05)
        if k == 1:
            return budget, A.Sizes(kd, kd // o.probe_samples, kd, 0, 0), why
        seeds = min(pool_size // 2, _count(0.5 * plan, c_ans))  # half the pool at most: the control draws from the rest
        per_new = c_gen * max(1.3, 1.0 / share) + c_ans  # generation calls per kept instruction, then its answer
        lion_new = _count(0.5 * plan / (k - 1), per_new)
        control_new = min((pool_size - seeds) // (k - 1), _count(0.5 * plan / (k - 1), c_ans))
        return budget, A.Sizes(kd, kd // o.probe_samples, seeds, lion_new, control_new), why

    def write_files(self, pool: list[Item], sets: dict[str, list[Item]], sizes: A.Sizes) -> tuple[A.Files, tuple[A.HeldoutSet, ...]]:
        """The prompt files the arms read: gold removed from the pool (no arm trains on gold)."""
        data = self.out / "data"
        order = list(pool)
        random.Random("efficacy-pool").shuffle(order)
        # No gold; a `family` stays (list-mode Lion shows same-family examples; the other arms ignore it).
        bare = [{"id": x.id, "instruction": x.instruction, **({"family": x.family} if x.family else {})} for x in order]
        files = A.Files(data / "kd_pool.jsonl", data / "lion_seeds.jsonl", data / "control_reserve.jsonl")
        write_jsonl(files.kd_pool, bare[:sizes.kd_prompts])
        write_jsonl(files.lion_seeds, bare[:sizes.lion_seeds])
        write_jsonl(files.control_reserve, bare[sizes.lion_seeds:])
        held = []
        for name, items in sets.items():
            path = data / "heldout" / f"{name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(path, [{"id": x.id, "instruction": x.instruction, "gold": x.gold, "family": x.family} for x in items])
            held.append(A.HeldoutSet(name, path, len(items), sum(1 for x in items if x.gold is not None)))
        return files, tuple(held)

    # ---- the whole command ----------------------------------------------------------------
    async def run(self) -> EfficacyResult:
        o = self.opts
        with run_lock(self.out):
            self.note(f"[1/5] reading the pool and the held-out sets into {self.out / 'data'}")
            pool, sets = await self.read_data()
            (self.out / "data").mkdir(parents=True, exist_ok=True)
            write_jsonl(self.out / "data" / "pool.jsonl", [x.as_row() for x in pool])
            teacher, student, nominal = self.endpoints()
            self.note(f"[2/5] probes ({o.probe_prompts} prompts, {o.probe_generations} generation calls)")
            probes = await self.probes(pool, teacher, student)
            for name, p in probes.present():
                self.note(f"  probe {name}: {p.summary or p.status}")
            budget, sizes, why = self.sizes(probes, len(pool))
            self.note(f"cap per arm ${budget:.4g} ({why}); KD prompts {sizes.kd_prompts}, Lion seeds {sizes.lion_seeds} + "
                      f"{sizes.lion_new} new per iteration, control {sizes.control_new} draws per iteration")
            files, held = self.write_files(pool, sets, sizes)
            student_model = self.loaded.config.endpoints[o.student].serve.model_path  # type: ignore[union-attr]
            cx = A.Context(o, teacher, student, student_model, self.loaded.prompts_dir, held, budget, sizes, files)
            selected = set(o.arms or A.ARM_NAMES) | {"kd"}
            gen = probes.generator_yield or GeneratorProbe()
            skipped = {a: f"probe generator_yield: {gen.summary}" for a in gen.skips if a in selected}
            if sizes.lion_new == 0 and o.iterations > 1:
                skipped.update({a.name: "the cap does not buy one new instruction per iteration" for a in A.ARMS
                                if a.kind == "lion" and a.name in selected})
            self.note("[3/5] the teacher and the untrained student on the held-out sets (reference)")
            reference = await self._run("reference", A.reference_pipeline(cx))
            runs = self._runs(cx, selected - set(skipped))
            failed: dict[str, str] = {}
            for n, (name, pipeline, members) in enumerate(runs, 1):
                self.note(f"[4/5] run {n}/{len(runs)}: {name} ({', '.join(members)})")
                try:
                    await self._run(name, pipeline)
                except BudgetExceeded as exc:
                    failed.update({m: f"stopped at its cap: {exc.what}" for m in members})
                except SynthkdError as exc:
                    failed.update({m: f"its run stopped: {exc.what}" for m in members})
                self.write(self.collect(cx, sets, reference, selected, skipped, failed, probes, nominal, why))
            self.note("[5/5] comparing")
            result = self.collect(cx, sets, reference, selected, skipped, failed, probes, nominal, why, final=True)
            self.write(result)
            return result

    def _runs(self, cx: A.Context, selected: set[str]) -> list[tuple[str, A.PipelineFile, list[str]]]:
        """(run name, pipeline, arms it serves) in the order they run."""
        o = self.opts
        assert o.arm_seeds is not None
        kd_members = [a for a in ("kd", *A.DPO_GROUP) if a in selected]
        out = [("kd", A.kd_pipeline(cx, self.out / "runs" / "kd" / "run", selected), kd_members)]
        for seed in range(o.arm_seeds):
            for name, best_of_n in (("kd_sampled", False), ("kd_best_of_n", True)):
                if name in selected:
                    out.append((f"{name}.s{seed}", A.sampled_pipeline(cx, seed, best_of_n), [name]))
            for name in ("lion_control", "lion", "lion_list"):
                if name in selected:
                    out.append((f"{name}.s{seed}", A.lion_pipeline(cx, seed, name), [name]))
        return out

    # ---- reading the runs ------------------------------------------------------------------
    def collect(self, cx: A.Context, sets: dict[str, list[Item]], reference: Path, selected: set[str], skipped: dict[str, str],
                failed: dict[str, str], probes: Probes, nominal: bool, why: str, final: bool = False) -> EfficacyResult:
        from synthkd.efficacy.collect import ArmReader

        reader = ArmReader(self.out / "runs", cx, self.settings, self.loaded.prompts_dir.parent)
        teacher_answers, ref_sets = reader.reference(reference, sets)
        arms_out: dict[str, ArmResult] = {}
        scores: dict[str, dict[str, dict[str, list[list[float]]]]] = {}
        answers_by_arm: dict[str, dict[str, dict[str, str]]] = {}
        for a in A.ARMS:
            if a.name not in selected:
                continue
            entry = ArmResult(label=a.label, description=a.description, baseline=a.baseline, status="done")
            if a.name in skipped:
                arms_out[a.name] = entry.model_copy(update={"status": "skipped", "reason": skipped[a.name]})
                continue
            got = reader.arm(a, sets, teacher_answers, with_nll=final)
            measured = got.entry if got else ArmResult()
            entry = entry.model_copy(update={"seeds": measured.seeds, "spend": measured.spend, "training": measured.training})
            if a.name in failed or got is None or got.scores is None or got.answers is None:
                arms_out[a.name] = entry.model_copy(update={"status": "failed" if a.name in failed else "running", "reason": failed.get(a.name)})
                continue
            arms_out[a.name] = entry
            scores[a.name] = got.scores
            answers_by_arm[a.name] = got.answers
        baselines = {a.name: (a.baseline if a.baseline in scores else None) for a in A.ARMS}
        for name, sets_out in compare(scores, baselines).items():
            for set_name, comparison in sets_out.items():
                gold = scores[name][set_name].get("gold_accuracy")
                comparison.per_family = per_family(sets[set_name], gold) if gold else {}
            arms_out[name].sets = sets_out
        labels = {a.name: a.label for a in A.ARMS}
        examples = {s: pick_examples({a: answers_by_arm[a].get(s, {}) for a in answers_by_arm}, teacher_answers.get(s, {}), items)
                    for s, items in sets.items()} if answers_by_arm else {}
        o = self.opts
        prices = cx.teacher.get("prices") or {}
        return EfficacyResult(
            command=o.command, tier=o.tier,
            teacher=TeacherInfo(endpoint=o.teacher, model=self.loaded.config.endpoints[o.teacher].model,
                                input_per_million=prices.get("input_per_million", 0.0), output_per_million=prices.get("output_per_million", 0.0),
                                nominal_price=nominal),
            student=StudentInfo(model=cx.student_model), budget_usd=cx.budget_usd, budget_from=why,
            steps=o.steps, extra_steps=o.extra_steps, batch=o.batch, sizes=dict(cx.sizes.__dict__),
            wall_s=round(time.monotonic() - self.started, 1), probes=probes, reference=ref_sets,
            arms=arms_out, examples=examples,
            conclusion=conclusions(arms_out, labels) if final else ["(the comparison is still running)"],
        )

    def write(self, result: EfficacyResult) -> None:
        """efficacy.json, efficacy.md and efficacy.html, replaced whole (a reader never sees half a file)."""
        def put(name: str, text: str) -> None:
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(self.out / name)

        put("efficacy.json", json.dumps(_finite(result.to_json()), indent=2))
        put("efficacy.md", markdown(result))
        tmp = self.out / ".efficacy.html.tmp"
        write_html(result, tmp)
        tmp.replace(self.out / "efficacy.html")


def _row(row: Mapping[str, Any], where: str) -> Item:
    """A prompt row as an item: id and instruction required (one clear error otherwise); gold and family kept when
    present."""
    text = row.get("instruction")
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"a row has no instruction (id {row.get('id')!r})", where=where,
                          fix="every row needs a non-empty `instruction` (rename the column with the load stage's `columns:`)")
    return read_items([row])[0]


def _count(money: float, price: float) -> int:
    """How many items at `price` fit in `money`; a hair of tolerance, so that the same two numbers summed in another
    order (a rerun) cannot round to one item fewer."""
    return int(money / price + 1e-6)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _unique(name: str, taken: dict[str, str]) -> str:
    out, n = name, 2
    while out in taken:
        out, n = f"{name}_{n}", n + 1
    return out


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
