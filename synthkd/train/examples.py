"""The shapes training reads and passes on: the rows of an SFT, DPO or classifier job, the example forms handed to
TRL, and the job spec a multi-process run's workers read (chat messages and tool schemas are `synthkd.tools.wire`'s).

All are TypedDicts: the rows are JSON read from datasets and JSON-lines files, and tests and stages build them as
plain dicts, so a TypedDict describes them without changing what they are. A row may hold other columns too
(its id, its source): training reads only the keys declared here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from synthkd.config.stages import LoraArgs
from synthkd.tools.wire import ChatMessage, JSONValue, ToolSchema

if TYPE_CHECKING:
    from synthkd.skd.critic import LabelledPair

__all__ = ["SFTExample", "PreferenceExample", "TrainingRow", "training_row", "sft_example", "preference_example",
           "classifier_example", "PromptCompletion", "TokenizedExample", "JobSpec"]


class SFTExample(TypedDict):
    """A row of an SFT job, in TRL's conversational form: its conversation and, where it called tools, their schemas
    (a list, or JSON text of one as the tool_use stage writes it)."""

    messages: list[ChatMessage]
    tools: NotRequired[list[ToolSchema] | str | None]


class PreferenceExample(TypedDict):
    """A row of a DPO job, in TRL's conversational preference form."""

    prompt: list[ChatMessage]
    chosen: list[ChatMessage]
    rejected: list[ChatMessage]
    tools: NotRequired[list[ToolSchema] | str | None]


class TrainingRow(TypedDict, total=False):
    """A row of a training job of any kind, before its kind picks its columns (`launch.training_columns`)."""

    messages: list[ChatMessage]  # sft
    prompt: list[ChatMessage]  # dpo
    chosen: list[ChatMessage]
    rejected: list[ChatMessage]
    premise: str  # classifier (synthkd.skd.critic.LabelledPair)
    hypothesis: str
    label: bool
    tools: list[ToolSchema] | str | None  # sft, dpo: the schemas of the tools a conversation calls


# Every training column, in the declared order (a kind reads some of them).
TRAINING_COLUMNS: tuple[str, ...] = tuple(TrainingRow.__annotations__)


def training_row(row: dict[str, Any]) -> TrainingRow:
    """The training columns of a dataset row, whose other columns (the user's, an earlier stage's) are left out: where
    a dataset's rows become a training job's."""
    return TrainingRow(**{key: row[key] for key in TRAINING_COLUMNS if key in row})  # type: ignore[typeddict-item]


def sft_example(row: TrainingRow | SFTExample) -> SFTExample:
    """What SFT reads of a row: its conversation, and its tools where it has any."""
    example: SFTExample = {"messages": row["messages"]}
    if row.get("tools"):
        example["tools"] = row["tools"]
    return example


def preference_example(row: TrainingRow | PreferenceExample) -> PreferenceExample:
    """What DPO reads of a row: its preference pair, and its tools where it has any."""
    example: PreferenceExample = {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
    if row.get("tools"):
        example["tools"] = row["tools"]
    return example


def classifier_example(row: TrainingRow) -> LabelledPair:
    """What classifier training reads of a row: its labelled premise/hypothesis pair."""
    return {"premise": row["premise"], "hypothesis": row["hypothesis"], "label": row["label"]}


class PromptCompletion(TypedDict):
    """TRL's prompt/completion form of a conversation: all turns but the last, and the last (an assistant turn)."""

    prompt: list[ChatMessage]
    completion: list[ChatMessage]


class TokenizedExample(TypedDict):
    """TRL's pretokenized form of a conversation: its token ids, and 1 where a token is an assistant's."""

    input_ids: list[int]
    assistant_masks: list[int]


class JobSpec(TypedDict):
    """OUT.launch/job.json: what each process under `accelerate launch` trains (`synthkd.train.worker`)."""

    kind: str  # sft | dpo | classifier
    rows: str  # path of the rows file (JSON lines, the training columns only)
    base_model: str  # the weights to load: a local directory (absolute) or a hub name
    out_dir: str  # the checkpoint directory (absolute)
    # The YAML block, passed through to TRL's SFTConfig / DPOConfig: open-ended, checked against TRL's own fields.
    trainer_args: dict[str, Any]
    lora: LoraArgs | None  # passed through to peft.LoraConfig; None: full fine-tuning
    seed: int
    fingerprint: str
    evaluate_before: bool
    freeze_embeddings: bool
    freeze_layers: NotRequired[int]
    classifier: NotRequired[dict[str, JSONValue]]  # a classifier job's synthkd.skd.critic.ClassifierArgs, as its JSON
