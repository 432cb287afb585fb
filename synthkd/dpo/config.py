"""Configuration of the `dpo` stage (on-policy preference distillation), 1:1 with its YAML block."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from synthkd.config.endpoints import Sampling, Strict
from synthkd.config.stages import LoraArgs, MAX_SAMPLES, StageBase, TrainingLaunch


class DPOTemplates(Strict):
    """Prompts of the DPO stage, as jinja2 files under prompts_dir."""

    answer: str = Field("common/answer.jinja2", description="How teacher and student are asked to answer.")
    pairwise: str = Field("common/referee.jinja2", description="Judge two answers 1-10 in one call (instruction, answer_1, answer_2).")
    pointwise: str = Field("common/score.jinja2", description="Judge one answer 1-10 (instruction, answer).")


class DPOStage(StageBase, TrainingLaunch):
    """On-policy preference distillation of the student with TRL DPO, K iterations."""

    type: Literal["dpo"]

    input: str = Field(..., description="Stage with the training instructions (column `instruction`).")
    heldout: str | None = Field(None, description="Stage with held-out instructions for the win rate against the previous checkpoint.")
    student: str = Field("student", description="Endpoint serving the student (must be served by synthkd to sample from checkpoints).")
    teacher: str = Field("teacher", description="Endpoint whose answers are `chosen` in teacher_vs_student pairs.")
    judge: str = Field("judge", description="Endpoint scoring answers, or a judge that is code (code:rouge_l, code:exact_match; teacher_vs_student only).")
    model: str | None = Field(None, description="Starting weights; default: what the student endpoint serves now (e.g. after an sft stage with serve_as).")
    sources: list[Literal["teacher_vs_student", "ranked_student_samples"]] = Field(
        default_factory=lambda: ["teacher_vs_student"], min_length=1,
        description="Pair sources, combinable: teacher_vs_student (DistiLLM-2's black-box form) and ranked_student_samples (TS-Align).",
    )
    margin: float = Field(1.0, ge=0, description="Judge score gap a pair needs (both-order average for teacher_vs_student).")
    samples: int = Field(4, ge=2, le=MAX_SAMPLES, description="Student samples per instruction for ranked_student_samples (k).")
    iterations: int = Field(2, ge=1, description="On-policy iterations K: regenerate from the new checkpoint and repeat.")
    answer_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.7, max_tokens=1024), description="Teacher and student answers.")
    sample_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=1.0, max_tokens=1024), description="Student samples for ranking.")
    judge_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.0, max_tokens=64), description="Judge calls.")
    heldout_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.0, max_tokens=64), description="Held-out answers when the judge is code (greedy).")
    templates: DPOTemplates = Field(default_factory=DPOTemplates, description="Prompt files.")
    dpo: dict[str, Any] = Field(default_factory=dict, description="Passed straight to trl.DPOConfig (beta, learning_rate, ...).")
    lora: LoraArgs | None = Field(None, description="peft.LoraConfig arguments; null for full fine-tuning.")
