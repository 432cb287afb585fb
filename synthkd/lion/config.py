"""Configuration of the `lion` stage (Lion, Jiang et al., EMNLP 2023), 1:1 with its YAML block."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from synthkd.config.endpoints import Sampling, Strict
from synthkd.config.stages import LoraArgs, Select, StageBase, TrainingLaunch


class LionTemplates(Strict):
    """The Lion prompts, as jinja2 files under prompts_dir."""

    answer: str = Field("common/answer.jinja2", description="How teacher and student are asked to answer an instruction.")
    referee: str = Field("common/referee.jinja2", description="Referee: score two answers 1-10 in one call.")
    generate_hard: str = Field(
        "lion/generate_hard.jinja2", description="New instruction from a hard seed: same domain and task type, similar "
        "length and difficulty (the paper's hard prompt). lion/generate_harder.jinja2 asks for a noticeably harder one "
        "instead (synthkd's earlier default; it pushes a weak teacher off the distribution and past what it can answer).")
    generate_easy: str = Field("lion/generate_easy.jinja2", description="New instruction: same domain, rarer topic.")
    generate_list: str = Field(
        "lion/generate_list.jinja2", description="generation_mode: list: a numbered list of same-family instructions "
        "(examples, kind, family) that the teacher continues with one more; used for hard and easy seeds alike.")


class LionStage(StageBase, TrainingLaunch):
    """Lion (Jiang et al., EMNLP 2023): imitation, discrimination and generation, K times."""

    type: Literal["lion"]

    input: str = Field(..., description="Stage with the seed instructions (column `instruction`).")
    teacher: str = Field("teacher", description="Endpoint answering instructions and writing new ones.")
    referee: str = Field(
        "referee",
        description="Endpoint scoring teacher vs student answers (1-10, both orders), or a judge that is code: "
        "code:rouge_l (teacher 10, student ROUGE-L F1 / 10 against the teacher's answer) or code:exact_match "
        "(gold match, 10 or 0, where a seed has `gold`; else ROUGE-L).",
    )
    student: str = Field("student", description="Endpoint serving the student; restarted on each new checkpoint.")
    student_model: str | None = Field(None, description="Student base weights; default: the student endpoint's serve.model_path.")
    iterations: int = Field(3, ge=1, description="K adversarial iterations (paper: 3).")
    tau: float = Field(1.0, description="Hard if teacher score - student score >= tau (paper: 1.0). With code:rouge_l: hard when ROUGE-L < 100 - 10 tau.")
    heldout: str | None = Field(
        None,
        description="Stage with held-out instructions (optional `gold`): judge-free evaluation of the base student and of "
        "the student after every iteration (ROUGE-L against the teacher, NLL of the teacher's answers, gold accuracy). "
        "Generated instructions that copy a held-out one (after normalising case, punctuation and spacing) or come within "
        "rouge_threshold of one are dropped.",
    )
    heldout_after: Literal["each", "last"] = Field(  # left out of the fingerprint at its default
        "each", exclude_if=lambda value: value == "each",
        description="When `heldout` is scored: after each iteration (the curve), or after the last one only (with the base "
        "student before and the final imitation after): one student pass over the held-out set per iteration saved.")
    heldout_sampling: Sampling = Field(
        default_factory=lambda: Sampling(temperature=0.0, max_tokens=64), description="Held-out answers (greedy, as MiniLLM/DistiLLM)."
    )
    new_per_iteration: int = Field(6000, ge=0, description="New instructions per iteration, N (paper: 6000).")
    hard_fraction: float = Field(0.5, ge=0, le=1, description="Share of N from hard seeds (paper: 1:1, i.e. 0.5).")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="Drop new instructions with ROUGE-L above this vs the pools (paper: 0.7), and vs "
                                   "the held-out instructions where `heldout` is set.")
    min_words: int = Field(4, ge=1, description="Drop new instructions shorter than this many words (paper: more than 3).")
    max_instruction_chars: int = Field(1500, ge=20, description="Upper bound on a generated instruction (schema maxLength).")
    generation_rounds: int = Field(4, ge=1, description="Rounds of generation to make up for filtered candidates.")
    generation_oversample: float = Field(1.3, ge=1, description="Candidates asked per missing instruction in a round.")
    final_generation: bool = Field(
        True, description="Generate new instructions in the last iteration too. false: the last iteration discriminates "
        "generates nothing (its new instructions would never be trained on; the paper's loop ends there) and, without a `dpo` "
        "block or final_discrimination: true, judges nothing either."
    )
    final_discrimination: bool = Field(
        False, description="Judge the cache pool in the last iteration even when nothing trains on the judgement "
        "(final_generation: false and no `dpo` block): the final hard fraction, at the cost of the student answering the "
        "pool and two referee calls per instruction (paid where the referee is an LLM). false: that iteration trains and "
        "is evaluated on the held-out set only."
    )
    final_imitation: bool = Field(
        False, description="After the last iteration's generation, one more imitation step: SFT (the same `sft` block "
        "as every iteration) on the final train pool, so the last new instructions are trained on; the student endpoint "
        "moves onto that checkpoint. Needs final_generation: true (without it there is nothing new to imitate); skipped, "
        "and recorded so, when the last generation added no instruction."
    )
    generation_mode: Literal["json", "list"] = Field(
        "json", description="How the teacher writes new instructions. json: zero-shot, one seed in the prompt, the reply "
        "a JSON object under a schema (the paper's way; for strong teachers). list: few-shot continuation for small "
        "teachers: fewshot_examples same-family instructions of the seed's kind as a numbered list, the reply plain text "
        "cut at the first newline (stop: [\"\\n\"]), list markers stripped; one instruction per call."
    )
    fewshot_examples: int = Field(4, ge=1, le=64, description="generation_mode: list: instructions shown per call (same family "
                                  "as the drawn seed where rows have `family`, else any of the same kind).")
    fewshot_length_ratio: float = Field(
        2.0, gt=0, description="generation_mode: list: drop a new instruction with more words than this times the longest "
        "example shown (a continuation that ran on).")
    new_from: Literal["teacher", "pool"] = Field(
        "teacher", description="Where each iteration's new instructions come from. teacher: Lion's generation from hard "
        "and easy seeds; pool: new_per_iteration instructions drawn uniformly at random, without replacement, from the "
        "`pool` stage (a control arm: Lion's schedule without discrimination steering the data; discrimination still runs)."
    )
    pool: str | None = Field(None, description="Stage with the instructions (column `instruction`) that new_from: pool draws from "
                             "(read only with new_from: pool).")
    answer_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.7, max_tokens=1024), description="Teacher and student answers.")
    answer_select: Select | None = Field(
        None, description="Best-of-n teacher answers (not in the paper): each instruction's teacher answer is the one of "
        "n samples (at answer_sampling) kept by code: the gold-matching candidate where a seed has `gold` (rule gold/auto), "
        "else the consensus candidate (minimum Bayes risk), among those passing the checks. Every candidate is kept in "
        "<stage>.answer_candidates. null: one answer per instruction, as the paper.")
    referee_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.0, max_tokens=64), description="Referee calls.")
    generation_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=1.0, top_p=1.0, max_tokens=512), description="Instruction generation (paper: temperature 1.0, top_p 1.0).")
    templates: LionTemplates = Field(default_factory=LionTemplates, description="Prompt files.")
    sft: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed straight to trl.SFTConfig (paper: 3 epochs, lr 2e-5, cosine, warmup 3%, max length 1024).",
    )
    lora: LoraArgs | None = Field(None, description="peft.LoraConfig arguments; null for full fine-tuning.")
    freeze_embeddings: bool = Field(
        False, description="Do not train the input embeddings (nor an output head tied to them): a depth-pruned student "
        "keeps its source's embeddings, so only its layers need to heal; on a 135M model with a 49k vocabulary it also "
        "takes about 12% off each CPU step (measured once, 20 steps).")
    freeze_layers: int = Field(  # left out of the fingerprint at 0, so runs made before it existed stay done
        0, ge=0, exclude_if=lambda value: value == 0, description="Do not train the lowest N transformer layers either: the gradient stops above them, so each "
        "step costs less (the demo's 20-layer student, N=8: 22% less per CPU step, measured once over 6 steps). 0: all train.")
    retrain_from_base: bool = Field(
        False, description="Each iteration trains from the base weights (true) or continues from the last checkpoint (false)."
    )
    dpo: dict[str, Any] | None = Field(
        None,
        description="Add a DPO phase to each iteration: after discrimination, DPO of the student on the iteration's "
        "preference pairs (teacher answer over student answer where the gap >= tau; no extra teacher calls). "
        "Passed straight to trl.DPOConfig; null: no DPO phase.",
    )

    @model_validator(mode="after")
    def _pool_named(self) -> "LionStage":
        if self.new_from == "pool" and self.pool is None:
            raise ValueError("new_from: pool draws new instructions from a stage: set `pool` to the name of a stage with "
                             "an `instruction` column (or use new_from: teacher)")
        if self.final_imitation and not self.final_generation:
            raise ValueError("final_imitation: true trains on the last iteration's new instructions, but final_generation: "
                             "false makes none (the last imitation already saw the whole train pool): set "
                             "final_generation: true, or final_imitation: false")
        return self
