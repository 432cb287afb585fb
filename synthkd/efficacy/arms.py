"""The arms of an efficacy comparison, and the synthkd pipelines that run them.

Every arm is built to differ from its baseline in the method only:
- the same teacher spend: each run's `budget_usd` is the arm's cap, enforced by the engine's budget reservation at the
  teacher's token prices; the data each arm asks for is sized from the probes' measured cost per call to use the cap;
- the same optimizer steps, learning rate and schedule (cosine from the same learning rate); Lion restarts its
  schedule every iteration, so its control restarts the same way;
- answer-only loss (`completion_only_loss`), the same batch size and sequence length;
- the same access to gold: none. Pool prompts reach the arms without their gold answers and Lion's referee compares
  the student with the teacher (ROUGE-L), so gold is used only to score the held-out sets.

Runs: `kd` holds the baseline (plain KD on greedy teacher answers, one checkpoint per training seed) and the DPO
comparison group that starts from its checkpoints (extra SFT steps against DPO and DPO with an NLL term, the same
number of extra steps, no extra teacher spend: the DPO stage's teacher answers are the KD answers, cache hits in the
same run). `kd_sampled.sN`, `kd_best_of_n.sN`, `lion.sN`, `lion_list.sN` and `lion_control.sN` are one run per
training seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from synthkd.config.endpoints import Sampling
from synthkd.config.stages import Select, SelectChecks, StageBase
from synthkd.dpo.config import DPOStage
from synthkd.efficacy.options import EfficacyOptions
from synthkd.lion.config import LionStage
from synthkd.stages.evaluate import EvalStage
from synthkd.stages.generate import GenerateStage
from synthkd.stages.load import LoadStage
from synthkd.stages.sft import SFTStage


@dataclass(frozen=True)
class Arm:
    """One method under comparison."""

    name: str
    label: str
    description: str
    baseline: str | None  # the arm it is compared with, on the same prompts (None: a baseline or a control)
    run: str  # the run group: "kd" (shared), or a run per seed named "<run>.s<seed>"
    needs_generation: bool = False  # skipped when the generator-yield probe says the teacher cannot write instructions
    kind: str = "kd"  # how its run reads back: kd (an answers stage, then SFT), lion (a lion stage), dpo (from KD's checkpoint)
    generates: bool = False  # its training data includes instructions the teacher wrote (their calls reached training)


ARMS: tuple[Arm, ...] = (
    Arm("kd", "plain KD, greedy targets", "sequence-level KD: SFT on the teacher's greedy answers to prompts drawn uniformly "
        "from the pool (the baseline; several training seeds give its seed-to-seed spread)", None, "kd"),
    Arm("kd_sampled", "plain KD, sampled targets", "the same with teacher answers sampled at the sampled temperature",
        "kd", "kd_sampled"),
    Arm("kd_best_of_n", "plain KD, best of n", "SFT on one teacher answer per prompt kept from n sampled ones by "
        "consensus (minimum Bayes risk under ROUGE-L; no gold): n calls per prompt, so 1/n of the prompts at the same spend",
        "kd", "kd_best_of_n"),
    Arm("lion_control", "Lion control", "Lion's schedule (K iterations, restarting) with uniform draws from the pool "
        "instead of discrimination and generation", "kd", "lion_control", needs_generation=True, kind="lion"),
    Arm("lion", "Lion", "imitation, discrimination (ROUGE-L referee against the teacher) and generation of new hard and "
        "easy instructions (the paper's zero-shot prompt, JSON reply), K iterations", "lion_control", "lion",
        needs_generation=True, kind="lion", generates=True),
    Arm("lion_list", "Lion, list mode", "the same with generation for small teachers: few-shot continuation of a list of "
        "same-family instructions, one line per call", "lion_control", "lion_list", needs_generation=True, kind="lion", generates=True),
    Arm("kd_more_sft", "KD + more SFT", "the KD checkpoint trained for the extra steps on the same KD data (the "
        "control of the DPO arms)", None, "kd", kind="dpo"),
    Arm("kd_dpo", "KD + DPO", "the KD checkpoint trained for the extra steps with DPO on teacher-over-student pairs "
        "(DistiLLM-2's black-box form)", "kd_more_sft", "kd", kind="dpo"),
    Arm("kd_dpo_nll", "KD + DPO with NLL", "the same with an NLL term on the chosen answer (loss_type [sigmoid, sft])",
        "kd_more_sft", "kd", kind="dpo"),
)
ARM_NAMES = tuple(a.name for a in ARMS)
DPO_GROUP = ("kd_more_sft", "kd_dpo", "kd_dpo_nll")


def arm(name: str) -> Arm:
    return next(a for a in ARMS if a.name == name)


@dataclass(frozen=True)
class HeldoutSet:
    """A held-out set as the arms see it: a normalized JSONL file (id, instruction, gold, family)."""

    name: str
    path: Path
    size: int
    gold: int  # rows with a gold answer


@dataclass(frozen=True)
class Sizes:
    """How much data each arm asks the teacher for, sized so its planned spend fills (most of) its cap."""

    kd_prompts: int
    best_of_n_prompts: int  # kd_best_of_n: prompts whose n answers each fill the same cap
    lion_seeds: int
    lion_new: int  # new instructions per iteration (all iterations but the last, which trains and stops)
    control_new: int  # uniform draws per iteration for the control (same dollars, no generation calls)


@dataclass(frozen=True)
class Files:
    """The prompt files the efficacy command writes (gold removed) for the arms to read."""

    kd_pool: Path
    lion_seeds: Path
    control_reserve: Path


@dataclass(frozen=True)
class Context:
    """What every generated pipeline shares."""

    opts: EfficacyOptions
    teacher: dict[str, Any]  # the teacher endpoint as written in the user's pipeline (prices filled in where absent)
    student: dict[str, Any]
    student_model: str  # the student's base weights (its serve.model_path)
    prompts_dir: Path
    heldout: tuple[HeldoutSet, ...]
    budget_usd: float
    sizes: Sizes
    files: Files


class PipelineFile(BaseModel):
    """A pipeline file the efficacy command writes and runs. The header fields it was given are written (the data and
    probe pipelines have no description, seed or budget); the endpoints as the user wrote them (`${env:...}`
    references unresolved); each stage with the fields set on its config only, so the file reads like a hand-written
    one."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    seed: int = 0
    budget_usd: float | None = None  # set to null where the run has no cap (reference): written as null
    prompts_dir: str
    endpoints: dict[str, dict[str, Any]]  # the user's endpoint mappings as written: any keys an endpoint may have
    stages: list[StageBase]

    def to_yaml(self) -> str:
        """The file's text."""
        data = self.model_dump(exclude_unset=True, exclude={"stages"})
        data["stages"] = [st.model_dump(mode="json", exclude_unset=True) for st in self.stages]
        return yaml.safe_dump(data, sort_keys=False)


