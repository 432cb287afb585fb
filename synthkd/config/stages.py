"""Stage configuration: one entry of the pipeline's `stages:` list, chosen by `type`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from synthkd.config.endpoints import Sampling, Strict

if TYPE_CHECKING:
    from synthkd.stages.base import StageImpl

_STAGE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")

MAX_SAMPLES = 1000  # samples per input a stage may ask for


class StageBase(Strict):
    """Fields every stage has."""

    name: str = Field(..., description="Unique stage name (letters, digits, _ . -; not starting with . or -); its datasets go to RUN_DIR/datasets/<name>/.")
    # How calls are sent, not what they ask: `exclude=True` keeps it out of the fingerprint, and the request cache
    # key does not depend on it either, so switching a finished stage between batch and online costs nothing.
    batch: bool | None = Field(
        None, exclude=True,
        description="true: send this stage's uncached calls to remote endpoints through their batch API (the endpoint's "
        "`batch:` block, or its defaults); false: online even where the endpoint's batch block is enabled; null: as the "
        "endpoint says. Endpoints synthkd serves itself always answer online.")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        # "." and ".." would name the datasets directory itself or the run directory, which writing the
        # stage's output replaces; NAME.tmp and NAME.launch are directories synthkd writes and deletes.
        if not _STAGE_NAME.fullmatch(name) or name.endswith((".tmp", ".launch")):
            raise ValueError(f"{name!r} cannot name a stage: use letters, digits, _ . - (at most 100), starting with a letter, "
                             "digit or _, not ending in .tmp or .launch (its datasets go to RUN_DIR/datasets/<name>/)")
        return name

    @classmethod
    def implementation_class(cls) -> "type[StageImpl[Any]]":
        """The stage type's implementation (imported lazily: configs load without the heavy modules)."""
        raise NotImplementedError(cls.__name__)

    def implementation(self) -> "StageImpl[Any]":
        """This stage's implementation, bound to this config."""
        return self.implementation_class()(self)


class TrainingLaunch(Strict):
    """How a training stage runs (processes, accelerate config); shared by the `sft` and `dpo` stages."""

    # How training runs, not what it trains: `exclude=True` keeps both out of model_dump(), so the
    # stage fingerprint (and the checkpoint fingerprint, which never included them) is the same for
    # 1 and N processes: a finished stage or checkpoint is reused when only these change.
    processes: int = Field(
        1, ge=1, exclude=True,
        description="Training processes; more than 1 runs training under `accelerate launch` (DDP; gloo on a CPU-only machine). "
        "Each process takes per_device_train_batch_size examples per step.",
    )
    accelerate_config: str | None = Field(
        None, exclude=True,
        description="An accelerate config file (relative to the pipeline file) passed to `accelerate launch --config_file` as is, "
        "e.g. for FSDP or DeepSpeed; setting it also runs training under accelerate.",
    )


class LoadStage(StageBase):
    """Read records from JSONL, JSON, parquet or a `datasets` directory."""

    type: Literal["load"]

    @classmethod
    def implementation_class(cls) -> "type[StageImpl[Any]]":
        from synthkd.stages.load import LoadImpl

        return LoadImpl

    path: str = Field(..., description="File or directory, relative to the pipeline file.")
    columns: dict[str, str] = Field(default_factory=dict, description="Rename columns: {source: target}.")
    id_column: str | None = Field(None, description="Column holding a stable record id (default: row number).")
    limit: int | None = Field(None, ge=1, description="Keep only the first N records.")


class SelectChecks(Strict):
    """Format checks a candidate answer must pass before a selection rule may choose it."""

    non_empty: bool = Field(True, description="The answer has a letter or digit (a blank reply is never a candidate, whatever this says).")
    not_truncated: bool = Field(True, description="The reply was not cut by max_tokens (finish_reason length).")
    one_line: bool = Field(False, description="The answer, stripped, is one line.")
    max_words: int | None = Field(None, ge=1, description="At most this many words (whitespace-separated); null: no limit.")
    labels: list[str] | None = Field(
        None, min_length=1, description="The answer, normalized (case, surrounding quotes and brackets, a final period), is one "
        "of these labels (normalized the same way); null: any answer.")


