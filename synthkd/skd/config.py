"""Configuration of the `skd` stage (symbolic knowledge distillation), 1:1 with its YAML block."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from synthkd.config.endpoints import Sampling, Strict
from synthkd.config.stages import LoraArgs, StageBase, TrainingLaunch


class RelationSpec(Strict):
    """One relation of the knowledge schema: how it reads in English, and how tails are asked for."""

    phrase: str = Field(..., description="Natural-language phrasing, e.g. 'As a result, PersonX wants'.")
    template: str = Field("skd/tail.jinja2", description="Template asking for a tail (variables: head, relation, phrase, examples).")
    examples: list[dict[str, str]] = Field(default_factory=list, description="Few-shot examples [{head, tail}] shown in the tail prompt.")


class SKDHeads(Strict):
    """Generation of heads (events) few-shot from a seed pool."""

    template: str = Field("skd/heads.jinja2", description="Prompt with k seeds as a numbered list (variables: seeds, next_number).")
    k: int = Field(10, ge=1, description="Seeds shown per prompt (paper: 10).")
    prompts: int = Field(20, ge=1, description="Generation prompts, each with its own random seeds.")
    n: int = Field(20, ge=1, description="Completions sampled per prompt (paper: many).")
    prefix: str = Field("PersonX", description="The prompt's last item starts with this and each completion continues it (set '' for none).")
    pattern: str = Field(r"^PersonX\b", description="Regex a head must match (after the prefix is put back).")
    drop_lowest_logprob: float = Field(0.2, ge=0, lt=1, description="Drop this fraction of heads with the lowest sequence log-probability (skipped when the endpoint returns none).")
    max_heads: int | None = Field(None, ge=1, description="Keep at most this many heads (in generation order).")
    sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.9, max_tokens=24, stop=["\n"]), description="Head sampling.")


class SKDTails(Strict):
    """Generation of tails for every (head, relation)."""

    n: int = Field(10, ge=1, description="Samples per (head, relation) (paper: 10).")
    min_chars: int = Field(3, ge=1, description="Drop tails shorter than this (paper: 2 characters or fewer dropped).")
    sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.9, max_tokens=16, stop=["\n"]), description="Tail sampling.")


class SKDCritic(Strict):
    """The filter: a trained classifier (the paper's way) or an LLM judge."""

    kind: Literal["classifier", "llm"] = Field("classifier", description="classifier: fine-tuned sequence classifier on NLI-framed triples; llm: the judge scores every triple.")
    labels: str | None = Field(None, description="JSONL of labelled triples {head, relation, tail, label: accept|reject}, relative to the pipeline file; null: the judge labels a sample.")
    label_sample: int = Field(200, ge=10, description="Triples the judge labels when no label file is given.")
    val_fraction: float = Field(0.25, gt=0, lt=1, description="Share of labels held out to choose the threshold.")
    target_recall: float | None = Field(0.8, description="Choose the threshold on validation for this recall...")
    target_precision: float | None = Field(None, description="...or for this precision (exactly one of the two).")
    model: str = Field("tiny:critic", description="Classifier base weights (directory, hub name or tiny:NAME).")
    epochs: int = Field(3, ge=1, description="Classifier training epochs.")
    learning_rate: float = Field(5e-4, gt=0, description="Classifier learning rate.")
    judge_template: str = Field("skd/judge.jinja2", description="Judge prompt for one triple (variables: head, relation, phrase, tail).")

    @model_validator(mode="after")
    def _one_target(self) -> "SKDCritic":
        targets = [t for t in (self.target_recall, self.target_precision) if t is not None]
        if len(targets) != 1:
            raise ValueError("set exactly one of target_recall and target_precision")
        if not 0 < targets[0] < 1:
            raise ValueError(f"the critic's target must be inside (0, 1), got {targets[0]}")
        return self


class SKDStage(StageBase, TrainingLaunch):
    """Symbolic knowledge distillation (West et al., NAACL 2022): teacher writes a knowledge graph,
    a critic filters it, the student learns from what survives."""

    type: Literal["skd"]

    input: str = Field(..., description="Stage with the seed heads (column `head`).")
    heldout: str | None = Field(None, description="Stage with held-out heads (column `head`) for the student evaluation.")
    teacher: str = Field("teacher", description="Endpoint writing heads and tails.")
    judge: str = Field("judge", description="Endpoint labelling triples (when no label file) and the llm critic.")
    student: str | None = Field("student", description="Endpoint serving the trained student for evaluation (served by synthkd); null: no student evaluation.")
    relations: dict[str, RelationSpec] | None = Field(None, description="The knowledge schema; null: the ATOMIC-style seven (xAttr, xEffect, xIntent, xNeed, xReact, xWant, HinderedBy).")
    heads: SKDHeads = Field(default_factory=SKDHeads, description="Head generation.")
    tails: SKDTails = Field(default_factory=SKDTails, description="Tail generation.")
    critic: SKDCritic = Field(default_factory=SKDCritic, description="The critic filter.")
    student_model: str = Field("tiny:student", description="Student base weights for SFT.")
    student_template: str = Field("skd/student_input.jinja2", description="Student input (variables: head, relation, phrase); the tail is the target.")
    sft: dict[str, Any] = Field(default_factory=dict, description="Passed straight to trl.SFTConfig.")
    lora: LoraArgs | None = Field(None, description="peft.LoraConfig arguments; null for full fine-tuning.")
    eval_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.0, max_tokens=16, stop=["\n"]), description="Student generations on held-out heads.")