def eval_stage(name: str, cx: Context, s: HeldoutSet, *, teacher: bool = False) -> EvalStage:
    """Answers of what the student serves now on one held-out set (greedy); no teacher call unless `teacher`."""
    return EvalStage(name=name, type="eval", input=f"heldout.{s.name}", gold_column="gold" if s.gold else None,
                     student="student", teacher="teacher" if teacher else None, judge="code:rouge_l", nll=False,
                     answer_sampling=greedy(cx))


def eval_name(arm_name: str, seed: int, set_name: str) -> str:
    # Not under the arm's name: a stage named `lion` owns every dataset name starting with `lion.`.
    return f"eval.{arm_name}.s{seed}.{set_name}"


def _evals(cx: Context, arm_name: str, seed: int) -> list[StageBase]:
    return [eval_stage(eval_name(arm_name, seed, s.name), cx, s) for s in cx.heldout]


# The training blocks below are passed to TRL's SFTConfig / DPOConfig as they are (the stage configs' `sft:` and
# `dpo:` are open mappings of TRL's own arguments).
def _sft(cx: Context, steps: int, seed: int) -> dict[str, object]:
    o = cx.opts
    return {"max_steps": steps, "learning_rate": o.learning_rate, "lr_scheduler_type": "cosine", "per_device_train_batch_size": o.batch,
            "max_length": o.max_length, "completion_only_loss": True, "seed": seed, "logging_steps": 5}


def _dpo(cx: Context, steps: int, seed: int, nll: bool) -> dict[str, object]:
    o = cx.opts
    block: dict[str, object] = {"max_steps": steps, "learning_rate": o.dpo_learning_rate, "beta": o.dpo_beta, "lr_scheduler_type": "cosine",
                                "per_device_train_batch_size": o.batch, "max_length": o.max_length, "seed": seed, "logging_steps": 5}
    if nll:
        block.update(loss_type=["sigmoid", "sft"], loss_weights=[1.0, o.nll_alpha])
    return block


def greedy(cx: Context) -> Sampling:
    return Sampling(temperature=0.0, max_tokens=cx.opts.max_tokens)


def _load(name: str, path: Path, limit: int | None = None) -> LoadStage:
    return LoadStage(name=name, type="load", path=str(path), **({"limit": limit} if limit is not None else {}))


def _pipeline(cx: Context, name: str, seed: int, stages: list[StageBase], budget: bool = True) -> PipelineFile:
    """A run's pipeline file: the held-out sets' load stages first, then `stages`; capped at the arm budget."""
    loads: list[StageBase] = [_load(f"heldout.{s.name}", s.path) for s in cx.heldout]
    return PipelineFile(name=name.replace(".", "_"), description=f"synthkd efficacy: run {name}", seed=seed,
                        budget_usd=cx.budget_usd if budget else None, prompts_dir=str(cx.prompts_dir),
                        endpoints={"teacher": cx.teacher, "student": cx.student}, stages=[*loads, *stages])


def checkpoint(run_dir: Path, stage: str) -> str:
    """Where an sft stage of a run keeps its weights (the runner's layout)."""
    return str(run_dir / "checkpoints" / stage)