class Select(Strict):
    """Best-of-n: ask n candidate answers per row, keep one chosen by code (sequence-level KD's Seq-Inter, Kim & Rush
    2016; generate-then-filter as in symbolic KD / I2D2)."""

    n: int = Field(4, ge=1, le=MAX_SAMPLES, description="Candidates per row, asked as samples 0..n-1 (each its own cached "
                   "request, or one request with `n` where the endpoint has n_per_request).")
    rule: Literal["auto", "gold", "consensus"] = Field(
        "auto", description="gold: the first candidate (in sample order) whose answer matches the row's gold "
        "(consensus when none does, or the row has no gold); consensus: minimum Bayes risk, the candidate with the "
        "highest mean ROUGE-L to the other candidates (ties: the lowest sample), gold never read; auto: gold where "
        "the row has one, else consensus.")
    gold_column: str = Field("gold", description="Column with the row's gold short answer (null or blank: the row has none). "
                             "Required in the input with rule: gold, or when set explicitly; with auto an input "
                             "without it means consensus everywhere.")
    checks: SelectChecks = Field(default_factory=SelectChecks, description="Format checks; only candidates passing them "
                                 "are chosen from, and a row none passes is a failed row.")


class GenerateStage(StageBase):
    """Render a template for each input record, call an endpoint, store the reply in a column."""

    type: Literal["generate"]

    @classmethod
    def implementation_class(cls) -> "type[StageImpl[Any]]":
        from synthkd.stages.generate import GenerateImpl

        return GenerateImpl

    input: str = Field(..., description="Name of an earlier stage whose records this stage reads.")
    endpoint: str = Field(..., description="Endpoint name from `endpoints:`.")
    template: str = Field(..., description="Jinja2 template of the user message, relative to prompts_dir.")
    system_template: str | None = Field(None, description="Optional jinja2 template of a system message.")
    output_column: str = Field("response", description="Column the reply text (or parsed object) goes to.")
    # The caps keep a typo (an extra zero or three) from building billions of requests before any message.
    samples: int = Field(1, ge=1, le=MAX_SAMPLES, description="Samples per record; each is its own cached request.")
    sampling: Sampling | None = Field(None, description="Overrides of the endpoint's sampling parameters.")
    keep_truncated: bool = Field(True, description="Keep replies cut by max_tokens (flagged `truncated`).")
    sft_format: bool = Field(
        True, description="Also write a `messages` column (user prompt + reply) so the set feeds TRL SFT as is."
    )
    reasoning_column: str | None = Field(
        "reasoning", description="Column the reply's separate reasoning trace goes to (reasoning_content / reasoning, "
        "as reasoning models and vLLM's reasoning parsers return it); null when the reply has none. null: no such column."
    )
    # Left out of the fingerprint when unset, so the stages of runs made before `select` existed stay done.
    select: Select | None = Field(
        None, exclude_if=lambda value: value is None,
        description="Best-of-n: ask select.n candidates per row and keep the one a rule that is code chooses, with a "
        "`selection` column saying which and why; the candidates go to the dataset <stage>.candidates and, where "
        "the row has gold, gold-matching over mismatching answers to <stage>.pairs (TRL preference format). "
        "null: one reply per sample, all kept. Not with samples > 1 (select keeps one of n, samples keeps all).")

    @model_validator(mode="after")
    def _select_or_samples(self) -> "GenerateStage":
        if self.select is not None and self.samples > 1:
            raise ValueError(f"select keeps one of n candidates per row and samples: {self.samples} keeps every sample: "
                             "use one of them (select.n sets how many candidates are asked)")
        return self

    @property
    def per_row(self) -> int:
        """Requests per input row: the candidates of `select`, else `samples`."""
        return self.select.n if self.select is not None else self.samples


