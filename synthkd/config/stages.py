"""What every stage config shares: the base (name, batch), the training launch block and best-of-n selection.

Each stage type's own config lives beside its implementation (`synthkd/stages/<type>.py`, or `config.py` in a
method's package); `synthkd.pipeline` gathers them into the `stages:` union. Nothing here imports a stage.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, with_config
from typing_extensions import TypedDict  # pydantic reads a TypedDict from here on Python < 3.12

from synthkd.config.endpoints import Strict

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


@with_config(ConfigDict(extra="allow"))
class LoraArgs(TypedDict, total=False):
    """`lora:` of a training stage: peft.LoraConfig's arguments, passed through as written (the ones most used are
    declared, so a wrong type is a config error at load time; any other LoraConfig argument is kept as it is)."""

    r: int
    lora_alpha: int | float
    lora_dropout: float
    target_modules: str | list[str]
    modules_to_save: list[str]
    bias: str
    use_rslora: bool
    use_dora: bool


class TrainingLaunch(Strict):
    """How a training stage runs (processes, accelerate config); every stage type that trains a checkpoint has it."""

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


