"""Configuration of the `montessori` stage (Montessori-Instruct), 1:1 with its YAML block."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from synthkd.config.endpoints import Sampling, Strict
from synthkd.config.stages import LoraArgs, StageBase, TrainingLaunch


class MontessoriSynthesis(Strict):
    """How the teacher writes candidate instructions."""

    template: str = Field("montessori/synthesize.jinja2", description="Prompt showing k example instructions (variable: examples).")
    prompts: int = Field(50, ge=1, description="Generation prompts per iteration (each with its own examples).")
    k: int = Field(8, ge=1, description="Examples per prompt (paper: 8).")
    k_generated: int = Field(2, ge=0, description="Of the k, how many are earlier generated instructions once enough exist (paper: 6 seed + 2 generated).")
    n: int = Field(4, ge=1, description="Samples per prompt (paper: 4).")
    sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=1.0, top_p=0.9, max_tokens=256), description="Paper: temperature 1.0, top_p 0.9.")
    min_words: int = Field(4, ge=1, description="Drop instructions shorter than this.")
    max_words: int = Field(150, ge=1, description="Drop instructions longer than this.")
    banned_words: list[str] = Field(default_factory=lambda: ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram"],
                                    description="Drop instructions containing any of these (things a text model cannot do).")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="Drop instructions with ROUGE-L above this against the pool.")
    max_instruction_chars: int = Field(1000, ge=20, description="Upper bound on an instruction (schema maxLength).")


class MontessoriStage(StageBase, TrainingLaunch):
    """Montessori-Instruct (Li, Yu and Xiong, ICLR 2025): tune the teacher with DPO toward the
    synthetic data that helps the student most, then let it write the student's training set."""

    type: Literal["montessori"]

    input: str = Field(..., description="Stage with seed instructions (column `instruction`).")
    reference: str = Field(..., description="Stage with the reference set: held-out `instruction` and strong `response` pairs.")
    icl_probe: str | None = Field(None, description="Stage with `question`/`answer` pairs for signal icl_accuracy.")
    teacher: str = Field("teacher", description="Endpoint of the teacher; synthkd must serve it (its weights are trained).")
    responder: str = Field("responder", description="Endpoint answering every kept instruction.")
    judge: str = Field("judge", description="Endpoint for signal judge.")
    student: str = Field("student", description="Endpoint serving the student base weights (signal icl_accuracy).")
    student_model: str = Field("tiny:student", description="Student base weights (influence and the final SFT).")
    answer_template: str = Field("common/answer.jinja2", description="How the responder is asked to answer an instruction (variable: instruction).")
    judge_template: str = Field("common/score.jinja2", description="Signal judge: score one answer 1-10 (variables: instruction, answer).")
    iterations: int = Field(2, ge=1, description="K iterations (paper: 2).")
    synthesis: MontessoriSynthesis = Field(default_factory=MontessoriSynthesis, description="Candidate generation.")
    answer_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.7, max_tokens=512), description="Responder answers.")
    warmup_size: int = Field(64, ge=1, description="Warm-up SFT examples (seed instructions with responder answers).")
    warmup_epochs: int = Field(1, ge=1, description="Warm-up epochs.")
    signal: Literal["influence", "icl_accuracy", "judge"] = Field("influence", description="What makes a candidate preferred.")
    influence: Literal["exact", "first_order"] = Field("exact", description="exact: restore, one step, reference loss; first_order: gradient dot product.")
    influence_lr: float = Field(1e-3, gt=0, description="Learning rate of the one-step update (and of the first-order estimate).")
    influence_optimizer: Literal["sgd", "adamw"] = Field("sgd", description="Optimizer of the warm-up and the one step.")
    influence_params: Literal["all", "last_layers", "lora"] = Field(
        "all", description="first_order: parameters whose gradients are dotted: all, last_layers (last decoder layer, final norm, "
                           "output embedding) or lora (attention q/v weights, what a default LoRA adapter sees).")
    influence_projection_dim: int | None = Field(
        None, ge=1, description="first_order: project gradients to this many dimensions with a seeded Gaussian sketch (TRAK/LESS); null: no projection.")
    warmup_lr: float | None = Field(None, gt=0, description="Learning rate of the warm-up run (default: influence_lr).")
    probe_size: int | None = Field(None, ge=1, description="Measure at most this many candidates (default: all).")
    max_pairs_per_prompt: int = Field(4, ge=1, description="Cap on chosen x rejected combinations per generation prompt.")
    dpo: dict[str, Any] = Field(default_factory=lambda: {"beta": 0.1, "learning_rate": 1e-6, "num_train_epochs": 1},
                                description="Teacher DPO, passed to trl.DPOConfig (paper: beta 0.1, lr 1e-6, one epoch).")
    lora: LoraArgs | None = Field(default_factory=lambda: {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"},
                                        description="Teacher DPO LoRA (merged before serving); null for full fine-tuning.")
    final_prompts: int = Field(100, ge=1, description="Generation prompts of the tuned teacher's final set.")
    sft: dict[str, Any] = Field(default_factory=dict, description="Student SFT on the final set, passed to trl.SFTConfig.")