class SFTStage(StageBase, TrainingLaunch):
    """TRL SFT of a model on an earlier stage's `messages` column."""

    type: Literal["sft"]

    @classmethod
    def implementation_class(cls) -> "type[StageImpl[Any]]":
        from synthkd.stages.sft import SFTImpl

        return SFTImpl

    input: str = Field(..., description="Earlier stage with a `messages` column.")
    model: str = Field(..., description="Base weights: local directory, hub name, or tiny:NAME.")
    sft: dict[str, Any] = Field(default_factory=dict, description="Passed straight to trl.SFTConfig.")
    freeze_embeddings: bool = Field(
        False, description="Do not train the input embeddings (nor an output head tied to them): a depth-pruned student "
        "keeps its source's embeddings, so only its layers need to heal; on a 135M model with a 49k vocabulary it also "
        "takes about 12% off each CPU step (measured once, 20 steps).")
    lora: dict[str, Any] | None = Field(None, description="Passed to peft.LoraConfig; null for full fine-tuning.")
    serve_as: str | None = Field(None, description="Endpoint (with `serve`) to restart on the new checkpoint.")


class LionTemplates(Strict):
    """The Lion prompts, as jinja2 files under prompts_dir."""

    answer: str = Field("lion/answer.jinja2", description="How teacher and student are asked to answer an instruction.")
    referee: str = Field("lion/referee.jinja2", description="Referee: score two answers 1-10 in one call.")
    generate_hard: str = Field(
        "lion/generate_hard.jinja2", description="New instruction from a hard seed: same domain and task type, similar "
        "length and difficulty (the paper's hard prompt). lion/generate_harder.jinja2 asks for a noticeably harder one "
        "instead (synthkd's earlier default; it pushes a weak teacher off the distribution and past what it can answer).")
    generate_easy: str = Field("lion/generate_easy.jinja2", description="New instruction: same domain, rarer topic.")
    generate_list: str = Field(
        "lion/generate_list.jinja2", description="generation_mode: list: a numbered list of same-family instructions "
        "(examples, kind, family) that the teacher continues with one more; used for hard and easy seeds alike.")


class LionStage(StageBase):
    """Lion (Jiang et al., EMNLP 2023): imitation, discrimination and generation, K times."""

    type: Literal["lion"]

    @classmethod
    def implementation_class(cls) -> "type[StageImpl[Any]]":
        from synthkd.lion.stage import LionImpl

        return LionImpl

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
        "but generates nothing (its new instructions would never be trained on; the paper's loop ends there)."
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
    lora: dict[str, Any] | None = Field(None, description="peft.LoraConfig arguments; null for full fine-tuning.")
    freeze_embeddings: bool = Field(
        False, description="Do not train the input embeddings (nor an output head tied to them): a depth-pruned student "
        "keeps its source's embeddings, so only its layers need to heal; on a 135M model with a 49k vocabulary it also "
        "takes about 12% off each CPU step (measured once, 20 steps).")
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


class DPOTemplates(Strict):
    """Prompts of the DPO stage, as jinja2 files under prompts_dir."""

    answer: str = Field("lion/answer.jinja2", description="How teacher and student are asked to answer.")
    pairwise: str = Field("lion/referee.jinja2", description="Judge two answers 1-10 in one call (instruction, answer_1, answer_2).")
    pointwise: str = Field("dpo/score.jinja2", description="Judge one answer 1-10 (instruction, answer).")


class DPOStage(StageBase, TrainingLaunch):
    """On-policy preference distillation of the student with TRL DPO, K iterations."""

    type: Literal["dpo"]

    @classmethod
    def implementation_class(cls) -> "type[StageImpl[Any]]":
        from synthkd.dpo.stage import DPOImpl

        return DPOImpl

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
    lora: dict[str, Any] | None = Field(None, description="peft.LoraConfig arguments; null for full fine-tuning.")


class EvalTemplates(Strict):
    """Prompts of the eval stage, as jinja2 files under prompts_dir."""

    answer: str = Field("lion/answer.jinja2", description="How student and teacher are asked (variable: instruction).")
    pairwise: str = Field("lion/referee.jinja2", description="Judge two answers 1-10 in one call (instruction, answer_1, answer_2).")