def _sft_stage(cx: Context, name: str, data: str, model: str, steps: int, seed: int) -> SFTStage:
    return SFTStage(name=name, type="sft", input=data, model=model, serve_as="student", sft=_sft(cx, steps, seed))


def kd_pipeline(cx: Context, run_dir: Path, arms: set[str]) -> PipelineFile:
    """The baseline's run: one answers stage, a checkpoint per seed, and the DPO group from those checkpoints."""
    o = cx.opts
    stages: list[StageBase] = [
        _load("pool", cx.files.kd_pool),
        GenerateStage(name="kd.answers", type="generate", input="pool", endpoint="teacher", template="common/answer.jinja2",
                      sampling=greedy(cx)),
    ]
    assert o.baseline_seeds is not None and o.arm_seeds is not None and o.steps is not None and o.extra_steps is not None
    for seed in range(o.baseline_seeds):
        stages.append(_sft_stage(cx, f"kd.s{seed}.sft", "kd.answers", cx.student_model, o.steps, seed))
        stages += _evals(cx, "kd", seed)
    for seed in range(min(o.arm_seeds, o.baseline_seeds)):
        start = checkpoint(run_dir, f"kd.s{seed}.sft")
        if "kd_more_sft" in arms:
            stages.append(_sft_stage(cx, f"kd_more_sft.s{seed}.sft", "kd.answers", start, o.extra_steps, seed))
            stages += _evals(cx, "kd_more_sft", seed)
        for name, nll in (("kd_dpo", False), ("kd_dpo_nll", True)):
            if name in arms:
                # Both DPO arms mine the same pairs (same judge, margin and answers) and differ in the loss only.
                stages.append(DPOStage(name=f"{name}.s{seed}.dpo", type="dpo", input="pool", teacher="teacher", student="student",
                                       judge="code:rouge_l", model=start, sources=["teacher_vs_student"], margin=1.0,
                                       iterations=1, answer_sampling=greedy(cx), dpo=_dpo(cx, o.extra_steps, seed, nll)))
                stages += _evals(cx, name, seed)
    return _pipeline(cx, "kd", 0, stages)


def sampled_pipeline(cx: Context, seed: int, best_of_n: bool = False) -> PipelineFile:
    """Plain KD on sampled teacher answers: one per prompt (kd_sampled), or the consensus of n per prompt on the
    first 1/n of the prompts (kd_best_of_n)."""
    o = cx.opts
    assert o.steps is not None
    name = "kd_best_of_n" if best_of_n else "kd_sampled"
    answers = GenerateStage(name=f"{name}.answers", type="generate", input="pool", endpoint="teacher", template="common/answer.jinja2",
                            sampling=Sampling(temperature=o.sampled_temperature, max_tokens=o.max_tokens, seed=seed))
    pool = _load("pool", cx.files.kd_pool)
    if best_of_n:
        # Truncated answers stay candidates, as the baseline keeps its truncated answers: the arm differs in the
        # selection only.
        answers.select = Select(n=o.probe_samples, rule="consensus", checks=SelectChecks(not_truncated=False))
        pool.limit = max(1, cx.sizes.best_of_n_prompts)
    stages: list[StageBase] = [pool, answers, _sft_stage(cx, f"{name}.s{seed}.sft", f"{name}.answers", cx.student_model, o.steps, seed)]
    return _pipeline(cx, f"{name}.s{seed}", seed, stages + _evals(cx, name, seed))


def lion_pipeline(cx: Context, seed: int, name: str) -> PipelineFile:
    """Lion (`lion`, or `lion_list` in list mode), or its control (`lion_control`): the same stage with
    `new_from: pool`, so schedule, referee and steps are the same."""
    o = cx.opts
    assert o.steps is not None
    control = name == "lion_control"
    stage = LionStage(
        name=name, type="lion", input="seeds", teacher="teacher", referee="code:rouge_l", student="student",
        iterations=o.iterations, tau=o.tau, hard_fraction=0.5, max_instruction_chars=200,
        new_per_iteration=cx.sizes.control_new if control else cx.sizes.lion_new, final_generation=False,
        answer_sampling=greedy(cx), generation_sampling=Sampling(temperature=1.0, top_p=1.0, max_tokens=80, seed=seed),
        sft=_sft(cx, o.steps // o.iterations, seed),
    )
    stages: list[StageBase] = [_load("seeds", cx.files.lion_seeds)]
    if name == "lion_list":
        stage.generation_mode, stage.fewshot_examples = "list", 4
    if control:
        stage.new_from, stage.pool = "pool", "reserve"
        stages.append(_load("reserve", cx.files.control_reserve))
    return _pipeline(cx, f"{name}.s{seed}", seed, [*stages, stage, *_evals(cx, name, seed)])


def reference_pipeline(cx: Context) -> PipelineFile:
    """The untrained student and the teacher on every held-out set (measurement: not charged to any arm)."""
    return _pipeline(cx, "reference", 0, [eval_stage(f"reference.{s.name}", cx, s, teacher=True) for s in cx.heldout], budget=False)
