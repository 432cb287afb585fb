"""Typed records: the rows stages write and the stats run.json holds, each declared once.

A `Record` is the row type of a dataset: its fields are the dataset's columns, `validate` derives
from them what a later stage can read, and every row is checked against it when written, so the
declaration cannot drift from what is on disk. A `Stats` model is a block of run.json: the runner
and the method loops write it, and `status`, the report and `synthkd run`'s closing table read it
with the same model (reading tolerates missing keys and old files; writing rejects unknown ones).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Self, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from synthkd.errors import SynthkdError

Messages = list[dict[str, str]]


class TrainMetrics(BaseModel):
    """What one training run reports (train_metrics.json beside its checkpoint, and run.json's training blocks).

    The fields SFT and DPO fill are declared; anything else a trainer reports (the SKD critic's classifier figures)
    is kept as it is, so no figure is lost on the way to run.json."""

    model_config = ConfigDict(extra="allow")

    train_loss: float | None = None
    steps: int | None = None
    examples: int | None = None  # SFT: the rows trained on
    pairs: int | None = None  # DPO: the preference pairs trained on
    reward_accuracy: float | None = None  # DPO: implicit-reward accuracy on the pairs after training
    reward_margin: float | None = None
    reward_accuracy_before: float | None = None  # DPO: the same with the policy still equal to the reference
    reward_margin_before: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The figures that were measured (no nulls), as train_metrics.json holds them."""
        return self.model_dump(exclude_none=True)



class Record(BaseModel):
    """Base of every row type."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def columns(cls) -> set[str]:
        """The dataset's columns."""
        return set(cls.model_fields)

    @classmethod
    def check_rows(cls, rows: list[dict[str, Any]], dataset: str) -> None:
        """Every row matches this type (a stage that writes another shape is a bug, found by the tests)."""
        for i, row in enumerate(rows):
            try:
                cls.model_validate(row)
            except ValidationError as exc:
                err = exc.errors()[0]
                raise SynthkdError(
                    f"internal error: row {i} of dataset {dataset!r} does not match its row type {cls.__name__} "
                    f"({'.'.join(map(str, err['loc']))}: {err['msg']})",
                    fix="please report this; every paid reply is cached, so rerunning after a fix costs nothing",
                ) from None


def plain_rows(rows: Sequence[Record | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts, for disk and for training: a record gives all its fields; a mapping (a stage that
    passes its input's columns through) is copied as it is."""
    return [r.model_dump() if isinstance(r, Record) else dict(r) for r in rows]


class FailedRow(BaseModel):
    """A row that did not make it, as failed.jsonl holds it: the input row's columns as they were, what failed (`step`,
    where a stage has several) and why (`reason`, never empty; `detail`; the `raw` reply where there was one).

    Only the keys a stage set are written (`to_json`); the input's own columns are kept whatever their names."""

    model_config = ConfigDict(extra="allow")

    reason: str = Field(min_length=1)
    detail: Any = None
    raw: Any = None
    step: Any = None

    @classmethod
    def of(cls, row: Mapping[str, Any], reason: str, **fields: Any) -> "FailedRow":
        """`row`'s columns, then `fields` (detail, raw, step, anything a stage records), then the reason."""
        return cls.model_validate({**row, **fields, "reason": reason})

    def value(self, key: str) -> Any:
        """A column of the failed row (a declared field or one of the input's), None where it has none."""
        return self.to_json().get(key)

    def to_json(self) -> dict[str, Any]:
        """The row as failed.jsonl holds it."""
        return self.model_dump(exclude_unset=True)


class Stats(BaseModel):
    """Base of every run.json block. Reading ignores keys it does not know (older runs)."""

    model_config = ConfigDict(extra="ignore")

    @classmethod
    def strict(cls, data: dict[str, Any]) -> Self:
        """Validate what is about to be written: an unknown key is a bug, not data."""
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise SynthkdError(f"internal error: {cls.__name__} has no field(s) {', '.join(unknown)}",
                               fix="please report this; every paid reply is cached")
        return cls.model_validate(data)


class HeldoutRow(Record):
    """One held-out prompt: the student's answer beside the reference (the teacher's), scored."""

    id: str
    instruction: str
    answer: str
    reference: str
    rouge_l: float
    gold: str | None = None
    gold_correct: bool | None = None


class Interval(Stats):
    """A metric's mean over prompts with its 95% bootstrap interval (`scoring.metrics.summary`)."""

    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0

    def text(self, digits: int) -> str:
        """"mean [low, high]" at `digits` decimals; "-" where there is no value."""
        if self.mean is None or self.ci_low is None or self.ci_high is None:
            return "-"
        return f"{self.mean:.{digits}f} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"


class HeldoutFigures(Stats):
    """Judge-free held-out figures of one model (`scoring.heldout`): ROUGE-L against the teacher's answers, gold
    accuracy where the set has gold, NLL of the teacher's answers where the weights are local."""

    n: int = 0  # prompts scored
    rouge_l: Interval | None = None
    gold_accuracy: Interval | None = None
    nll: Interval | None = None
    answered: int | None = None  # prompts the model answered (failed calls are left out)
    weights: str | None = None  # the weights the student endpoint served
    examples: list[HeldoutRow] | None = None  # the first few scored prompts, to read


class Usage(Stats):
    """What calls cost (`Meter.usage()`): counts, tokens, dollars, failures by reason, and the same per endpoint."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # part of completion_tokens: reasoning traces
    cached_prompt_tokens: int = 0  # part of prompt_tokens: served from the provider's prompt cache
    cost_usd: float = 0.0
    failures: dict[str, int] = Field(default_factory=dict)
    by_endpoint: dict[str, dict[str, int | float]] = Field(default_factory=dict)


class Iteration(Stats):
    """One iteration of an iterative stage."""

    iteration: int = 0
    heldout: HeldoutFigures | None = None  # judge-free held-out figures after this iteration
    usage: Usage | None = None  # the iteration's calls (the held-out scoring's are counted apart)

    def line(self) -> str:
        """What `synthkd status` prints for the iteration."""
        return f"iter {self.iteration}"


class StageStats(Usage):
    """The run.json entry of one stage: what every stage has (its calls' usage, and the fields below). Stage types
    extend it."""

    status: str | None = None
    type: str | None = None
    records_in: int | None = None
    records_out: int | None = None
    failed: int | None = None
    elapsed_s: float | None = None
    weights: dict[str, str] = Field(default_factory=dict, description="Endpoints this stage moved onto new weights, and onto which.")
    iterations: list[Iteration] = Field(default_factory=list)
    heldout_base: HeldoutFigures | None = None
    heldout_teacher: HeldoutFigures | None = None
    heldout_usage: Usage | None = None

    # Result blocks the report lists as key=value rows (a stage type names its own).
    detail_blocks: ClassVar[tuple[str, ...]] = ()

    def lines(self) -> list[str]:
        """What `synthkd status` prints under the stage's row."""
        return [it.line() for it in self.iterations]

    def details(self) -> list[tuple[str, dict[str, Any]]]:
        """(block name, values) for the report's "Stage results" table."""
        out = []
        for key in self.detail_blocks:
            value = getattr(self, key, None)
            block = value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value
            if isinstance(block, dict) and block:
                out.append((key, block))
        return out


# ---- row types shared by several stage types --------------------------------------------
class SFTRow(Record):
    """A training example in TRL's conversational format, with its id."""

    id: str
    messages: Messages


class PreferencePair(Record):
    """A TRL conversational preference row (prompt/chosen/rejected) with its provenance."""

    id: str
    source: str
    margin: float
    instruction: str
    prompt: Messages
    chosen: Messages
    rejected: Messages
    iteration: int | None = None