class EvalStage(StageBase):
    """Student against teacher on a held-out set: judge in both orders, and exact match where gold exists."""

    type: Literal["eval"]

    @classmethod
    def implementation_class(cls) -> "type[StageImpl[Any]]":
        from synthkd.stages.evaluate import EvalImpl

        return EvalImpl

    input: str = Field(..., description="Stage with the held-out set.")
    question_column: str = Field("instruction", description="Column with the instruction or question.")
    gold_column: str | None = Field(None, description="Column with gold final answers: adds exact-match accuracy.")
    student: str = Field("student", description="Endpoint of the student (served from its newest checkpoint, or remote).")
    teacher: str | None = Field("teacher", description="Endpoint of the teacher; null: no judged comparison, exact match only.")
    judge: str = Field("judge", description="Endpoint of the judge, or a judge that is code: code:rouge_l, code:exact_match.")
    nll: bool = Field(True, description="Also report the NLL of the teacher's answers under the student and the teacher (served, local weights).")
    templates: EvalTemplates = Field(default_factory=EvalTemplates, description="Prompt files.")
    answer_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.0, max_tokens=1024), description="Student and teacher answers.")
    judge_sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.0, max_tokens=64), description="Judge calls.")


class DecontaminateStage(StageBase):
    """Drop records that share a long n-gram with an evaluation set."""

    type: Literal["decontaminate"]

    @classmethod
    def implementation_class(cls) -> "type[StageImpl[Any]]":
        from synthkd.stages.decontaminate import DecontaminateImpl

        return DecontaminateImpl

    input: str = Field(..., description="Stage whose records are filtered.")
    column: str = Field("instruction", description="Column checked for overlap.")
    against: str = Field(..., description="Stage holding the evaluation set.")
    against_column: str = Field("instruction", description="Column of the evaluation set.")
    ngram: int = Field(13, ge=1, description="Drop a record sharing any n-gram of this many tokens (default 13).")


class RationaleStage(StageBase):
    """Teacher rationales with final answers, rejection-sampled against gold (or self-consistent)."""

    type: Literal["rationale"]

    @classmethod
    def implementation_class(cls) -> "type[StageImpl[Any]]":
        from synthkd.stages.rationale import RationaleImpl

        return RationaleImpl

    input: str = Field(..., description="Stage with the task inputs.")
    question_column: str = Field("question", description="Column with the task input.")
    gold_column: str | None = Field("answer", description="Column with gold final answers; null when there are none.")
    teacher: str = Field("teacher", description="Endpoint writing rationales.")
    samples: int = Field(4, ge=1, le=MAX_SAMPLES, description="Rationales per input (k), for diversity.")
    template: str = Field("rationale/teacher.jinja2", description="Prompt asking for step-by-step reasoning and a final answer.")
    sampling: Sampling = Field(default_factory=lambda: Sampling(temperature=0.7, max_tokens=512), description="Teacher sampling.")
    self_consistency: bool = Field(True, description="Without gold: keep only the majority answer's rationales.")
    format: Literal["inline", "multitask"] = Field(
        "inline", description="inline: rationale then answer in one reply; multitask: Distilling Step-by-Step's two examples per rationale."
    )
    inline_template: str = Field("rationale/inline_target.jinja2", description="Student target for the inline format (rationale, answer).")
    answer_prefix: str = Field("[label] ", description="Task prefix of the answer example (multitask).")
    rationale_prefix: str = Field("[rationale] ", description="Task prefix of the rationale example (multitask).")
    max_rationale_chars: int = Field(2000, ge=20, description="Upper bound on a rationale (schema maxLength).")
    rationale_source: Literal["structured", "reasoning"] = Field(
        "structured", description="structured: the teacher replies with JSON {rationale, answer}; reasoning: the teacher's "
        "reasoning trace (reasoning_content / reasoning of a reasoning model) is the rationale and its reply, plain text, "
        "the final answer. With reasoning the default template is rationale/teacher_reasoning.jinja2."
    )
    think_format: str | None = Field(
        None, description="Jinja2 template (rationale, answer) of the student target in the inline format instead of "
        "inline_template, e.g. rationale/think_target.jinja2: the rationale inside <think>...</think>, then the answer."
    )

    @model_validator(mode="after")
    def _reasoning_template(self) -> "RationaleStage":
        # The default prompt asks for JSON; a reasoning teacher reasons on its own and answers in plain text.
        if self.rationale_source == "reasoning" and self.template == "rationale/teacher.jinja2":
            self.template = "rationale/teacher_reasoning.jinja2"
        return self

